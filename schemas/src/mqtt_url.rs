//! Broker URLs: `mqtt://host[:port]` and `mqtts://host[:port]`.

use std::fmt;
use std::str::FromStr;

/// A parsed broker URL. `mqtt://` is plain TCP (default port 1883),
/// `mqtts://` is TLS (default port 8883). IPv6 hosts go in brackets:
/// `mqtt://[::1]:1883`.
///
/// Deserializes from its text (a config key such as `broker.url`), so a
/// loaded configuration holds it parsed and nothing parses it again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct MqttUrl {
    /// True for `mqtts://`.
    pub tls: bool,
    /// Host name or address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker URL {url:?}: {reason}")]
pub struct MqttUrlError {
    url: String,
    reason: &'static str,
}

impl FromStr for MqttUrl {
    type Err = MqttUrlError;

    fn from_str(url: &str) -> Result<Self, MqttUrlError> {
        let err = |reason| MqttUrlError {
            url: url.to_owned(),
            reason,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(err("expected mqtt://host[:port] or mqtts://host[:port]"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(err("expected only host and port after the scheme"));
        }
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (host, after) = r.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            match after {
                "" => (host, None),
                a => (
                    host,
                    Some(
                        a.strip_prefix(':')
                            .ok_or_else(|| err("expected ':' after ']'"))?,
                    ),
                ),
            }
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => p.parse().map_err(|_| err("invalid port"))?,
        };
        Ok(MqttUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

impl TryFrom<String> for MqttUrl {
    type Error = MqttUrlError;

    fn try_from(url: String) -> Result<Self, MqttUrlError> {
        url.parse()
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MqttUrl, MqttUrlError> {
        s.parse()
    }

    #[test]
    fn parses() {
        let u = p("mqtt://h:1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "h", 1));
        assert_eq!(p("mqtt://h").unwrap().port, 1883);
        assert_eq!(p("mqtts://h").unwrap().port, 8883);
        let u = p("mqtt://[::1]:1884/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
        assert_eq!(u.to_string(), "mqtt://[::1]:1884");
    }

    #[test]
    fn deserializes_from_text() {
        let u: MqttUrl = serde_json::from_str("\"mqtts://h\"").unwrap();
        assert_eq!((u.tls, u.port), (true, 8883));
        let err = serde_json::from_str::<MqttUrl>("\"http://h\"").unwrap_err();
        assert!(err.to_string().contains("invalid broker URL"), "{err}");
    }

    #[test]
    fn rejects() {
        for bad in [
            "h:1",
            "http://h",
            "mqtt://",
            "mqtt://h:x",
            "mqtt://h:1/x",
            "mqtt://u@h",
            "mqtt://[::1",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}
