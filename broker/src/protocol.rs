//! The per-connection protocol seam of rumqttd, where the topic ACL is
//! enforced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{self, Packet, Protocol, SubAck, SubscribeReasonCode};
use tracing::{debug, warn};

use kiosk_schemas::log_limit::SharedLogLimiter;

use crate::acl::{Acl, ClientAcl};
use crate::credentials::CredentialStore;
use crate::metrics::{AclAction, BrokerMetrics, Refusal};

/// The error a denied PUBLISH or last will is turned into. rumqttd has no
/// "not authorized" codec error; any error makes it close the connection
/// (as AWS IoT Core does; MQTT-3.3.5-2 allows a server to either
/// acknowledge or close), and 0x87 is MQTT 5's "Not authorized" reason
/// code, so rumqttd's own log line reads `Invalid reason = 135`.
const DENIED: protocol::Error = protocol::Error::InvalidReason(0x87);
/// SUBSCRIBEs with denied filters whose SUBACK has not been written yet,
/// per connection; a client beyond it is closed.
const MAX_PENDING_SUBACKS: usize = 1024;

/// MQTT 3.1.1 codec of the fleet's rumqttd listeners: rumqttd's [`V4`]
/// plus the topic ACL.
///
/// rumqttd's [`Server`](rumqttd::Server) clones the protocol value once per
/// accepted connection and calls [`Protocol::read_mut`] for every packet the
/// client sends, CONNECT first, before the router sees it. A clone therefore
/// lives exactly as long as one connection and sees, in order, its CONNECT
/// (client id, username, last will), every SUBSCRIBE and every PUBLISH:
///
/// - CONNECT: looks the username's role up in the [`CredentialStore`] and
///   resolves the [`Acl`] for this username and client id once
///   ([`ClientAcl`]); a last will whose topic is not writable is denied.
/// - SUBSCRIBE: every filter must be readable (every topic it can match).
///   Denied filters are taken out before the router sees the packet, and
///   the router's SUBACK is written with 0x80 (failure) in their places
///   (MQTT-3.9.3): the connection stays open, the other filters work.
/// - PUBLISH: the topic must be writable. A denied PUBLISH never reaches
///   the router: `read_mut` returns an error and rumqttd closes the
///   connection (MQTT-3.3.5-2 leaves the choice between a positive
///   acknowledgement and closing; closing tells the client something is
///   wrong).
///
/// Every denial is logged with client id, username and topic (at most one
/// warning per action and second, with the count held back), and counted
/// in [`BrokerMetrics`]. A packet over the size limit is counted too
/// (rumqttd closes those connections itself).
#[derive(Debug, Clone)]
pub struct FleetProtocol {
    inner: V4,
    acl: Arc<Acl>,
    credentials: Option<Arc<CredentialStore>>,
    metrics: Arc<BrokerMetrics>,
    log_limit: Arc<SharedLogLimiter<AclAction>>,
    client: Option<Arc<Client>>,
}

/// What the connection learnt from its CONNECT.
#[derive(Debug)]
struct Client {
    client_id: String,
    username: Option<String>,
    acl: ClientAcl,
    /// SUBSCRIBE packet id → (number of filters, indices of the denied
    /// ones), until its SUBACK is written.
    pending: Mutex<HashMap<u16, (usize, Vec<usize>)>>,
}

impl FleetProtocol {
    /// A codec for one listener enforcing `acl`; roles come from
    /// `credentials`. rumqttd clones it for each connection.
    pub fn new(
        acl: Arc<Acl>,
        credentials: Arc<CredentialStore>,
        metrics: Arc<BrokerMetrics>,
    ) -> Self {
        FleetProtocol {
            inner: V4,
            acl,
            credentials: Some(credentials),
            metrics,
            log_limit: Arc::new(SharedLogLimiter::new(
                Duration::from_secs(1),
                AclAction::ALL.len(),
            )),
            client: None,
        }
    }

