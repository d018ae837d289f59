//! The kiosk's status board: each printer's last known readiness, and the
//! retained `kiosk/<id>/status` message built from it.
//!
//! Printer workers write their readings here; whenever a reading changes,
//! the board wakes the status publisher, which publishes a fresh `online`
//! status (retained, QoS 1), and republishes it every `status.heartbeat`
//! while connected. The connection task publishes one too on every connect.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiosk_schemas::{CashDeviceStatus, KioskStatus, PrinterStatus, Timestamp};
use tokio::sync::watch;

/// Version of this agent, reported in the status.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Default)]
struct Readings {
    printers: BTreeMap<String, PrinterStatus>,
    cash: Option<CashDeviceStatus>,
    connected_at: Option<Timestamp>,
    /// The connection now up, `None` while disconnected.
    connection_id: Option<String>,
    /// `host:port` of the broker of the current connection.
    broker: Option<String>,
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct StatusBoard {
    readings: Arc<Mutex<Readings>>,
    changed: watch::Sender<u64>,
    heartbeat_ms: u64,
}

impl StatusBoard {
    /// A board listing `printers`, all `unknown` until first read; its
    /// statuses announce `heartbeat` (`heartbeat_ms`).
    pub fn new<'a>(printers: impl IntoIterator<Item = &'a String>, heartbeat: Duration) -> Self {
        let printers = printers
            .into_iter()
            .map(|name| {
                (
                    name.clone(),
                    PrinterStatus {
                        error: Some("not checked yet".to_owned()),
                        ..PrinterStatus::default()
                    },
                )
            })
            .collect();
        StatusBoard {
            readings: Arc::new(Mutex::new(Readings {
                printers,
                cash: None,
                connected_at: None,
                connection_id: None,
                broker: None,
            })),
            changed: watch::channel(0).0,
            heartbeat_ms: u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Readings> {
        self.readings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `printer`'s reading; wakes subscribers when it differs from
    /// the previous one.
    pub fn set_printer(&self, printer: &str, status: PrinterStatus) {
        let changed = {
            let mut r = self.lock();
            let prev = r.printers.insert(printer.to_owned(), status.clone());
            prev.as_ref() != Some(&status)
        };
        if changed {
            tracing::info!(printer, ready = status.ready, paper = ?status.paper,
                cover_open = status.cover_open, error = status.error.as_deref().unwrap_or(""), "printer status");
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Records the cash acceptor's state.
    pub fn set_cash(&self, cash: CashDeviceStatus) {
        let changed = {
            let mut r = self.lock();
            let prev = r.cash.replace(cash.clone());
            prev.as_ref() != Some(&cash)
        };
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Updates only the count of unacknowledged credits.
    pub fn set_cash_unacked(&self, unacked: u64) {
        let changed = {
            let mut r = self.lock();
            match r.cash.as_mut() {
                Some(c) if c.unacked != unacked => {
                    c.unacked = unacked;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The last reading of `printer`.
    pub fn printer(&self, printer: &str) -> Option<PrinterStatus> {
        self.lock().printers.get(printer).cloned()
    }

    /// An `online` status stamped now, of the current connection.
    pub fn online_status(&self) -> KioskStatus {
        let r = self.lock();
        let mut s = KioskStatus::online(AGENT_VERSION, r.printers.clone());
        s.cash.clone_from(&r.cash);
        s.connected_at = r.connected_at;
        s.connection_id.clone_from(&r.connection_id);
        s.heartbeat_ms = Some(self.heartbeat_ms);
        s.broker.clone_from(&r.broker);
        s
    }

    /// Notes a new MQTT connection (at CONNACK) to `broker` (`host:port`):
    /// every status from now on carries `at` as its `connected_at`,
    /// `connection_id` (the id its last will was set with) and the broker.
    /// Wakes no one: the connection task publishes the `online` status
    /// itself.
    pub fn set_connected(&self, at: Timestamp, connection_id: String, broker: Option<String>) {
        let mut r = self.lock();
        r.connected_at = Some(at);
        r.connection_id = Some(connection_id);
        r.broker = broker;
    }

    /// Notes that the connection is gone: no status is sent until the next
    /// CONNACK (a status queued meanwhile would reach the broker after the
    /// reconnect, with the old connection's id).
    pub fn set_disconnected(&self) {
        self.lock().connection_id = None;
    }

    /// The connection now up, if any.
    pub fn connection_id(&self) -> Option<String> {
        self.lock().connection_id.clone()
    }

    /// A receiver that is woken on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiosk_schemas::PaperStatus;

    #[test]
    fn wakes_only_on_change() {
        let names = ["receipt".to_owned()];
        let board = StatusBoard::new(&names, Duration::from_secs(30));
        let mut rx = board.subscribe();
        let ok = PrinterStatus {
            ready: true,
            online: true,
            paper: PaperStatus::Ok,
            cover_open: false,
            error: None,
        };
        board.set_printer("receipt", ok.clone());
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        board.set_printer("receipt", ok);
        assert!(!rx.has_changed().unwrap());
        let s = board.online_status();
        assert!(s.printers["receipt"].ready);
        assert_eq!(s.agent_version.as_deref(), Some(AGENT_VERSION));
        assert_eq!(s.heartbeat_ms, Some(30_000));
        assert_eq!(s.connection_id, None);
        board.set_connected(
            chrono::Utc::now(),
            "c1".to_owned(),
            Some("n2:1883".to_owned()),
        );
        let s = board.online_status();
        assert_eq!(
            (s.connection_id.as_deref(), s.broker.as_deref()),
            (Some("c1"), Some("n2:1883"))
        );
        board.set_disconnected();
        assert_eq!(board.connection_id(), None);
    }
}
