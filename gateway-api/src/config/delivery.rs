//! `[delivery]`: republish and expiry policy of print jobs.

use std::time::Duration;

use serde::Deserialize;

/// `[delivery]`
#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryConfig {
    /// How often unfinished jobs are re-sent to online kiosks. Default 30 s.
    #[serde(default = "default_republish_interval", with = "humantime_serde")]
    pub republish_interval: Duration,
    /// Lifetime of a job when the request gives no `expires_in_s`, and of a
    /// job published over MQTT without `expires_at`. Default 24 h.
    #[serde(default = "default_expires_in", with = "humantime_serde")]
    pub default_expires_in: Duration,
    /// Longest `expires_in_s` accepted. Default 7 days.
    #[serde(default = "default_max_expires_in", with = "humantime_serde")]
    pub max_expires_in: Duration,
    /// How long after a received job's expiry the gateway keeps asking the
    /// kiosk for its outcome. Default 24 h.
    #[serde(default = "default_result_grace", with = "humantime_serde")]
    pub result_grace: Duration,
    /// Largest print job, as encoded JSON, in bytes; larger requests get
    /// 413. Keep it at or below the agents' `print.max_job_bytes`. Default
    /// 512 KiB.
    #[serde(default = "default_max_job_bytes")]
    pub max_job_bytes: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            republish_interval: default_republish_interval(),
            default_expires_in: default_expires_in(),
            max_expires_in: default_max_expires_in(),
            result_grace: default_result_grace(),
            max_job_bytes: default_max_job_bytes(),
        }
    }
}

fn default_republish_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_expires_in() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_expires_in() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_result_grace() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_job_bytes() -> usize {
    512 * 1024
}
