//! The `[broker]` keys every MQTT client of the fleet reads the same way:
//! the agent's `[broker]` and the gateway's (for an external broker) embed
//! [`ClientSection`] with `#[serde(flatten)]`, check it with
//! [`ClientSection::check`] and turn it into [`SessionOptions`] with
//! [`ClientSection::apply`]. What differs per program (the default user
//! name and reconnect delays) comes in as [`ClientDefaults`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiosk_schemas::settings::{ConfigError, invalid, scalar_string};
use kiosk_schemas::{MqttUrl, Secret};
use serde::{Deserialize, Deserializer};

use crate::SessionOptions;

/// `broker.urls`, `username`, `password`, `keep_alive`, `reconnect_min`,
/// `reconnect_max`, `ca_file`, `client_cert`, `client_key`, as written.
#[derive(Debug, Clone, Deserialize)]
pub struct ClientSection {
    /// The brokers of a cluster, in place of `broker.url`:
    /// `["mqtts://node1:8883", "mqtts://node2:8883"]` (from the environment,
    /// comma-separated). A client connects to one and, when an attempt
    /// fails or the connection is lost, tries the next, round the list
    /// ([`crate::SessionOptions::alternates`]). All `mqtt://` or all
    /// `mqtts://`.
    #[serde(default, deserialize_with = "urls")]
    pub urls: Option<Vec<MqttUrl>>,
    /// MQTT user name (MQTT 3.1.1 §3.1.3.4); default per program (the
    /// kiosk id on a kiosk, `gateway` on the gateway).
    #[serde(default, deserialize_with = "scalar_string::option")]
    pub username: Option<String>,
    /// MQTT password (§3.1.3.5); must not be empty.
    pub password: Secret,
    /// MQTT keep alive (§3.1.2.10), at least 1 s: the broker declares the
    /// client gone (last will) about 1.5 times this after the link dies.
    /// Default 30 s.
    #[serde(default = "default_keep_alive", deserialize_with = "keep_alive")]
    pub keep_alive: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`, with jitter.
    /// Default per program ([`ClientDefaults`]).
    #[serde(default, deserialize_with = "reconnect_min")]
    pub reconnect_min: Option<Duration>,
    /// Longest reconnect delay. Default per program ([`ClientDefaults`]).
    #[serde(default, deserialize_with = "reconnect_max")]
    pub reconnect_max: Option<Duration>,
    /// PEM CA certificate(s) trusted for an `mqtts://` broker: only these
    /// (pin the fleet's private CA). Default: the system's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for a broker that requires one; needs
    /// `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// What one program assumes for the keys of [`ClientSection`] left out.
#[derive(Debug, Clone, Copy)]
pub struct ClientDefaults<'a> {
    /// `broker.username` when not set.
    pub username: &'a str,
    /// `broker.reconnect_min` when not set.
    pub reconnect_min: Duration,
    /// `broker.reconnect_max` when not set.
    pub reconnect_max: Duration,
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

// Embedded with `#[serde(flatten)]`, a value's error names only the
// section (`for key \`broker\``): these name the key themselves.

/// `keep_alive`, a human-readable duration (`"30s"`).
fn keep_alive<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    humantime_serde::deserialize(d).map_err(|e| named("keep_alive", e))
}

/// `reconnect_min`, a human-readable duration.
fn reconnect_min<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    humantime_serde::deserialize(d).map_err(|e| named("reconnect_min", e))
}

/// `reconnect_max`, a human-readable duration.
fn reconnect_max<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    humantime_serde::deserialize(d).map_err(|e| named("reconnect_max", e))
}

/// `urls`, a list of MQTT URLs.
fn urls<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<MqttUrl>>, D::Error> {
    Option::<Vec<MqttUrl>>::deserialize(d).map_err(|e| named("urls", e))
}

fn named<E: serde::de::Error>(key: &str, e: E) -> E {
    E::custom(format_args!("broker.{key}: {e}"))
}

