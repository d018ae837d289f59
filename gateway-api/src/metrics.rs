//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `kiosk_print_jobs{state}` | gauge | jobs currently in each state |
//! | `kiosk_print_jobs_created_total{origin}` | counter | jobs accepted (`http`) or recorded from MQTT (`mqtt`) |
//! | `kiosk_print_job_latency_seconds` | histogram | gateway accepted the job → kiosk reported `printed` |
//! | `kiosk_kiosks_online` | gauge | kiosks whose last status is `online` |
//! | `kiosk_mqtt_rejected_total{reason}` | counter | MQTT messages the gateway could not use |
//! | `kiosk_mqtt_connected` | gauge | 1 while the gateway's own MQTT session is up |

use std::sync::Mutex;

use kiosk_schemas::JobState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// The gateway's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    jobs: Family<StateLabel, Gauge>,
    created: Family<OriginLabel, Counter>,
    latency: Histogram,
    online: Gauge,
    rejected: Family<ReasonLabel, Counter>,
    connected: Gauge,
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
        Metrics {
            registry: Mutex::new(registry),
            jobs,
            created,
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

    /// Records an end-to-end latency, in seconds.
    pub fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Counts an unusable MQTT message (`malformed`, `oversized`, `unknown_topic`, ...).
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
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
        m.observe_latency(0.02);
        m.rejected("malformed");
        let text = m.render(|s| if s == JobState::Queued { 3 } else { 0 }, 2, true);
        for needle in [
            "kiosk_print_jobs{state=\"queued\"} 3",
            "kiosk_print_jobs_created_total{origin=\"http\"} 1",
            "kiosk_print_job_latency_seconds_count 1",
            "kiosk_kiosks_online 2",
            "kiosk_mqtt_rejected_total{reason=\"malformed\"} 1",
            "kiosk_mqtt_connected 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
