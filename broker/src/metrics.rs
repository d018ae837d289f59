//! Counters of the broker's refusals and connections, shared by the front
//! door and every connection's [`FleetProtocol`](crate::FleetProtocol), read
//! by the gateway's `/metrics` (`kiosk_broker_*`) through
//! [`BrokerHandle::metrics`](crate::BrokerHandle::metrics).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the broker refused or dropped a client. The spelling is the
/// `reason` label of `kiosk_broker_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `max_connections` reached: closed right after accept.
    MaxConnections,
    /// Over `connections_per_second` for longer than `connect_timeout`:
    /// closed right after accept.
    RateLimited,
    /// Unknown user, wrong password or no credentials: CONNACK 0x04 or
    /// 0x05.
    LoginFailed,
    /// A client id not bound to the user (a kiosk's is its user name, a
    /// role user's `<user>` or `<user>-<suffix>`, the gateway's are reserved
    /// to role `gateway`): CONNACK 0x02.
    ClientId,
    /// Too many failed logins from the client's address
    /// (`failed_logins_per_minute`): CONNACK 0x05 without checking.
    LoginThrottled,
    /// No CONNECT (or no finished TLS handshake) within `connect_timeout`.
    ConnectTimeout,
    /// TLS handshake failed (untrusted client certificate, not TLS, ...).
    TlsHandshake,
    /// First packet not a valid MQTT 3.1.1 CONNECT (CONNACK 0x01 for other
    /// protocol versions).
    Protocol,
    /// A packet over `max_payload_bytes`.
    PayloadTooLarge,
    /// The internal rumqttd listener could not be reached.
    Upstream,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 10] = [
        Refusal::MaxConnections,
        Refusal::RateLimited,
        Refusal::LoginFailed,
        Refusal::ClientId,
        Refusal::LoginThrottled,
        Refusal::ConnectTimeout,
        Refusal::TlsHandshake,
        Refusal::Protocol,
        Refusal::PayloadTooLarge,
        Refusal::Upstream,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::RateLimited => "rate_limited",
            Refusal::LoginFailed => "login_failed",
            Refusal::ClientId => "client_id",
            Refusal::LoginThrottled => "login_throttled",
            Refusal::ConnectTimeout => "connect_timeout",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::Protocol => "protocol",
            Refusal::PayloadTooLarge => "payload_too_large",
            Refusal::Upstream => "upstream",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An MQTT action the ACL refused; the `action` label of
/// `kiosk_broker_acl_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclAction {
    /// A SUBSCRIBE filter.
    Subscribe,
    /// A PUBLISH topic.
    Publish,
    /// The last will topic of a CONNECT.
    Will,
}

impl AclAction {
    /// Every action, in label order.
    pub const ALL: [AclAction; 3] = [AclAction::Subscribe, AclAction::Publish, AclAction::Will];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            AclAction::Subscribe => "subscribe",
            AclAction::Publish => "publish",
            AclAction::Will => "will",
        }
    }
}

impl fmt::Display for AclAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The broker's counters. Every method takes `&self`; share it in an `Arc`.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    accepted: AtomicU64,
    active: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    acl_denied: [AtomicU64; AclAction::ALL.len()],
    revoked: AtomicU64,
    taken_over: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Client connections that passed the front door's login (total).
    pub accepted: u64,
    /// Client connections open now (front door, after login).
    pub active: u64,
    /// Refusals by reason, in [`Refusal::ALL`] order.
    pub refused: Vec<(Refusal, u64)>,
    /// ACL denials by action, in [`AclAction::ALL`] order.
    pub acl_denied: Vec<(AclAction, u64)>,
    /// Live sessions dropped because their credentials were removed or
    /// changed.
    pub revoked: u64,
    /// Live sessions replaced by a new connection with the same client id
    /// (MQTT-3.1.4-2), each logged at WARN with both addresses.
    pub taken_over: u64,
}

impl BrokerStats {
    /// The count of one refusal reason.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// The count of one ACL action.
    pub fn acl_denied(&self, action: AclAction) -> u64 {
        self.acl_denied
            .iter()
            .find(|(a, _)| *a == action)
            .map_or(0, |(_, n)| *n)
    }
}

impl BrokerMetrics {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: Refusal) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an ACL denial.
    pub fn acl_denied(&self, action: AclAction) {
        let index = AclAction::ALL
            .iter()
            .position(|a| *a == action)
            .unwrap_or(0);
        self.acl_denied[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a session dropped by credential revocation.
    pub fn revoked(&self) {
        self.revoked.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a live session taken over by a new connection of the same
    /// client id.
    pub fn took_over(&self) {
        self.taken_over.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an accepted connection; pair with [`BrokerMetrics::closed`].
    pub fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the end of a connection counted by [`BrokerMetrics::opened`].
    pub fn closed(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> BrokerStats {
        BrokerStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            refused: Refusal::ALL
                .iter()
                .map(|r| (*r, self.refused[r.index()].load(Ordering::Relaxed)))
                .collect(),
            acl_denied: AclAction::ALL
                .iter()
                .zip(&self.acl_denied)
                .map(|(a, n)| (*a, n.load(Ordering::Relaxed)))
                .collect(),
            revoked: self.revoked.load(Ordering::Relaxed),
            taken_over: self.taken_over.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let m = BrokerMetrics::new();
        m.refused(Refusal::LoginThrottled);
        m.refused(Refusal::LoginThrottled);
        m.acl_denied(AclAction::Publish);
        m.opened();
        m.opened();
        m.closed();
        m.revoked();
        let s = m.snapshot();
        assert_eq!(s.refused(Refusal::LoginThrottled), 2);
        assert_eq!(s.refused(Refusal::LoginFailed), 0);
        assert_eq!(s.acl_denied(AclAction::Publish), 1);
        assert_eq!((s.accepted, s.active, s.revoked), (2, 1, 1));
        assert_eq!(s.refused.len(), Refusal::ALL.len());
    }
}