impl ClientSection {
    /// Checks the keys and their combinations. `url` is the broker the
    /// client connects to by URL (`None`: an address found otherwise, such
    /// as the gateway's embedded broker, where the TLS keys are not used).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `broker.*` key at fault.
    pub fn check(
        &self,
        url: Option<&MqttUrl>,
        defaults: ClientDefaults<'_>,
    ) -> Result<(), ConfigError> {
        if let Some(url) = url {
            for (key, set) in [
                ("broker.ca_file", self.ca_file.is_some()),
                ("broker.client_cert", self.client_cert.is_some()),
            ] {
                if set && !url.tls {
                    return Err(invalid(key, "only used with an mqtts:// broker.url"));
                }
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "broker.client_key",
                    "required with broker.client_cert",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "broker.client_cert",
                    "required with broker.client_key",
                ));
            }
            _ => {}
        }
        if self.password.is_empty() {
            return Err(invalid("broker.password", "must not be empty"));
        }
        if self.keep_alive < Duration::from_secs(1) {
            return Err(invalid("broker.keep_alive", "must be at least 1s"));
        }
        let (min, max) = self.backoff(defaults);
        if min.is_zero() || max < min {
            return Err(invalid(
                "broker.reconnect_max",
                "reconnect_min must be > 0 and reconnect_max >= reconnect_min",
            ));
        }
        Ok(())
    }

    /// The brokers: `url` (the program's `broker.url`) or `broker.urls`;
    /// `None` when neither is set.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `broker.urls` when both are set, the
    /// list is empty, or it mixes `mqtt://` and `mqtts://`.
    pub fn broker_urls(&self, url: Option<&MqttUrl>) -> Result<Option<Vec<MqttUrl>>, ConfigError> {
        match (url, &self.urls) {
            (Some(_), Some(_)) => Err(invalid(
                "broker.urls",
                "give broker.url (one broker) or broker.urls (several), not both",
            )),
            (Some(url), None) => Ok(Some(vec![url.clone()])),
            (None, None) => Ok(None),
            (None, Some(urls)) => {
                let Some(first) = urls.first() else {
                    return Err(invalid("broker.urls", "must list at least one broker"));
                };
                if urls.iter().any(|u| u.tls != first.tls) {
                    return Err(invalid(
                        "broker.urls",
                        "must be all mqtt:// or all mqtts:// (one TLS configuration serves them)",
                    ));
                }
                Ok(Some(urls.clone()))
            }
        }
    }

    /// The user name: `broker.username`, or the program's default.
    pub fn username<'a>(&'a self, defaults: ClientDefaults<'a>) -> &'a str {
        self.username.as_deref().unwrap_or(defaults.username)
    }

    /// `(reconnect_min, reconnect_max)`, the program's defaults filling in.
    pub fn backoff(&self, defaults: ClientDefaults<'_>) -> (Duration, Duration) {
        (
            self.reconnect_min.unwrap_or(defaults.reconnect_min),
            self.reconnect_max.unwrap_or(defaults.reconnect_max),
        )
    }

    /// The rustls client configuration (`ring` provider) for an `mqtts://`
    /// broker: it trusts only `ca_file`'s CAs when set (pinning the fleet's
    /// private CA, the normal case), or the operating system's trust store
    /// otherwise (a broker with a public certificate, e.g. Let's Encrypt),
    /// and presents the `client_cert`/`client_key` identity when set. The
    /// server's certificate must match the host of `broker.url`.
    ///
    /// # Errors
    /// [`kiosk_tls::TlsError`] naming the file that is unusable, or when no
    /// CA is available at all.
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, kiosk_tls::TlsError> {
        kiosk_tls::client_config(
            self.ca_file.as_deref(),
            self.client_cert.as_deref().zip(self.client_key.as_deref()),
        )
    }

    /// Sets the credentials (`password` unless `password` is given, as the
    /// gateway does with the embedded broker's internal one), keep alive
    /// and backoff of `opts`.
    pub fn apply(
        &self,
        opts: &mut SessionOptions,
        defaults: ClientDefaults<'_>,
        password: Option<&Secret>,
    ) {
        let password = password.unwrap_or(&self.password).clone();
        opts.credentials = Some((self.username(defaults).to_owned(), password));
        opts.keep_alive = self.keep_alive;
        (opts.backoff_min, opts.backoff_max) = self.backoff(defaults);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kiosk_schemas::settings::{Source, load};

    use super::*;

    const DEFAULTS: ClientDefaults<'static> = ClientDefaults {
        username: "k1",
        reconnect_min: Duration::from_millis(500),
        reconnect_max: Duration::from_secs(30),
    };

    #[derive(Debug, Deserialize)]
    struct File {
        broker: Broker,
    }
    #[derive(Debug, Deserialize)]
    struct Broker {
        url: MqttUrl,
        #[serde(flatten)]
        client: ClientSection,
    }

    fn broker(toml: &str, env: &[(&str, &str)]) -> Broker {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>();
        load::<File>(Source::Text(toml), Some("APP"), Some(env))
            .unwrap()
            .broker
    }

    fn check(extra: &str) -> Result<(), String> {
        let b = broker(
            &format!("[broker]\nurl = \"mqtt://h\"\npassword = \"pw\"\n{extra}"),
            &[],
        );
        b.client
            .check(Some(&b.url), DEFAULTS)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn urls_from_the_file_or_the_environment_and_their_checks() {
        let b = broker(
            "[broker]\nurl = \"mqtt://h\"\npassword = \"pw\"\nurls = [\"mqtt://a:1\", \"mqtt://b:2\"]",
            &[],
        );
        let err = b.client.broker_urls(Some(&b.url)).unwrap_err().to_string();
        assert!(
            err.contains("broker.urls") && err.contains("not both"),
            "{err}"
        );
        let list = b.client.broker_urls(None).unwrap().unwrap();
        assert_eq!(
            list.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["mqtt://a:1", "mqtt://b:2"]
        );
        let b = broker(
            "[broker]\nurl = \"mqtt://h\"\npassword = \"pw\"",
            &[("APP__BROKER__URLS", "mqtt://x:1,mqtts://y:2")],
        );
        let err = b.client.broker_urls(None).unwrap_err().to_string();
        assert!(err.contains("all mqtt:// or all mqtts://"), "{err}");
        let one = b.client.broker_urls(Some(&b.url));
        assert!(one.is_err(), "url and urls both set");
        let b = broker(
            "[broker]\nurl = \"mqtt://h\"\npassword = \"pw\"\nurls = []",
            &[],
        );
        let err = b.client.broker_urls(None).unwrap_err().to_string();
        assert!(err.contains("at least one"), "{err}");
        let b = broker("[broker]\nurl = \"mqtt://h\"\npassword = \"pw\"", &[]);
        assert_eq!(
            b.client.broker_urls(Some(&b.url)).unwrap().unwrap().len(),
            1
        );
    }

    #[test]
    fn defaults_fill_in_what_is_not_written() {
        let b = broker("[broker]\nurl = \"mqtt://h\"\npassword = \"pw\"", &[]);
        let mut opts = SessionOptions::new("k1", "h", 1883);
        b.client.apply(&mut opts, DEFAULTS, None);
        let (user, password) = opts.credentials.unwrap();
        assert_eq!((user.as_str(), password.expose()), ("k1", "pw"));
        assert_eq!(opts.keep_alive, Duration::from_secs(30));
        assert_eq!(
            (opts.backoff_min, opts.backoff_max),
            (Duration::from_millis(500), Duration::from_secs(30))
        );
    }

    #[test]
    fn written_keys_and_the_environment_win() {
        let b = broker(
            "[broker]\nurl = \"mqtt://h\"\npassword = \"pw\"\nusername = \"u\"\nkeep_alive = \"5s\"\nreconnect_min = \"1s\"\nreconnect_max = \"2s\"",
            // The environment parses these into numbers.
            &[
                ("APP__BROKER__PASSWORD", "1234"),
                ("APP__BROKER__USERNAME", "42"),
            ],
        );
        let mut opts = SessionOptions::new("k1", "h", 1883);
        b.client
            .apply(&mut opts, DEFAULTS, Some(&Secret::new("internal")));
        let (user, password) = opts.credentials.unwrap();
        assert_eq!((user.as_str(), password.expose()), ("42", "internal"));
        assert_eq!(b.client.password.expose(), "1234");
        assert_eq!(opts.keep_alive, Duration::from_secs(5));
        assert_eq!(
            (opts.backoff_min, opts.backoff_max),
            (Duration::from_secs(1), Duration::from_secs(2))
        );
    }

    /// A value of the wrong type names its key, though serde reads the
    /// flattened section as a whole.
    #[test]
    fn type_errors_name_the_key() {
        for key in ["keep_alive", "reconnect_min", "reconnect_max"] {
            for value in ["\"soon\"", "5"] {
                let toml =
                    format!("[broker]\nurl = \"mqtt://h\"\npassword = \"pw\"\n{key} = {value}");
                let err = load::<File>(Source::Text(&toml), None, None).unwrap_err();
                assert!(
                    err.to_string().contains(&format!("broker.{key}")),
                    "{key} = {value}: {err}"
                );
            }
        }
    }

    #[test]
    fn check_names_the_key_at_fault() {
        let cases = [
            ("", None),
            ("ca_file = \"/ca.pem\"", Some("broker.ca_file")),
            ("client_cert = \"/c.pem\"", Some("broker.client_cert")),
            ("client_key = \"/k.pem\"", Some("broker.client_cert")),
            ("keep_alive = \"500ms\"", Some("broker.keep_alive")),
            ("reconnect_min = \"0s\"", Some("broker.reconnect_max")),
            ("reconnect_max = \"100ms\"", Some("broker.reconnect_max")),
        ];
        for (extra, key) in cases {
            match (check(extra), key) {
                (Ok(()), None) => {}
                (Err(e), Some(key)) => assert!(e.contains(key), "{extra}: {e}"),
                (got, want) => panic!("{extra}: got {got:?}, want an error naming {want:?}"),
            }
        }
        let b = broker(
            "[broker]\nurl = \"mqtts://h\"\npassword = \"\"\nca_file = \"/ca.pem\"",
            &[],
        );
        let err = b.client.check(Some(&b.url), DEFAULTS).unwrap_err();
        assert!(err.to_string().contains("broker.password"), "{err}");
        // Without a URL (the gateway's embedded broker) the TLS keys are
        // not looked at.
        let b = broker(
            "[broker]\nurl = \"mqtt://h\"\npassword = \"pw\"\nca_file = \"/ca.pem\"",
            &[],
        );
        assert!(b.client.check(None, DEFAULTS).is_ok());
    }
}