    /// A codec that enforces `acl` for users without role lookups (every
    /// user is treated as role-less: only `user` sections and rules for
    /// everyone apply). For tests and fuzzing of the seam.
    pub fn without_roles(acl: Arc<Acl>, metrics: Arc<BrokerMetrics>) -> Self {
        FleetProtocol {
            inner: V4,
            acl,
            credentials: None,
            metrics,
            log_limit: Arc::new(SharedLogLimiter::new(
                Duration::from_secs(1),
                AclAction::ALL.len(),
            )),
            client: None,
        }
    }

    /// Counts and logs (rate-limited) one denial.
    fn log_denied(&self, action: AclAction, topic: &str, outcome: &str) {
        self.metrics.acl_denied(action);
        let (client_id, username) = match &self.client {
            Some(c) => (c.client_id.as_str(), c.username.as_deref()),
            None => ("", None),
        };
        // Debug formatting quotes and escapes client-chosen strings, so they
        // cannot forge log lines.
        match self.log_limit.check(action, Instant::now()) {
            Some(suppressed) => {
                warn!(?client_id, ?username, ?topic, %action, suppressed, outcome, "ACL denied");
            }
            None => debug!(?client_id, ?username, ?topic, %action, outcome, "ACL denied"),
        }
    }

    fn deny(&self, action: AclAction, topic: &str) -> protocol::Error {
        self.log_denied(action, topic, "closing the connection");
        DENIED
    }

    /// Checks a packet; may take denied filters out of a SUBSCRIBE.
    fn check(&mut self, packet: &mut Packet) -> Result<(), protocol::Error> {
        match packet {
            Packet::Connect(connect, _, will, _, login) => {
                if self.client.is_some() {
                    // A second CONNECT is a protocol violation (MQTT 3.1.1
                    // section 3.1); never let it change the identity.
                    return Err(protocol::Error::InvalidProtocol);
                }
                let username = login.as_ref().map(|l| l.username.clone());
                let role = match (&username, &self.credentials) {
                    (Some(user), Some(store)) => store.role(user),
                    _ => None,
                };
                let acl = match &username {
                    Some(user) => self.acl.for_client(user, &connect.client_id, role),
                    // Anonymous clients are refused by rumqttd; they get no
                    // rights in the meantime.
                    None => ClientAcl::default(),
                };
                if username.is_none() {
                    warn!(client_id = ?connect.client_id, reason = "no username and password", "login refused");
                }
                self.client = Some(Arc::new(Client {
                    client_id: connect.client_id.clone(),
                    username,
                    acl,
                    pending: Mutex::new(HashMap::new()),
                }));
                if let Some(will) = will {
                    let topic = String::from_utf8_lossy(&will.topic);
                    if !self.may_publish(&will.topic) {
                        return Err(self.deny(AclAction::Will, &topic));
                    }
                }
                Ok(())
            }
            Packet::Subscribe(subscribe, _) => {
                let Some(client) = self.client.clone() else {
                    return Err(self.deny(AclAction::Subscribe, ""));
                };
                let count = subscribe.filters.len();
                let mut denied = Vec::new();
                let mut index = 0;
                subscribe.filters.retain(|filter| {
                    // rumqttd has no `$`-topics and disconnects a client
                    // subscribing to one: a plain failure code instead.
                    let dollar =
                        filter.path.starts_with('$') && !filter.path.starts_with("$share/");
                    let allowed = !dollar && client.acl.may_subscribe(&filter.path);
                    if !allowed {
                        self.log_denied(AclAction::Subscribe, &filter.path, "SUBACK 0x80");
                        denied.push(index);
                    }
                    index += 1;
                    allowed
                });
                if denied.is_empty() {
                    return Ok(());
                }
                let mut pending = client
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if pending.len() >= MAX_PENDING_SUBACKS {
                    return Err(protocol::Error::InvalidProtocol);
                }
                pending.insert(subscribe.pkid, (count, denied));
                Ok(())
            }
            Packet::Publish(publish, _) => {
                if self.may_publish(&publish.topic) {
                    Ok(())
                } else {
                    let topic = String::from_utf8_lossy(&publish.topic);
                    Err(self.deny(AclAction::Publish, &topic))
                }
            }
            _ => Ok(()),
        }
    }

