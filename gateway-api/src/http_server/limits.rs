//! The caps of `[http]`: connections in all and per address, event
//! streams, and the connection timeouts; refusals counted and logged.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kiosk_broker::fds;
use kiosk_broker::limits::address_group;
use kiosk_schemas::log_limit::SharedLogLimiter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::config::HttpConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Why the server refused or closed a connection. The spelling is the
/// `reason` label of `kiosk_http_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `http.max_connections` open: closed right after accept.
    MaxConnections,
    /// `http.max_connections_per_address` open from the client's address:
    /// closed right after accept.
    PerAddress,
    /// The TLS handshake failed (not TLS, no common cipher, ...).
    TlsHandshake,
    /// The TLS handshake or a request's headers were not done within
    /// `http.header_read_timeout`: closed.
    HeaderTimeout,
    /// `http.max_sse_streams` event streams open: `503 too_many_streams`.
    MaxSseStreams,
}

impl Refusal {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::PerAddress => "per_address",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::MaxSseStreams => "max_sse_streams",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `http.max_connections`, lowered (with a warning) to a quarter of the
/// descriptors the open-files limit leaves after
/// [`fds::RESERVED_FDS`]: each HTTP connection takes one, and the
/// embedded broker (three per MQTT connection) must keep the rest, or a
/// flood of HTTP sockets would lock kiosks out.
pub fn effective_max_connections(max_connections: usize) -> usize {
    let Some(limit) = fds::open_files_limit() else {
        return max_connections;
    };
    let fits = (fds::connections_fitting(limit, 0, 1) / 4).max(1);
    if fits < max_connections {
        warn!(
            limit,
            max_connections,
            capped_to = fits,
            "the open-files limit is too low for http.max_connections (HTTP may use a quarter of it): raise it (systemd LimitNOFILE) or lower http.max_connections"
        );
        return fits;
    }
    max_connections
}

/// Open connections per client address (IPv6: per /64), each held by an
/// [`AddressGuard`].
#[derive(Debug)]
pub struct AddressCounts {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl AddressCounts {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(AddressCounts {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more connection from `addr`; `None` when `addr` has
    /// `max` already. The count goes down when the guard is dropped.
    pub fn try_open(self: &Arc<Self>, addr: IpAddr) -> Option<AddressGuard> {
        let key = address_group(addr);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressGuard {
            counts: self.clone(),
            key,
        })
    }

    /// Connections open from `addr`'s group now.
    pub fn open(&self, addr: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&address_group(addr)).copied().unwrap_or(0)
    }

    /// Addresses with at least one open connection.
    pub fn tracked(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One connection counted in [`AddressCounts`].
#[derive(Debug)]
pub struct AddressGuard {
    counts: Arc<AddressCounts>,
    key: IpAddr,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Forget the address: the map holds only open ones.
                open.remove(&self.key);
            }
        }
    }
}

/// Raises a gauge while alive.
#[derive(Debug)]
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An admitted connection: its places in the caps, held until it closes.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    _address: AddressGuard,
    _open: GaugeGuard,
}

/// An open event stream's place in `http.max_sse_streams`; hold it as long
/// as the stream.
#[derive(Debug)]
pub struct StreamPermit {
    _permit: OwnedSemaphorePermit,
    _open: GaugeGuard,
}

/// The connection timeouts of `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `http.header_read_timeout`.
    pub header_read: Duration,
    /// `http.idle_timeout`.
    pub idle: Duration,
}

/// The server's limits, shared by the accept loop, every connection and
/// the event stream route.
pub struct Limits {
    connections: Arc<Semaphore>,
    per_address: Arc<AddressCounts>,
    sse_streams: Arc<Semaphore>,
    pub(super) timeouts: Timeouts,
    pub(super) metrics: Arc<Metrics>,
    pub(super) log: SharedLogLimiter<&'static str>,
}

impl Limits {
    /// The limits of `config`, with `max_connections` instead of
    /// `config.max_connections` (see [`effective_max_connections`]).
    pub fn new(config: &HttpConfig, max_connections: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Limits {
            connections: Arc::new(Semaphore::new(max_connections)),
            per_address: AddressCounts::new(config.max_connections_per_address),
            sse_streams: Arc::new(Semaphore::new(config.max_sse_streams)),
            timeouts: Timeouts {
                header_read: config.header_read_timeout,
                idle: config.idle_timeout,
            },
            metrics,
            log: SharedLogLimiter::new(Duration::from_secs(1), 16),
        })
    }

    /// Admits a connection from `addr`, or says which cap it is over.
    ///
    /// # Errors
    /// [`Refusal::MaxConnections`] or [`Refusal::PerAddress`].
    pub fn admit(&self, addr: IpAddr) -> Result<Admitted, Refusal> {
        let permit = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::MaxConnections)?;
        let address = self.per_address.try_open(addr).ok_or(Refusal::PerAddress)?;
        Ok(Admitted {
            _permit: permit,
            _address: address,
            _open: GaugeGuard::new(self.metrics.http_connections()),
        })
    }

    /// A place for an event stream.
    ///
    /// # Errors
    /// [`ApiError::TooManyStreams`] (counted) when `http.max_sse_streams`
    /// are open.
    pub fn open_stream(&self) -> Result<StreamPermit, ApiError> {
        match self.sse_streams.clone().try_acquire_owned() {
            Ok(permit) => Ok(StreamPermit {
                _permit: permit,
                _open: GaugeGuard::new(self.metrics.http_sse_streams()),
            }),
            Err(_) => {
                self.refuse(Refusal::MaxSseStreams, None);
                Err(ApiError::TooManyStreams)
            }
        }
    }

    /// The connection timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Counts a refusal and logs it (limited).
    pub(super) fn refuse(&self, reason: Refusal, peer: Option<SocketAddr>) {
        self.metrics.http_connection_refused(reason.as_str());
        if self
            .log
            .check(reason.as_str(), std::time::Instant::now())
            .is_some()
        {
            warn!(?peer, %reason, "HTTP connection refused");
        } else {
            debug!(?peer, %reason, "HTTP connection refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn address_counts_cap_each_address_and_forget_closed_ones() {
        let counts = AddressCounts::new(2);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let a1 = counts.try_open(a).unwrap();
        let a2 = counts.try_open(a).unwrap();
        assert!(counts.try_open(a).is_none(), "third from a");
        // Another address is not affected.
        let b1 = counts.try_open(b).unwrap();
        assert_eq!(
            (counts.open(a), counts.open(b), counts.tracked()),
            (2, 1, 2)
        );
        drop(a1);
        let a3 = counts.try_open(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(counts.tracked(), 0, "closed addresses are forgotten");
    }

    #[test]
    fn address_counts_group_ipv6_by_64_and_mapped_ipv4_as_ipv4() {
        let counts = AddressCounts::new(1);
        let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _g = counts.try_open(v6).unwrap();
        assert!(counts.try_open(same_64).is_none());
        assert!(counts.try_open(other_64).is_some());
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
        let _m = counts.try_open(v4).unwrap();
        assert!(counts.try_open(mapped).is_none());
        assert!(counts.try_open(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_some());
    }
}
