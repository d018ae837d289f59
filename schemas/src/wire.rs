//! JSON on the wire: UTF-8, one message per MQTT payload.
//!
//! Decoding errors name the field that failed (`document.kind: unknown
//! variant "pdf", expected one of "text", "raw", "receipt", "ticket"`), so a `failed`
//! result or an HTTP 400 can tell the sender exactly what to fix.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::JobId;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The payload is larger than the receiver accepts.
    #[error("payload too large: {size} bytes, limit {limit} bytes")]
    TooLarge {
        /// Payload size in bytes.
        size: usize,
        /// Limit in bytes.
        limit: usize,
    },
    /// Not JSON, or JSON of the wrong shape; the message names the field.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Encodes `msg` as compact JSON.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Our message types only hold strings, numbers, maps with string keys and
    // timestamps, which serde_json always encodes.
    serde_json::to_vec(msg).unwrap_or_else(|e| unreachable!("wire types always encode: {e}"))
}

/// Decodes a JSON payload, rejecting payloads over `limit` bytes before
/// parsing them.
///
/// # Errors
/// [`WireError::TooLarge`] above `limit`; [`WireError::Invalid`] with the
/// path of the offending field otherwise.
pub fn decode<T: DeserializeOwned>(payload: &[u8], limit: usize) -> Result<T, WireError> {
    if payload.len() > limit {
        return Err(WireError::TooLarge {
            size: payload.len(),
            limit,
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(payload);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            WireError::Invalid(inner.to_string())
        } else {
            WireError::Invalid(format!("{path}: {inner}"))
        }
    })?;
    Ok(value)
}

/// Reads just the `job_id` of a payload that may be invalid otherwise, so a
/// `failed` result can name the job. Returns `None` when the payload is not a
/// JSON object or has no valid `job_id`.
pub fn peek_job_id(payload: &[u8]) -> Option<JobId> {
    #[derive(Deserialize)]
    struct Peek {
        job_id: Option<String>,
        #[serde(flatten)]
        _rest: IgnoredAny,
    }
    let peek: Peek = serde_json::from_slice(payload).ok()?;
    JobId::new(peek.job_id?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrintJob;

    #[test]
    fn errors_name_the_field() {
        let p = br#"{"v":1,"job_id":"a","printer":"receipt","document":{"kind":"pdf"}}"#;
        let err = decode::<PrintJob>(p, 1024).unwrap_err().to_string();
        assert!(err.contains("document") && err.contains("pdf"), "{err}");

        let p =
            br#"{"v":1,"job_id":"a b","printer":"receipt","document":{"kind":"text","text":""}}"#;
        let err = decode::<PrintJob>(p, 1024).unwrap_err().to_string();
        assert!(
            err.contains("job_id") && err.contains("invalid job id"),
            "{err}"
        );

        let err = decode::<PrintJob>(b"not json", 1024).unwrap_err();
        assert!(matches!(err, WireError::Invalid(_)));
    }

    #[test]
    fn size_is_checked_first() {
        let err = decode::<PrintJob>(&[b' '; 20], 10).unwrap_err();
        assert_eq!(
            err,
            WireError::TooLarge {
                size: 20,
                limit: 10
            }
        );
    }

    #[test]
    fn peek_finds_job_id_in_bad_payloads() {
        let p = br#"{"v":1,"job_id":"j-7","document":{"kind":"pdf"}}"#;
        assert_eq!(peek_job_id(p).unwrap().as_str(), "j-7");
        assert!(peek_job_id(b"{oops").is_none());
        assert!(peek_job_id(br#"{"job_id":"has space"}"#).is_none());
        assert!(peek_job_id(br#"[1,2]"#).is_none());
    }
}