    /// The router's SUBACK for the filters it saw, with 0x80 put back in
    /// the places of the denied ones.
    fn complete_suback(&self, suback: SubAck) -> SubAck {
        let Some(client) = &self.client else {
            return suback;
        };
        let entry = client
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&suback.pkid);
        let Some((count, denied)) = entry else {
            return suback;
        };
        let mut granted = suback.return_codes.into_iter();
        let return_codes = (0..count)
            .map(|i| {
                if denied.contains(&i) {
                    SubscribeReasonCode::Failure
                } else {
                    granted.next().unwrap_or(SubscribeReasonCode::Failure)
                }
            })
            .collect();
        SubAck {
            pkid: suback.pkid,
            return_codes,
        }
    }

    fn may_publish(&self, topic: &[u8]) -> bool {
        let Ok(topic) = std::str::from_utf8(topic) else {
            return false;
        };
        self.client
            .as_ref()
            .is_some_and(|c| c.acl.may_publish(topic))
    }
}

impl Protocol for FleetProtocol {
    fn read_mut(
        &mut self,
        stream: &mut BytesMut,
        max_size: usize,
    ) -> Result<Packet, protocol::Error> {
        let packet = match self.inner.read_mut(stream, max_size) {
            Ok(packet) => packet,
            Err(protocol::Error::PayloadSizeLimitExceeded(size)) => {
                self.metrics.refused(Refusal::PayloadTooLarge);
                let client_id = self.client.as_ref().map(|c| c.client_id.as_str());
                let username = self.client.as_ref().and_then(|c| c.username.as_deref());
                warn!(
                    ?client_id,
                    ?username,
                    size,
                    max_size,
                    "packet over max_payload_bytes: closing the connection"
                );
                return Err(protocol::Error::PayloadSizeLimitExceeded(size));
            }
            Err(e) => return Err(e),
        };
        let mut packet = packet;
        self.check(&mut packet)?;
        Ok(packet)
    }

    fn write(&self, packet: Packet, write: &mut BytesMut) -> Result<usize, protocol::Error> {
        let packet = match packet {
            Packet::SubAck(suback, props) => Packet::SubAck(self.complete_suback(suback), props),
            other => other,
        };
        self.inner.write(packet, write)
    }
}

#[cfg(test)]
mod tests {
    use rumqttd::protocol::{
        Connect, Filter, LastWill, Login, Publish, QoS, RetainForwardRule, Subscribe,
    };

    use super::*;

    fn encode(packet: Packet) -> BytesMut {
        let mut buf = BytesMut::new();
        V4.write(packet, &mut buf).unwrap();
        buf
    }

