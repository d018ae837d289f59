//! Which kiosks exist and whether they are online.
//!
//! A kiosk is known when it has a `kiosk` entry in the broker's credentials
//! file, is listed in the config's `kiosks`, or has ever published its
//! status. Presence comes from `kiosk/<id>/status` by the rule of
//! [`crate::presence`]: the agent publishes `online` (retained) on every
//! connect and every heartbeat, the broker publishes its last will
//! `offline` when the link dies (ignored when it is an earlier
//! connection's), and [`Fleet::watch_heartbeats`] marks a kiosk offline
//! after three heartbeats of silence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use kiosk_broker::CredentialStore;
use kiosk_schemas::{CashDeviceStatus, KioskId, KioskStatus, Presence, PrinterStatus, Timestamp};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::FleetEventKind;
use crate::metrics::Metrics;
use crate::presence::{StatusOutcome, Tracker, Transition};
use crate::store::{KioskRecord, Store, StoreError};

#[derive(Debug, Clone, Default)]
struct Live {
    last_seen: Option<Timestamp>,
    presence: Tracker,
    /// When the presence last changed, as this gateway process saw it.
    since: Option<Timestamp>,
    /// The broker of the kiosk's last `online` status (`host:port`).
    broker: Option<String>,
}

/// The kiosk registry.
pub struct Fleet {
    store: Store,
    credentials: Option<Arc<CredentialStore>>,
    configured: HashSet<KioskId>,
    live: RwLock<HashMap<KioskId, Live>>,
    /// `fleet.heartbeat`: assumed for kiosks that announce none.
    heartbeat: Duration,
    /// Wakes the heartbeat checker when a kiosk comes online (its deadline
    /// may be earlier than the one the checker sleeps towards).
    came_online: Notify,
}

/// A kiosk as `GET /v1/kiosks` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KioskView {
    /// The kiosk id.
    pub kiosk_id: KioskId,
    /// `online`, `offline`, or `unknown` (no status seen since the gateway started
    /// and none stored).
    pub status: &'static str,
    /// Last time any message from the kiosk arrived (RFC 3339).
    pub last_seen: Option<Timestamp>,
    /// Agent version from its last `online` status.
    pub agent_version: Option<String>,
    /// Printers' readiness from its last status.
    pub printers: BTreeMap<String, PrinterStatus>,
    /// Cash acceptor state from its last status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cash: Option<CashDeviceStatus>,
    /// Jobs not yet finished (`queued` or `received`).
    pub pending_jobs: usize,
    /// When `status` last changed, as this gateway process saw it (`null`
    /// when it has not changed since the gateway started).
    pub status_since: Option<Timestamp>,
    /// The broker (cluster node) of the kiosk's last `online` status, as
    /// the agent dialed it (`host:port`); `null` when this gateway process
    /// has not seen one.
    pub broker: Option<String>,
}

impl Fleet {
    /// A registry over `store`, with kiosks from `credentials` and
    /// `configured`; `heartbeat` (`fleet.heartbeat`) is assumed for kiosks
    /// whose status announces no `heartbeat_ms`.
    pub fn new(
        store: Store,
        credentials: Option<Arc<CredentialStore>>,
        configured: impl IntoIterator<Item = KioskId>,
        heartbeat: Duration,
    ) -> Self {
        Fleet {
            store,
            credentials,
            configured: configured.into_iter().collect(),
            live: RwLock::default(),
            heartbeat,
            came_online: Notify::new(),
        }
    }

