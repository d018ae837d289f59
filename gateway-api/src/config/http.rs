//! `[http]`: the HTTP API's listener, limits and timeouts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    /// Listen address. Default `127.0.0.1:8080`; port 0 picks a free port.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes. Default 1 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// File of API keys, one `name:sha256-hex-of-key` per line (see
    /// `kiosk-gateway apikey add`). Every `/v1` route needs
    /// `Authorization: Bearer <key>`.
    pub api_keys: Option<PathBuf>,
    /// Operators of the fleet page `/fleet` (`name:$argon2id$...` lines,
    /// written by `kiosk-gateway operator add NAME`). Without it the page
    /// only says that nobody can sign in.
    #[serde(default)]
    pub operators: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS instead of HTTP. Needs `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// How long a new connection has to finish its TLS handshake and send
    /// the headers of its first request, and a keep-alive connection the
    /// headers of its next request once their first byte arrived; then it
    /// is closed. Default 10 s.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a connection may go without a byte read or written: a
    /// keep-alive connection between requests, a request whose body
    /// stalls, an event stream whose client stopped reading. Then it is
    /// closed. Event streams send a keep-alive comment at least every
    /// half of it. Default 60 s.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most open HTTP connections; beyond it a new connection is closed
    /// right after accept. Lowered at start to a quarter of what the
    /// open-files limit leaves, so the embedded broker keeps its
    /// descriptors. Default 2048.
    #[serde(default = "default_http_max_connections")]
    pub max_connections: usize,
    /// Most open HTTP connections from one client address (IPv6: one /64);
    /// beyond it a new connection is closed right after accept. Kiosks and
    /// backends behind one NAT share an address: keep it generous.
    /// Default 256.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Most open event streams (`GET /v1/cash-sessions/{id}/events`);
    /// beyond it the request gets `503 too_many_streams`. Default 1024.
    #[serde(default = "default_max_sse_streams")]
    pub max_sse_streams: usize,
    /// Requests per second each API key may make on the routes that need
    /// one (every `/v1` route but the event streams, which
    /// `max_sse_streams` limits), after a burst of `rate_limit_burst`: a
    /// token bucket per key name, refilled at this rate. Beyond it a
    /// request gets `429 rate_limited` with `Retry-After` (whole seconds
    /// until a token is back, at least 1). 0 turns the limit off.
    /// Default 10, like PrintNode's API.
    #[serde(default = "default_rate_limit_per_second")]
    pub rate_limit_per_second: u32,
    /// Requests an API key may make at once before `rate_limit_per_second`
    /// applies: the size of its token bucket, full when the key has been
    /// idle for `rate_limit_burst / rate_limit_per_second` seconds. At
    /// least 1 while the limit is on. Default 20.
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            max_body_bytes: default_max_body_bytes(),
            api_keys: None,
            operators: None,
            tls_cert: None,
            tls_key: None,
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_http_max_connections(),
            max_connections_per_address: default_max_connections_per_address(),
            max_sse_streams: default_max_sse_streams(),
            rate_limit_per_second: default_rate_limit_per_second(),
            rate_limit_burst: default_rate_limit_burst(),
        }
    }
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_http_max_connections() -> usize {
    2048
}
fn default_max_connections_per_address() -> usize {
    256
}
fn default_max_sse_streams() -> usize {
    1024
}
fn default_rate_limit_per_second() -> u32 {
    10
}
fn default_rate_limit_burst() -> u32 {
    20
}

pub(super) fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