    fn connect(user: &str, will: Option<&str>) -> BytesMut {
        encode(Packet::Connect(
            Connect {
                keep_alive: 30,
                client_id: user.to_owned(),
                clean_session: true,
            },
            None,
            will.map(|topic| LastWill {
                topic: topic.as_bytes().to_vec().into(),
                message: b"offline".to_vec().into(),
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
            None,
            Some(Login {
                username: user.to_owned(),
                password: "pw".to_owned(),
            }),
        ))
    }

    fn subscribe(filter: &str) -> BytesMut {
        encode(Packet::Subscribe(
            Subscribe {
                pkid: 1,
                filters: vec![Filter {
                    path: filter.to_owned(),
                    qos: QoS::AtLeastOnce,
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                }],
            },
            None,
        ))
    }

    fn publish(topic: &str) -> BytesMut {
        encode(Packet::Publish(
            Publish::new(topic.as_bytes().to_vec(), b"{}".to_vec(), false),
            None,
        ))
    }

    fn protocol() -> (FleetProtocol, Arc<BrokerMetrics>) {
        let acl = Acl::parse("pattern read k/%u/in\npattern write k/%u/out\n").unwrap();
        let metrics = Arc::new(BrokerMetrics::new());
        (
            FleetProtocol::without_roles(Arc::new(acl), metrics.clone()),
            metrics,
        )
    }

    #[test]
    fn allows_own_topics_and_denies_others() {
        let (proto, metrics) = protocol();
        let mut conn = proto.clone();
        assert!(
            conn.read_mut(&mut connect("a", Some("k/a/out")), 1024)
                .is_ok()
        );
        assert!(conn.read_mut(&mut subscribe("k/a/in"), 1024).is_ok());
        assert!(conn.read_mut(&mut publish("k/a/out"), 1024).is_ok());
        // A denied filter is taken out; the connection stays.
        match conn.read_mut(&mut subscribe("k/+/in"), 1024) {
            Ok(Packet::Subscribe(s, _)) => assert!(s.filters.is_empty()),
            other => panic!("expected a SUBSCRIBE, got {other:?}"),
        }
        assert!(conn.read_mut(&mut publish("k/b/out"), 1024).is_err());
        let stats = metrics.snapshot();
        assert_eq!(stats.acl_denied(AclAction::Subscribe), 1);
        assert_eq!(stats.acl_denied(AclAction::Publish), 1);

        // Each clone starts without identity: nothing before CONNECT.
        let mut other = proto.clone();
        assert!(other.read_mut(&mut publish("k/a/out"), 1024).is_err());
        let mut will = proto.clone();
        assert!(
            will.read_mut(&mut connect("a", Some("k/b/out")), 1024)
                .is_err()
        );
        assert_eq!(metrics.snapshot().acl_denied(AclAction::Will), 1);
        // A second CONNECT cannot change the identity.
        let mut twice = proto;
        assert!(twice.read_mut(&mut connect("a", None), 1024).is_ok());
        assert!(twice.read_mut(&mut connect("b", None), 1024).is_err());
    }

    /// MQTT-3.9.3: a SUBACK has one return code per filter, in order; the
    /// denied ones get 0x80 and the others what the router granted.
    #[test]
    fn denied_filters_get_0x80_in_their_place() {
        let (proto, metrics) = protocol();
        let mut conn = proto;
        conn.read_mut(&mut connect("a", None), 1024).unwrap();
        let filter = |path: &str| Filter {
            path: path.to_owned(),
            qos: QoS::AtLeastOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        };
        let mut bytes = encode(Packet::Subscribe(
            Subscribe {
                pkid: 7,
                filters: vec![filter("k/b/in"), filter("k/a/in"), filter("#")],
            },
            None,
        ));
        let Ok(Packet::Subscribe(seen, _)) = conn.read_mut(&mut bytes, 1024) else {
            panic!("expected a SUBSCRIBE");
        };
        let paths: Vec<_> = seen.filters.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["k/a/in"], "the router sees only the allowed filter");
        assert_eq!(metrics.snapshot().acl_denied(AclAction::Subscribe), 2);

        // The router grants what it saw; the client gets all three codes.
        let router = SubAck {
            pkid: 7,
            return_codes: vec![SubscribeReasonCode::QoS1],
        };
        let mut out = BytesMut::new();
        conn.write(Packet::SubAck(router, None), &mut out).unwrap();
        // SUBACK: type 0x90, remaining length 2 + 3, pkid 7, codes.
        assert_eq!(&out[..], &[0x90, 5, 0, 7, 0x80, 0x01, 0x80]);

        // Other SUBACKs pass unchanged; the pending entry is gone.
        let mut out = BytesMut::new();
        let plain = SubAck {
            pkid: 7,
            return_codes: vec![SubscribeReasonCode::QoS0],
        };
        conn.write(Packet::SubAck(plain, None), &mut out).unwrap();
        assert_eq!(&out[..], &[0x90, 3, 0, 7, 0x00]);
    }

    #[test]
    fn partial_packets_and_oversized_packets() {
        let (proto, metrics) = protocol();
        let mut conn = proto;
        let mut full = connect("a", None);
        let mut head = full.split_to(3);
        assert!(matches!(
            conn.read_mut(&mut head, 1024),
            Err(protocol::Error::InsufficientBytes(_))
        ));
        head.unsplit(full);
        assert!(conn.read_mut(&mut head, 1024).is_ok());
        let mut big = publish(&"x".repeat(200));
        assert!(conn.read_mut(&mut big, 100).is_err());
        assert_eq!(metrics.snapshot().refused(Refusal::PayloadTooLarge), 1);
    }
}
