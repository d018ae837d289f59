//! Validated identifiers: kiosk ids, job ids and currency codes.
//!
//! Each is a string newtype that can only hold a valid value, so code that
//! builds topics or store keys from them never has to re-check.

use std::fmt;
use std::str::FromStr;

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A kiosk id must match `[a-z0-9-]{1,64}`.
    #[error("invalid kiosk id {0:?}: expected 1 to 64 characters of a-z, 0-9 and '-'")]
    Kiosk(String),
    /// A job id must match `[A-Za-z0-9._:~-]{1,128}`.
    #[error(
        "invalid job id {0:?}: expected 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':', '~' and '-'"
    )]
    Job(String),
    /// A currency must be an ISO 4217 alphabetic code.
    #[error("invalid currency {0:?}: expected an ISO 4217 code such as \"EUR\"")]
    Currency(String),
}

/// Identifier of one kiosk: `[a-z0-9-]{1,64}`. It is also the kiosk's MQTT
/// username and client id and the `<id>` segment of its topics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KioskId(String);

impl KioskId {
    /// Longest accepted kiosk id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `s` as a kiosk id.
    ///
    /// # Errors
    /// [`IdError::Kiosk`] when `s` is empty, longer than 64 bytes or holds a
    /// character outside `[a-z0-9-]`.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s))
        } else {
            Err(IdError::Kiosk(s))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Identifier of one print job: a ULID chosen by the gateway, or a string the
/// caller gives, `[A-Za-z0-9._:~-]{1,128}`. Jobs are deduplicated by it end to
/// end: the same id is never printed twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// Longest accepted job id, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `s` as a job id.
    ///
    /// # Errors
    /// [`IdError::Job`] when `s` is empty, longer than 128 bytes or holds a
    /// character outside `[A-Za-z0-9._:~-]`.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'~' | b'-')
            });
        if ok {
            Ok(Self(s))
        } else {
            Err(IdError::Job(s))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 4217 alphabetic currency code such as `EUR`: three ASCII capitals.
/// Amounts that go with it are integers in the currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// Validates `s` as a currency code (shape only: three ASCII capitals).
    ///
    /// # Errors
    /// [`IdError::Currency`] when `s` is not three ASCII capital letters.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(s))
        } else {
            Err(IdError::Currency(s))
        }
    }

    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($($t:ident => $pattern:literal, $desc:literal;)*) => {$(
        impl JsonSchema for $t {
            fn schema_name() -> Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({"type": "string", "pattern": $pattern, "description": $desc})
            }
        }
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.0
            }
        }
        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    )*};
}

string_newtype_impls! {
    KioskId => "^[a-z0-9-]{1,64}$", "Kiosk id; also its MQTT username and client id.";
    JobId => "^[A-Za-z0-9._:~-]{1,128}$", "Job id: a ULID or a caller-given string.";
    Currency => "^[A-Z]{3}$", "ISO 4217 alphabetic currency code.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kiosk_ids() {
        for ok in ["a", "demo-1", "0", &"x".repeat(64)] {
            assert!(KioskId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Demo", "a/b", "a+b", "#", "a_b", "ä", &"x".repeat(65)] {
            assert!(KioskId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn job_ids() {
        for ok in ["01J8Z6V5B3F1Q2W3E4R5T6Y7U8", "order-17:copy.2", "a~b_c"] {
            assert!(JobId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "x#", &"x".repeat(129)] {
            assert!(JobId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currencies() {
        assert!(Currency::new("EUR").is_ok());
        for bad in ["eur", "EURO", "E1R", ""] {
            assert!(Currency::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_validates() {
        let err = serde_json::from_str::<KioskId>("\"Bad\"").unwrap_err();
        assert!(err.to_string().contains("invalid kiosk id"), "{err}");
        let id: KioskId = serde_json::from_str("\"demo-1\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"demo-1\"");
    }
}
