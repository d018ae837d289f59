//! `[webhooks]`: cash events POSTed to the backend.

use std::time::Duration;

use kiosk_schemas::Secret;
use serde::Deserialize;

/// `[webhooks]`: where cash session and credit events go (see
/// [`crate::cash::webhooks`]). Off when `url` is not set.
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
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            secret: Secret::default(),
            timeout: default_webhook_timeout(),
            max_backoff: default_webhook_backoff(),
        }
    }
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_webhook_backoff() -> Duration {
    Duration::from_secs(600)
}
