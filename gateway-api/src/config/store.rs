//! `[store]`: the sled directory and how long finished jobs are kept.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
pub struct StoreConfig {
    /// Directory of the sled database; created if missing.
    pub path: PathBuf,
    /// Finished jobs older than this are deleted. Default 30 days.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
}

fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
