//! Layered configuration shared by the binaries: a TOML file (or text),
//! then environment variables `<PREFIX>__<SECTION>__<KEY>`, deserialized
//! with the `config` crate. Each binary validates the result itself and
//! names the bad key in its errors.

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
                .source(env),
        );
    }
    builder.build()?.try_deserialize()
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
}
