//! `[fleet]`: kiosk presence.

use std::time::Duration;

use serde::Deserialize;

/// `[fleet]`: kiosk presence (see [`crate::presence`]).
#[derive(Debug, Clone, Deserialize)]
pub struct FleetConfig {
    /// Heartbeat assumed for a kiosk whose status does not announce its own
    /// (`heartbeat_ms`, agent `status.heartbeat`): an online kiosk is
    /// marked offline after three heartbeats without any message from it.
    /// Default 30 s, the agents' default.
    #[serde(default = "default_fleet_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            heartbeat: default_fleet_heartbeat(),
        }
    }
}

fn default_fleet_heartbeat() -> Duration {
    Duration::from_secs(30)
}
