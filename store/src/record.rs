//! Records inside sled: one version byte, then postcard.
//!
//! The version byte lets a later build read records an older build wrote
//! (or refuse them with a clear error) instead of misreading bytes. postcard
//! is not self-describing: record types must not use `skip_serializing_if`,
//! `flatten` or internally tagged enums. Wire messages that do are stored as
//! their JSON text inside a record.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// Why a stored record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The stored value is empty.
    #[error("empty record")]
    Empty,
    /// The record was written by a format this build does not read.
    #[error("record version {found} is not supported (expected {expected})")]
    Version {
        /// Version byte found.
        found: u8,
        /// Version this reader understands.
        expected: u8,
    },
    /// postcard failed.
    #[error("record encoding: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Encodes `value` as `[version, postcard bytes...]`.
///
/// # Errors
/// [`RecordError::Postcard`] when the type cannot be encoded by postcard.
pub fn encode<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, RecordError> {
    let mut out = vec![version];
    postcard::to_io(value, &mut out)?;
    Ok(out)
}

/// Decodes a record written by [`encode`] with the same `version`.
///
/// # Errors
/// [`RecordError::Empty`], [`RecordError::Version`] or
/// [`RecordError::Postcard`] for corrupt or foreign bytes.
pub fn decode<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Result<T, RecordError> {
    let (&found, body) = bytes.split_first().ok_or(RecordError::Empty)?;
    if found != version {
        return Err(RecordError::Version {
            found,
            expected: version,
        });
    }
    Ok(postcard::from_bytes(body)?)
}

/// [`encode`], with an error that names the record `key`.
///
/// # Errors
/// [`StoreError::Record`].
pub fn encode_keyed<T: Serialize>(
    version: u8,
    key: &str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    encode(version, value).map_err(|source| StoreError::Record {
        key: key.to_owned(),
        source,
    })
}

/// [`decode`], with an error that names the record `key` (bytes shown as
/// UTF-8, lossily).
///
/// # Errors
/// [`StoreError::Record`].
pub fn decode_keyed<T: DeserializeOwned>(
    version: u8,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    decode(version, bytes).map_err(|source| StoreError::Record {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        a: u64,
        b: Option<String>,
        at: chrono::DateTime<chrono::Utc>,
    }

    #[test]
    fn round_trip_and_version_check() {
        let r = R {
            a: 7,
            b: Some("x".into()),
            at: chrono::Utc::now(),
        };
        let bytes = encode(1, &r).unwrap();
        assert_eq!(bytes[0], 1);
        assert_eq!(decode::<R>(1, &bytes).unwrap(), r);
        assert!(matches!(
            decode::<R>(2, &bytes),
            Err(RecordError::Version {
                found: 1,
                expected: 2
            })
        ));
        assert!(matches!(decode::<R>(1, &[]), Err(RecordError::Empty)));
        assert!(matches!(
            decode::<R>(1, &[1, 0xff]),
            Err(RecordError::Postcard(_))
        ));
    }
}
