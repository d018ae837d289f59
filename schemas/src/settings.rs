//! Layered configuration shared by the binaries: a TOML file (or text),
//! then environment variables `<PREFIX>__<SECTION>__<KEY>`, deserialized
//! with the `config` crate, then checked once into the type the program
//! uses ([`Checked`]), with errors that name the bad key ([`ConfigError`]).

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;

/// Where the TOML comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A file (must exist).
    File(&'a Path),
    /// TOML text (tests, embedded defaults).
    Text(&'a str),
}

/// Loads `T` from `source`, then from environment variables with
/// `env_prefix` (`None`: no environment layer). `env` replaces the process
/// environment when given (tests). Values like `"30s"` and numbers given as
/// strings are parsed.
///
/// # Errors
/// [`config::ConfigError`] when the file is unreadable, the TOML malformed,
/// or a value of the wrong type; the message names the key.
pub fn load<T: DeserializeOwned>(
    source: Source<'_>,
    env_prefix: Option<&str>,
    env: Option<HashMap<String, String>>,
) -> Result<T, config::ConfigError> {
    let mut builder = config::Config::builder();
    builder = match source {
        Source::File(path) => {
            builder.add_source(config::File::from(path).format(config::FileFormat::Toml))
        }
        Source::Text(text) => {
            builder.add_source(config::File::from_str(text, config::FileFormat::Toml))
        }
    };
    if let Some(prefix) = env_prefix {
        builder = builder.add_source(
            config::Environment::with_prefix(prefix)
                .separator("__")
                .try_parsing(true)
                // `<PREFIX>__BROKER__URLS=mqtt://a:1883,mqtt://b:1883`.
                .list_separator(",")
                .with_list_parse_key("broker.urls")
                .source(env),
        );
    }
    builder.build()?.try_deserialize()
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// File unreadable, TOML malformed, or a value of the wrong type (the
    /// message names the key).
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    /// A value parsed but is not acceptable; names the key.
    #[error("invalid `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `printers.receipt.width` or `http.listen`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// [`ConfigError::Invalid`] for `key`.
pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A configuration checked at load: deserialized as [`Checked::File`]
/// from a TOML file and `<ENV_PREFIX>__…` variables, then checked once
/// into `Self`, whose fields are already parsed types.
pub trait Checked: Sized {
    /// What the file and the environment deserialize into.
    type File: DeserializeOwned;
    /// Prefix of the environment overrides (`KIOSK_AGENT`, ...).
    const ENV_PREFIX: &'static str;

    /// Checks what was read.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key at fault.
    fn check(file: Self::File) -> Result<Self, ConfigError>;

    /// Loads `file` (TOML), applies `<ENV_PREFIX>__*` variables from the
    /// process environment, and checks the result.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or key at fault.
    fn load(file: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(file, None)
    }

    /// Like [`Checked::load`], with the environment given explicitly
    /// (`None`: the process environment). Used by tests.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or key at fault.
    fn load_with_env(
        file: &Path,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        Self::check(load(Source::File(file), Some(Self::ENV_PREFIX), env)?)
    }

    /// Parses TOML text without environment overrides, and checks it.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key at fault.
    fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::check(load(Source::Text(text), None, None)?)
    }
}

/// String keys that also take a number or a boolean, as text.
///
/// The environment layer parses `KIOSK_AGENT__BROKER__PASSWORD=1234` into
/// a number. The `config` crate turns it back into a string for a `String`
/// field, but not inside a section embedded with `#[serde(flatten)]`,
/// where serde buffers the value first: such fields deserialize with
/// `deserialize_with = "scalar_string::deserialize"` (or `::option`).
pub mod scalar_string {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{Error, Visitor};

    struct Scalar;

    impl Visitor<'_> for Scalar {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    struct Optional;

    impl<'de> Visitor<'de> for Optional {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_none<E: Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
            deserialize(d).map(Some)
        }
    }

    /// A string, or a number or boolean written as one.
    ///
    /// # Errors
    /// The deserializer's error for any other value (a table, a list).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(Scalar)
    }

    /// Like [`deserialize`], for an optional key.
    ///
    /// # Errors
    /// As [`deserialize`].
    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_option(Optional)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Cfg {
        a: Section,
    }
    #[derive(Debug, serde::Deserialize)]
    struct Section {
        port: u16,
        name: String,
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = HashMap::from([("APP__A__PORT".to_owned(), "99".to_owned())]);
        let c: Cfg = load(
            Source::Text("[a]\nport = 1\nname = \"x\""),
            Some("APP"),
            Some(env),
        )
        .unwrap();
        assert_eq!((c.a.port, c.a.name.as_str()), (99, "x"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = load::<Cfg>(
            Source::Text("[a]\nport = \"eighty\"\nname = \"x\""),
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("a.port"), "{err}");
    }

    #[derive(Debug, serde::Deserialize)]
    struct Flat {
        a: Outer,
    }
    #[derive(Debug, serde::Deserialize)]
    struct Outer {
        port: u16,
        #[serde(flatten)]
        inner: Inner,
    }
    #[derive(Debug, serde::Deserialize)]
    struct Inner {
        #[serde(deserialize_with = "scalar_string::deserialize")]
        password: String,
        #[serde(default, deserialize_with = "scalar_string::option")]
        user: Option<String>,
    }

    /// A numeric value from the environment still fills a string key of a
    /// flattened section (without `scalar_string`, serde refuses it).
    #[test]
    fn flattened_string_keys_take_numbers_from_the_environment() {
        let env = HashMap::from([
            ("APP__A__PASSWORD".to_owned(), "1234".to_owned()),
            ("APP__A__USER".to_owned(), "true".to_owned()),
        ]);
        let c: Flat = load(
            Source::Text("[a]\nport = 1\npassword = \"x\""),
            Some("APP"),
            Some(env),
        )
        .unwrap();
        assert_eq!(
            (
                c.a.port,
                c.a.inner.password.as_str(),
                c.a.inner.user.as_deref()
            ),
            (1, "1234", Some("true"))
        );
        let c: Flat = load(
            Source::Text("[a]\nport = 1\npassword = \"x\""),
            Some("APP"),
            None,
        )
        .unwrap();
        assert_eq!((c.a.inner.password.as_str(), c.a.inner.user), ("x", None));
    }
}