    /// True when the kiosk is known (see module docs).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub fn is_known(&self, kiosk: &KioskId) -> Result<bool, StoreError> {
        Ok(self.configured.contains(kiosk)
            || self.credentials.as_ref().is_some_and(|c| c.is_kiosk(kiosk))
            || self.store.kiosk(kiosk)?.is_some())
    }

    /// True when the last status said `online`.
    pub fn is_online(&self, kiosk: &KioskId) -> bool {
        self.read()
            .get(kiosk)
            .is_some_and(|l| l.presence.presence == Some(Presence::Online))
    }

    /// Number of kiosks whose last status said `online`.
    pub fn online_count(&self) -> usize {
        self.read()
            .values()
            .filter(|l| l.presence.presence == Some(Presence::Online))
            .count()
    }

    /// Notes that a message from `kiosk` arrived now: it is alive.
    pub fn seen(&self, kiosk: &KioskId) {
        let mut live = self.write();
        let l = live.entry(kiosk.clone()).or_default();
        l.last_seen = Some(Utc::now());
        l.presence.heard(Instant::now());
    }

    /// Records a status message by the rule of [`crate::presence`].
    /// `reconnected` is true for the first `online` status of a connection
    /// (its `connected_at` differs from the last one seen, or is absent, or
    /// the kiosk was offline): the kiosk (re)connected and may have lost
    /// its broker session, so its unfinished jobs and its cash control
    /// should be sent again. Later statuses of the same connection (a
    /// heartbeat, a printer or cash reading changed) are not. A stale will
    /// changes nothing, not even the stored record.
    ///
    /// # Errors
    /// [`StoreError`] when the kiosk record cannot be written.
    pub fn apply_status(
        &self,
        kiosk: &KioskId,
        status: &KioskStatus,
    ) -> Result<StatusOutcome, StoreError> {
        let now = Utc::now();
        let outcome = {
            let mut live = self.write();
            let l = live.entry(kiosk.clone()).or_default();
            let beat = l.presence.heartbeat;
            let outcome = l.presence.on_status(status, Instant::now());
            if outcome == StatusOutcome::StaleWill {
                return Ok(outcome);
            }
            l.last_seen = Some(now);
            if status.state == Presence::Online {
                l.broker.clone_from(&status.broker);
            }
            if let StatusOutcome::Applied {
                transition: Some(_),
                ..
            } = outcome
            {
                l.since = Some(now);
            }
            let came_online = matches!(outcome, StatusOutcome::Applied { transition: Some(t), .. }
                if t.to == Presence::Online);
            if came_online || beat != l.presence.heartbeat {
                self.came_online.notify_one();
            }
            outcome
        };
        let mut rec = self
            .store
            .kiosk(kiosk)?
            .unwrap_or_else(|| KioskRecord::new(kiosk.clone()));
        let mut events = Vec::new();
        if let StatusOutcome::Applied {
            transition: Some(t),
            ..
        } = outcome
        {
            events.push(presence_event(kiosk, t, status.agent_version.as_deref()));
        }
        if status.state == Presence::Online {
            events.extend(printer_events(kiosk, &rec.printers(), &status.printers));
        }
        rec.presence = Some(status.state);
        rec.last_seen = Some(now);
        if status.state == Presence::Online {
            rec.agent_version.clone_from(&status.agent_version);
            rec.printers_json =
                serde_json::to_string(&status.printers).unwrap_or_else(|_| "{}".to_owned());
            rec.cash_json = status
                .cash
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok());
        }
        self.store.put_kiosk_with(&rec, &events)?;
        Ok(outcome)
    }

    /// Marks offline every online kiosk silent for three heartbeats at
    /// `now`; returns them with their transitions.
    ///
    /// # Errors
    /// [`StoreError`] when a kiosk record cannot be written (the kiosk is
    /// offline in memory all the same).
    pub fn expire_silent(&self, now: Instant) -> Result<Vec<(KioskId, Transition)>, StoreError> {
        let expired: Vec<(KioskId, Transition)> = self
            .write()
            .iter_mut()
            .filter_map(|(id, l)| {
                let t = l.presence.check_timeout(now, self.heartbeat)?;
                l.since = Some(Utc::now());
                Some((id.clone(), t))
            })
            .collect();
        for (kiosk, t) in &expired {
            if let Some(mut rec) = self.store.kiosk(kiosk)? {
                rec.presence = Some(Presence::Offline);
                self.store
                    .put_kiosk_with(&rec, &[presence_event(kiosk, *t, None)])?;
            }
        }
        Ok(expired)
    }

    /// The earliest time an online kiosk counts as silent.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.read()
            .values()
            .filter_map(|l| l.presence.deadline(self.heartbeat))
            .min()
    }

    /// Runs until `shutdown`: marks kiosks offline after three heartbeats
    /// of silence ([`Fleet::expire_silent`]), logging and counting each.
    pub async fn watch_heartbeats(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        loop {
            let deadline = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + self.heartbeat);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.came_online.notified() => continue,
                _ = tokio::time::sleep_until(deadline) => {}
            }
            match self.expire_silent(Instant::now()) {
                Ok(expired) => {
                    // Counted as soon as the view says offline, not after
                    // the flush below (which can take long on a busy disk).
                    for (_, t) in &expired {
                        metrics.presence_transition(*t);
                    }
                    // Their `kiosk.offline` events reach readers once durable.
                    if !expired.is_empty()
                        && let Err(e) = self.store.flush().await
                    {
                        tracing::error!(error = %e, "could not flush heartbeat timeouts");
                    }
                    for (kiosk, t) in expired {
                        tracing::info!(kiosk = %kiosk, to = "offline", reason = t.reason.as_str(),
                            "kiosk presence: no message for three heartbeats");
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not record a heartbeat timeout"),
            }
        }
    }

    /// One kiosk's view, or `None` when unknown.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub fn view(&self, kiosk: &KioskId) -> Result<Option<KioskView>, StoreError> {
        if !self.is_known(kiosk)? {
            return Ok(None);
        }
        let rec = self.store.kiosk(kiosk)?;
        Ok(Some(self.make_view(kiosk.clone(), rec)))
    }

    /// Every known kiosk, ordered by id.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub fn list(&self) -> Result<Vec<KioskView>, StoreError> {
        let mut records: BTreeMap<KioskId, Option<KioskRecord>> = BTreeMap::new();
        for rec in self.store.kiosks()? {
            records.insert(rec.kiosk_id.clone(), Some(rec));
        }
        let from_credentials = self
            .credentials
            .as_ref()
            .map(|c| c.kiosks())
            .unwrap_or_default();
        for id in self.configured.iter().cloned().chain(from_credentials) {
            records.entry(id).or_insert(None);
        }
        Ok(records
            .into_iter()
            .map(|(id, rec)| self.make_view(id, rec))
            .collect())
    }

    fn make_view(&self, kiosk: KioskId, rec: Option<KioskRecord>) -> KioskView {
        let live = self.read().get(&kiosk).cloned().unwrap_or_default();
        let presence = live
            .presence
            .presence
            .or(rec.as_ref().and_then(|r| r.presence));
        let status = match presence {
            Some(Presence::Online) => "online",
            Some(Presence::Offline) => "offline",
            None => "unknown",
        };
        let last_seen = match (live.last_seen, rec.as_ref().and_then(|r| r.last_seen)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        KioskView {
            pending_jobs: self.store.pending_count(&kiosk),
            status_since: live.since,
            broker: live.broker.clone(),
            status,
            last_seen,
            agent_version: rec.as_ref().and_then(|r| r.agent_version.clone()),
            printers: rec.as_ref().map(|r| r.printers()).unwrap_or_default(),
            cash: rec
                .as_ref()
                .and_then(|r| r.cash_json.as_deref())
                .and_then(|c| serde_json::from_str(c).ok()),
            kiosk_id: kiosk,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<KioskId, Live>> {
        self.live.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<KioskId, Live>> {
        self.live.write().unwrap_or_else(|e| e.into_inner())
    }
}
/// `kiosk.online` (with the agent's version) or `kiosk.offline` (with why)
/// for a presence transition of `kiosk`.
fn presence_event(
    kiosk: &KioskId,
    t: crate::presence::Transition,
    agent_version: Option<&str>,
) -> (FleetEventKind, serde_json::Value) {
    match t.to {
        Presence::Online => (
            FleetEventKind::KioskOnline,
            serde_json::json!({"kiosk_id": kiosk, "agent_version": agent_version}),
        ),
        Presence::Offline => (
            FleetEventKind::KioskOffline,
            serde_json::json!({"kiosk_id": kiosk, "reason": t.reason.as_str()}),
        ),
    }
}

/// `printer.status_changed` for each printer of `kiosk` whose readiness,
/// paper, cover or online state differs from what was stored (its error
/// text alone does not count), or that is new.
fn printer_events(
    kiosk: &KioskId,
    before: &BTreeMap<String, PrinterStatus>,
    now: &BTreeMap<String, PrinterStatus>,
) -> Vec<(FleetEventKind, serde_json::Value)> {
    let state = |p: &PrinterStatus| (p.ready, p.online, p.paper, p.cover_open);
    now.iter()
        .filter(|(name, p)| before.get(*name).map(state) != Some(state(p)))
        .map(|(name, p)| {
            (
                FleetEventKind::PrinterStatusChanged,
                serde_json::json!({
                    "kiosk_id": kiosk,
                    "printer": name,
                    "from": before.get(name),
                    "to": p,
                }),
            )
        })
        .collect()
}
