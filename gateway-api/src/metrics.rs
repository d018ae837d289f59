//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `kiosk_print_jobs{state}` | gauge | jobs currently in each state |
//! | `kiosk_print_jobs_created_total{origin}` | counter | jobs accepted (`http`) or recorded from MQTT (`mqtt`) |
//! | `kiosk_print_job_cancels_total{outcome}` | counter | `POST /v1/print-jobs/{id}/cancel` answers: `cancelled` (a queued job, cancelled at once), `requested` (a received job, its kiosk asked), `already_cancelled`, `not_cancellable` (409) |
//! | `kiosk_print_job_latency_seconds` | histogram | gateway accepted the job → kiosk reported `printed` |
//! | `kiosk_kiosks_online` | gauge | kiosks whose last status is `online` |
//! | `kiosk_presence_transitions_total{to,reason}` | counter | kiosks going `online` (reason `status`) or `offline` (reason `will`: an `offline` of its current connection, the last will or a clean shutdown; `heartbeat_timeout`: three heartbeats without a message) |
//! | `kiosk_presence_stale_wills_ignored_total` | counter | `offline` statuses ignored because they name an earlier connection than the kiosk's current one |
//! | `kiosk_mqtt_rejected_total{reason}` | counter | MQTT messages the gateway could not use |
//! | `kiosk_store_commits_total` | counter | writers that waited for their writes to be durable (a `202`, an MQTT acknowledgement) |
//! | `kiosk_store_flushes_total` | counter | flushes (fsync) of the store; `commits / flushes` writers share one ([`kiosk_store::GroupCommit`]) |
//! | `kiosk_mqtt_echoes_total` | counter | the gateway's own job publishes received back on `kiosk/+/print` and acknowledged without decoding ([`crate::echo`]) |
//! | `kiosk_mqtt_connected` | gauge | 1 while the gateway's own MQTT session is up |
//! | `kiosk_cash_credits_total{outcome}` | counter | cash credits received from kiosks: `session` (applied to the open session it was taken for), `late` (applied to its session after that stopped being open: change or refund), `unassigned` (kept as unassigned), `duplicate` (seen before, not counted again) |
//! | `kiosk_cash_states_total{outcome}` | counter | `cash/state` messages from kiosks: `confirmed` (end of acceptance stored on its session), `duplicate` (held already), `enabled` (the kiosk is accepting), `unknown_session` (no such session of that kiosk), `no_session` (the kiosk has none) |
//! | `kiosk_cash_sessions_final_total{state}` | counter | sessions whose totals became final: `paid`, `cancelled` |
//! | `kiosk_cash_unassigned_resolved_total{action}` | counter | unassigned credits resolved through the API: `assigned`, `refunded` |
//! | `kiosk_http_refused_total{reason}` | counter | HTTP requests refused: `body_too_large` (413), `unauthorized` (401) |
//! | `kiosk_http_rate_limited_total{api_key}` | counter | requests answered `429 rate_limited` because the API key (by name) was over `http.rate_limit_per_second` |
//! | `kiosk_http_connections` | gauge | HTTP connections open now |
//! | `kiosk_http_sse_streams` | gauge | event streams (`/v1/cash-sessions/{id}/events`) open now |
//! | `kiosk_http_connections_refused_total{reason}` | counter | HTTP connections refused or closed by the server's limits: `max_connections` and `per_address` (closed right after accept), `tls_handshake` (failed), `header_timeout` (TLS handshake or request headers not done within `http.header_read_timeout`), `max_sse_streams` (event stream answered 503) |
//! | `kiosk_http_connections_idle_closed_total` | counter | HTTP connections closed after `http.idle_timeout` without a byte either way |
//! | `kiosk_broker_connections` | gauge | embedded broker: client connections open now |
//! | `kiosk_broker_connections_accepted_total` | counter | embedded broker: client logins accepted |
//! | `kiosk_broker_refused_total{reason}` | counter | embedded broker: refused connections (`max_connections`, `rate_limited`, `login_failed`, `login_throttled`, `connect_timeout`, `tls_handshake`, `protocol`, `payload_too_large`, `upstream`) |
//! | `kiosk_broker_acl_denied_total{action}` | counter | embedded broker: ACL denials (`subscribe`, `publish`, `will`), each closing the connection |
//! | `kiosk_broker_sessions_revoked_total` | counter | embedded broker: live sessions dropped because their credentials were removed or rotated |
//! | `kiosk_broker_sessions_taken_over_total` | counter | embedded broker: live sessions replaced by a new connection with the same client id (logged at WARN with both addresses) |

use std::sync::{Arc, Mutex};

