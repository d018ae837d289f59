//! The `"v"` field every wire message carries.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Wire format version 1: serializes as the number `1` and refuses any other
/// value when deserializing, so a message from a newer producer is rejected
/// with "unsupported message version 2 (this build speaks 1)" instead of being
/// half-understood.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct V1;

impl V1 {
    /// The number this type stands for.
    pub const NUMBER: u64 = 1;
}

impl Serialize for V1 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(Self::NUMBER)
    }
}

impl<'de> Deserialize<'de> for V1 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(deserializer)?;
        if v == Self::NUMBER {
            Ok(V1)
        } else {
            Err(de::Error::custom(format_args!(
                "unsupported message version {v} (this build speaks {})",
                Self::NUMBER
            )))
        }
    }
}

impl JsonSchema for V1 {
    fn schema_name() -> Cow<'static, str> {
        "WireVersion".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Wire format version; always 1.",
            "type": "integer",
            "const": 1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_is_accepted() {
        assert_eq!(serde_json::to_string(&V1).unwrap(), "1");
        assert!(serde_json::from_str::<V1>("1").is_ok());
        let err = serde_json::from_str::<V1>("2").unwrap_err().to_string();
        assert!(err.contains("unsupported message version 2"), "{err}");
        assert!(serde_json::from_str::<V1>("\"1\"").is_err());
    }
}
