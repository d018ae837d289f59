//! Kiosk status (`kiosk/<id>/status`, retained; the last will says `offline`).
//!
//! Presence (DESIGN.md, "Topics"): every MQTT connection attempt of an
//! agent gets a fresh `connection_id`, carried by its last will and by every
//! `online` status sent on that connection; the agent republishes its status
//! at least every `heartbeat_ms`. A reader ignores an `offline` whose
//! `connection_id` is not the one of the kiosk's latest `online` (the will of
//! an old connection that the broker timed out after the kiosk had already
//! reconnected), and treats a kiosk silent for three heartbeats as offline
//! (a broker node that died took the will with it).

use std::collections::BTreeMap;

use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Timestamp, V1};

/// Whether the kiosk's agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Connected; published retained by the agent on every connect.
    Online,
    /// Gone: the last will (set at connect) or a clean shutdown.
    Offline,
}

/// Paper state from the roll paper sensor (`DLE EOT 4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaperStatus {
    /// Paper present, not near the end.
    Ok,
    /// Near-end sensor triggered: prints, but change the roll soon.
    NearEnd,
    /// No paper: jobs wait.
    Out,
    /// The link is one-way (device files) or the printer did not answer.
    #[default]
    Unknown,
}

/// Readiness of one logical printer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct PrinterStatus {
    /// True when a job sent now would print: reachable, online, cover
    /// closed, paper not out.
    pub ready: bool,
    /// The printer is reachable and reports itself online (`DLE EOT 1`).
    pub online: bool,
    /// Paper sensor.
    pub paper: PaperStatus,
    /// The cover is open (`DLE EOT 2`).
    pub cover_open: bool,
    /// Why the printer is not ready, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A kiosk's status, published retained with QoS 1 on `kiosk/<id>/status`.
///
/// ```json
/// {"v":1,"state":"online","agent_version":"0.1.0","at":"2026-11-21T10:00:00Z",
///  "printers":{"receipt":{"ready":true,"online":true,"paper":"ok","cover_open":false}}}
/// ```
/// The last will is `{"v":1,"state":"offline","connection_id":"..."}`, with
/// the `connection_id` of the connection it was set on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KioskStatus {
    /// Wire version, always 1.
    pub v: V1,
    /// Online or offline.
    pub state: Presence,
    /// `kiosk-agent` version (semver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// When the status was published; absent in the last will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// When the MQTT connection this status was sent on was made (the
    /// agent's clock at CONNACK): the same in every status of one
    /// connection, new after each reconnect. The gateway re-sends the
    /// kiosk's unfinished jobs and its cash control only when it changes
    /// (or when it is absent, as from older agents). Absent in the last
    /// will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<Timestamp>,
    /// Identifies the MQTT connection (attempt) this status or last will
    /// belongs to: an opaque string (a ULID from this agent), new for every
    /// connection attempt, the same in the last will set on that attempt
    /// and in every status sent on it. An `offline` whose `connection_id`
    /// differs from that of the kiosk's current `online` is stale and
    /// ignored. Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// The agent republishes its status at least this often, in
    /// milliseconds (agent `status.heartbeat`); a reader may consider the
    /// kiosk offline after three of these without a message. Absent in the
    /// last will and from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// The broker this status went through, `host:port` as the agent
    /// dialed it (one node of a cluster with `broker.urls`). Absent in the
    /// last will and from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Each logical printer's readiness, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub printers: BTreeMap<String, PrinterStatus>,
    /// The cash acceptor, when the kiosk has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cash: Option<CashDeviceStatus>,
}

/// State of the kiosk's cash acceptor link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CashDeviceStatus {
    /// The serial port is open.
    pub connected: bool,
    /// Acceptance is enabled (`ENABLE` sent and not withdrawn).
    pub enabled: bool,
    /// Credits recorded but not yet acknowledged by the cloud.
    #[serde(default)]
    pub unacked: u64,
}

impl KioskStatus {
    /// An `offline` without a connection: `{"v":1,"state":"offline"}`.
    pub fn offline() -> Self {
        KioskStatus {
            v: V1,
            state: Presence::Offline,
            agent_version: None,
            at: None,
            connected_at: None,
            connection_id: None,
            heartbeat_ms: None,
            broker: None,
            printers: BTreeMap::new(),
            cash: None,
        }
    }

    /// The `offline` of one connection: its last will, and what the agent
    /// publishes before a clean DISCONNECT.
    pub fn offline_for(connection_id: &str) -> Self {
        KioskStatus {
            connection_id: Some(connection_id.to_owned()),
            ..Self::offline()
        }
    }

    /// An `online` status stamped now.
    pub fn online(agent_version: &str, printers: BTreeMap<String, PrinterStatus>) -> Self {
        KioskStatus {
            v: V1,
            state: Presence::Online,
            agent_version: Some(agent_version.to_owned()),
            at: Some(Utc::now()),
            connected_at: None,
            connection_id: None,
            heartbeat_ms: None,
            broker: None,
            printers,
            cash: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_will_is_minimal() {
        let s = serde_json::to_string(&KioskStatus::offline()).unwrap();
        assert_eq!(s, r#"{"v":1,"state":"offline"}"#);
        let back: KioskStatus = serde_json::from_str(&s).unwrap();
        assert_eq!(back, KioskStatus::offline());
        let will = serde_json::to_string(&KioskStatus::offline_for("01J")).unwrap();
        assert_eq!(will, r#"{"v":1,"state":"offline","connection_id":"01J"}"#);
    }
}
