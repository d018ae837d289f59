//! `[webhooks]`: events POSTed to the backend; `[events]`: the event log.

use std::time::Duration;

use kiosk_schemas::Secret;
use serde::Deserialize;

/// `[webhooks]`: where events go (see [`crate::cash::webhooks`]). Off
/// when `url` is not set.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL that receives the POSTs.
    pub url: Option<String>,
    /// HMAC-SHA256 key of the `X-Kiosk-Signature` header.
    #[serde(default)]
    pub secret: Secret,
    /// Timeout of one delivery attempt. Default 10 s.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest pause between attempts. Default 10 min.
    #[serde(default = "default_webhook_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Event types sent, as patterns: a type (`kiosk.online`), a family
    /// (`print_job.*`) or `*`. Default `["cash_session.*", "cash_credit.*"]`
    /// (the cash events, as before there were others).
    #[serde(default = "default_webhook_events")]
    pub events: Vec<String>,
}

/// `[events]`: the event log read by webhooks and `GET /v1/events`.
#[derive(Debug, Clone, Deserialize)]
pub struct EventsConfig {
    /// Events older than this are deleted (never one the webhook sender
    /// has not delivered yet); a client of `GET /v1/events` can resume
    /// from `Last-Event-ID` within it. Default 7 days.
    #[serde(default = "default_event_retention", with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention: default_event_retention(),
        }
    }
}

fn default_event_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_webhook_events() -> Vec<String> {
    vec!["cash_session.*".to_owned(), "cash_credit.*".to_owned()]
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            secret: Secret::default(),
            timeout: default_webhook_timeout(),
            max_backoff: default_webhook_backoff(),
            events: default_webhook_events(),
        }
    }
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_webhook_backoff() -> Duration {
    Duration::from_secs(600)
}