use kiosk_broker::BrokerMetrics;
use kiosk_schemas::JobState;
use kiosk_store::CommitStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabel {
    origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiKeyLabel {
    api_key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabel {
    to: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    jobs: Family<StateLabel, Gauge>,
    created: Family<OriginLabel, Counter>,
    cancels: Family<OutcomeLabel, Counter>,
    latency: Histogram,
    online: Gauge,
    rejected: Family<ReasonLabel, Counter>,
    connected: Gauge,
    http_refused: Family<ReasonLabel, Counter>,
    http_rate_limited: Family<ApiKeyLabel, Counter>,
    http_connections: Gauge,
    http_sse_streams: Gauge,
    http_connections_refused: Family<ReasonLabel, Counter>,
    http_idle_closed: Counter,
    credits: Family<OutcomeLabel, Counter>,
    cash_states: Family<OutcomeLabel, Counter>,
    sessions_final: Family<StateLabel, Counter>,
    resolved: Family<ActionLabel, Counter>,
    transitions: Family<TransitionLabel, Counter>,
    stale_wills: Counter,
    echoes: Counter,
}

/// Exposes the embedded broker's counters as `kiosk_broker_*`.
#[derive(Debug)]
struct BrokerCollector(Arc<BrokerMetrics>);

/// Exposes the store's group commit as `kiosk_store_*`.
#[derive(Debug)]
struct StoreCollector(CommitStats);

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let commits = ConstCounter::new(self.0.commits());
        commits.encode(encoder.encode_descriptor(
            "store_commits",
            "Writers that waited for their writes to be durable",
            None,
            commits.metric_type(),
        )?)?;
        let flushes = ConstCounter::new(self.0.flushes());
        flushes.encode(encoder.encode_descriptor(
            "store_flushes",
            "Flushes (fsync) of the store, each shared by the writers waiting",
            None,
            flushes.metric_type(),
        )?)?;
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.snapshot();
        let gauge = ConstGauge::new(i64::try_from(stats.active).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(
            "broker_connections",
            "Client connections open on the embedded broker",
            None,
            gauge.metric_type(),
        )?)?;
        let accepted = ConstCounter::new(stats.accepted);
        accepted.encode(encoder.encode_descriptor(
            "broker_connections_accepted",
            "Client logins accepted by the embedded broker",
            None,
            accepted.metric_type(),
        )?)?;
        let mut family = encoder.encode_descriptor(
            "broker_refused",
            "Connections refused by the embedded broker, by reason",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, n) in &stats.refused {
            let label = ReasonLabel {
                reason: reason.as_str(),
            };
            ConstCounter::new(*n).encode(family.encode_family(&label)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "broker_acl_denied",
            "Packets denied by the embedded broker's topic ACL (the connection is closed)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (action, n) in &stats.acl_denied {
            let label = ActionLabel {
                action: action.as_str(),
            };
            ConstCounter::new(*n).encode(family.encode_family(&label)?)?;
        }
        let revoked = ConstCounter::new(stats.revoked);
        revoked.encode(encoder.encode_descriptor(
            "broker_sessions_revoked",
            "Live sessions dropped because their credentials were removed or rotated",
            None,
            revoked.metric_type(),
        )?)?;
        let taken_over = ConstCounter::new(stats.taken_over);
        taken_over.encode(encoder.encode_descriptor(
            "broker_sessions_taken_over",
            "Live sessions replaced by a new connection with the same client id (MQTT-3.1.4-2)",
            None,
            taken_over.metric_type(),
        )?)?;
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kiosk");
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register(
            "print_jobs",
            "Print jobs currently in each state",
            jobs.clone(),
        );
        let created = Family::<OriginLabel, Counter>::default();
        registry.register("print_jobs_created", "Print jobs created", created.clone());
        let cancels = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "print_job_cancels",
            "Cancel requests, by outcome (cancelled, requested, already_cancelled, not_cancellable)",
            cancels.clone(),
        );
        // 5 ms .. ~82 s
        let latency = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        registry.register(
            "print_job_latency_seconds",
            "Time from the gateway accepting a job to the kiosk reporting it printed",
            latency.clone(),
        );
        let online = Gauge::default();
        registry.register(
            "kiosks_online",
            "Kiosks whose last status is online",
            online.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "mqtt_rejected",
            "MQTT messages the gateway could not use",
            rejected.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "mqtt_connected",
            "1 while the gateway's MQTT session is connected",
            connected.clone(),
        );
        let http_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "http_refused",
            "HTTP requests refused (body_too_large, unauthorized)",
            http_refused.clone(),
        );
        let http_rate_limited = Family::<ApiKeyLabel, Counter>::default();
        registry.register(
            "http_rate_limited",
            "HTTP requests answered 429 because their API key was over http.rate_limit_per_second, by key name",
            http_rate_limited.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "HTTP connections open now",
            http_connections.clone(),
        );
        let http_sse_streams = Gauge::default();
        registry.register(
            "http_sse_streams",
            "Event streams open now",
            http_sse_streams.clone(),
        );
        let http_connections_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections refused or closed by the server's limits (max_connections, per_address, tls_handshake, header_timeout, max_sse_streams)",
            http_connections_refused.clone(),
        );
        let http_idle_closed = Counter::default();
        registry.register(
            "http_connections_idle_closed",
            "HTTP connections closed after http.idle_timeout without a byte either way",
            http_idle_closed.clone(),
        );
        let credits = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "cash_credits",
            "Cash credits received from kiosks, by outcome (session, late, unassigned, duplicate)",
            credits.clone(),
        );
        let cash_states = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "cash_states",
            "cash/state messages from kiosks, by outcome (confirmed, duplicate, enabled, unknown_session, no_session)",
            cash_states.clone(),
        );
        let sessions_final = Family::<StateLabel, Counter>::default();
        registry.register(
            "cash_sessions_final",
            "Cash sessions whose totals became final, by state (paid, cancelled)",
            sessions_final.clone(),
        );
        let resolved = Family::<ActionLabel, Counter>::default();
        registry.register(
            "cash_unassigned_resolved",
            "Unassigned cash credits resolved through the API, by action (assigned, refunded)",
            resolved.clone(),
        );
        let transitions = Family::<TransitionLabel, Counter>::default();
        registry.register(
            "presence_transitions",
            "Kiosk presence changes, by new presence and reason (status, will, heartbeat_timeout)",
            transitions.clone(),
        );
        let stale_wills = Counter::default();
        registry.register(
            "presence_stale_wills_ignored",
            "offline statuses ignored because they name an earlier connection of the kiosk",
            stale_wills.clone(),
        );
        let echoes = Counter::default();
        registry.register(
            "mqtt_echoes",
            "the gateway's own job publishes received back and acknowledged without decoding",
            echoes.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            echoes,
            transitions,
            stale_wills,
            credits,
            cash_states,
            sessions_final,
            resolved,
            http_refused,
            http_rate_limited,
            http_connections,
            http_sse_streams,
            http_connections_refused,
            http_idle_closed,
            jobs,
            created,
            cancels,
            latency,
            online,
            rejected,
            connected,
        }
    }

    /// Counts a created job; `origin` is `http` or `mqtt`.
    pub fn job_created(&self, origin: &'static str) {
        self.created.get_or_create(&OriginLabel { origin }).inc();
    }

    /// Counts a cancel request; `outcome` is `cancelled`, `requested`,
    /// `already_cancelled` or `not_cancellable`.
    pub fn job_cancel(&self, outcome: &'static str) {
        self.cancels.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Records an end-to-end latency, in seconds.
    pub fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Counts a change of a kiosk's presence.
    pub fn presence_transition(&self, t: crate::presence::Transition) {
        let to = match t.to {
            kiosk_schemas::Presence::Online => "online",
            kiosk_schemas::Presence::Offline => "offline",
        };
        self.transitions
            .get_or_create(&TransitionLabel {
                to,
                reason: t.reason.as_str(),
            })
            .inc();
    }

    /// Counts an `offline` of an earlier connection, ignored.
    pub fn stale_will(&self) {
        self.stale_wills.inc();
    }

    /// Counts an echo of one of the gateway's own job publishes.
    pub fn echo(&self) {
        self.echoes.inc();
    }

    /// Counts an unusable MQTT message (`malformed`, `oversized`, `unknown_topic`, ...).
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a cash credit received from a kiosk; `outcome` is `session`,
    /// `late`, `unassigned` or `duplicate`.
    pub fn credit(&self, outcome: &'static str) {
        self.credits.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts a `cash/state` message; `outcome` is `confirmed`, `duplicate`,
    /// `enabled`, `unknown_session` or `no_session`.
    pub fn cash_state(&self, outcome: &'static str) {
        self.cash_states
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts a session whose totals became final.
    pub fn settled(&self, how: crate::cash::Settlement) {
        let state = match how {
            crate::cash::Settlement::Paid => "paid",
            crate::cash::Settlement::Cancelled => "cancelled",
        };
        self.sessions_final
            .get_or_create(&StateLabel { state })
            .inc();
    }

    /// Counts a resolution of an unassigned credit.
    pub fn resolved(&self, action: crate::cash::ResolutionAction) {
        let action = match action {
            crate::cash::ResolutionAction::Assigned => "assigned",
            crate::cash::ResolutionAction::Refunded => "refunded",
        };
        self.resolved.get_or_create(&ActionLabel { action }).inc();
    }

    /// Counts a refused HTTP request (`body_too_large`, `unauthorized`).
    pub fn http_refused(&self, reason: &'static str) {
        self.http_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a request refused with `429` because the API key named
    /// `api_key` (its name, never the secret) was over its rate.
    pub fn http_rate_limited(&self, api_key: &str) {
        let label = ApiKeyLabel {
            api_key: api_key.to_owned(),
        };
        self.http_rate_limited.get_or_create(&label).inc();
    }

    /// Counts an HTTP connection refused or closed by a limit; `reason`
    /// is a [`crate::http_server::Refusal`] label.
    pub fn http_connection_refused(&self, reason: &'static str) {
        self.http_connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts an HTTP connection closed after `http.idle_timeout`.
    pub fn http_idle_closed(&self) {
        self.http_idle_closed.inc();
    }

    /// The gauge of open HTTP connections (raised and lowered by each
    /// connection's guard).
    pub fn http_connections(&self) -> Gauge {
        self.http_connections.clone()
    }

    /// The gauge of open event streams.
    pub fn http_sse_streams(&self) -> Gauge {
        self.http_sse_streams.clone()
    }

    /// Adds the store's commit and flush counters (`kiosk_store_*`).
    pub fn attach_store(&self, store: CommitStats) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.register_collector(Box::new(StoreCollector(store)));
    }

    /// Adds the embedded broker's counters (`kiosk_broker_*`).
    pub fn attach_broker(&self, broker: Arc<BrokerMetrics>) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.register_collector(Box::new(BrokerCollector(broker)));
    }

    /// Renders the text exposition format, with the gauges set from the
    /// given current values.
    pub fn render(
        &self,
        counts: impl Fn(JobState) -> i64,
        online: usize,
        connected: bool,
    ) -> String {
        for s in JobState::ALL {
            self.jobs
                .get_or_create(&StateLabel { state: s.as_str() })
                .set(counts(s));
        }
        self.online.set(i64::try_from(online).unwrap_or(i64::MAX));
        self.connected.set(i64::from(connected));
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.job_created("http");
        m.job_cancel("requested");
        m.observe_latency(0.02);
        m.rejected("malformed");
        m.http_refused("body_too_large");
        m.http_rate_limited("pos-backend");
        m.http_connection_refused("per_address");
        m.http_idle_closed();
        m.http_connections().inc();
        m.http_sse_streams().inc();
        m.credit("unassigned");
        m.cash_state("confirmed");
        m.settled(crate::cash::Settlement::Cancelled);
        m.resolved(crate::cash::ResolutionAction::Refunded);
        m.presence_transition(crate::presence::Transition {
            to: kiosk_schemas::Presence::Offline,
            reason: crate::presence::Reason::HeartbeatTimeout,
        });
        m.stale_will();
        let broker = Arc::new(BrokerMetrics::new());
        broker.refused(kiosk_broker::Refusal::LoginThrottled);
        broker.acl_denied(kiosk_broker::AclAction::Subscribe);
        broker.opened();
        m.attach_broker(broker);
        let text = m.render(|s| if s == JobState::Queued { 3 } else { 0 }, 2, true);
        for needle in [
            "kiosk_print_jobs{state=\"cancelled\"} 0",
            "kiosk_print_job_cancels_total{outcome=\"requested\"} 1",
            "kiosk_print_jobs{state=\"queued\"} 3",
            "kiosk_print_jobs_created_total{origin=\"http\"} 1",
            "kiosk_print_job_latency_seconds_count 1",
            "kiosk_kiosks_online 2",
            "kiosk_mqtt_rejected_total{reason=\"malformed\"} 1",
            "kiosk_cash_credits_total{outcome=\"unassigned\"} 1",
            "kiosk_cash_states_total{outcome=\"confirmed\"} 1",
            "kiosk_cash_sessions_final_total{state=\"cancelled\"} 1",
            "kiosk_cash_unassigned_resolved_total{action=\"refunded\"} 1",
            "kiosk_mqtt_connected 1",
            "kiosk_presence_transitions_total{to=\"offline\",reason=\"heartbeat_timeout\"} 1",
            "kiosk_presence_stale_wills_ignored_total 1",
            "kiosk_http_refused_total{reason=\"body_too_large\"} 1",
            "kiosk_http_rate_limited_total{api_key=\"pos-backend\"} 1",
            "kiosk_http_connections_refused_total{reason=\"per_address\"} 1",
            "kiosk_http_connections_idle_closed_total 1",
            "kiosk_http_connections 1",
            "kiosk_http_sse_streams 1",
            "kiosk_broker_connections 1",
            "kiosk_broker_connections_accepted_total 1",
            "kiosk_broker_refused_total{reason=\"login_throttled\"} 1",
            "kiosk_broker_refused_total{reason=\"rate_limited\"} 0",
            "kiosk_broker_acl_denied_total{action=\"subscribe\"} 1",
            "kiosk_broker_sessions_revoked_total 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
