//! Which kiosks exist and whether they are online.
//!
//! A kiosk is known when it has a `kiosk` entry in the broker's credentials
//! file, is listed in the config's `kiosks`, or has ever published its
//! status. Presence comes from `kiosk/<id>/status`: the agent publishes
//! `online` (retained) on every connect and the broker publishes its last
//! will `offline` when the link dies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::Utc;
use kiosk_broker::CredentialStore;
use kiosk_schemas::{CashDeviceStatus, KioskId, KioskStatus, Presence, PrinterStatus, Timestamp};
use serde::Serialize;

use crate::store::{KioskRecord, Store, StoreError};

#[derive(Debug, Clone, Default)]
struct Live {
    presence: Option<Presence>,
    last_seen: Option<Timestamp>,
    /// `connected_at` of the last `online` status.
    connected_at: Option<Timestamp>,
}

/// The kiosk registry.
pub struct Fleet {
    store: Store,
    credentials: Option<Arc<CredentialStore>>,
    configured: HashSet<KioskId>,
    live: RwLock<HashMap<KioskId, Live>>,
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
}

impl Fleet {
    /// A registry over `store`, with kiosks from `credentials` and `configured`.
    pub fn new(
        store: Store,
        credentials: Option<Arc<CredentialStore>>,
        configured: impl IntoIterator<Item = KioskId>,
    ) -> Self {
        Fleet {
            store,
            credentials,
            configured: configured.into_iter().collect(),
            live: RwLock::default(),
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
            .is_some_and(|l| l.presence == Some(Presence::Online))
    }

    /// Number of kiosks whose last status said `online`.
    pub fn online_count(&self) -> usize {
        self.read()
            .values()
            .filter(|l| l.presence == Some(Presence::Online))
            .count()
    }

    /// Notes that a message from `kiosk` arrived now.
    pub fn seen(&self, kiosk: &KioskId) {
        self.write().entry(kiosk.clone()).or_default().last_seen = Some(Utc::now());
    }

    /// Records a status message. Returns true when it is the first `online`
    /// status of a connection (its `connected_at` differs from the last one
    /// seen, or is absent): the kiosk (re)connected and may have lost its
    /// broker session, so its unfinished jobs and its cash control should be
    /// sent again. Later statuses of the same connection (a printer or cash
    /// reading changed) return false.
    ///
    /// # Errors
    /// [`StoreError`] when the kiosk record cannot be written.
    pub fn apply_status(&self, kiosk: &KioskId, status: &KioskStatus) -> Result<bool, StoreError> {
        let now = Utc::now();
        let reconnected = {
            let mut live = self.write();
            let l = live.entry(kiosk.clone()).or_default();
            l.presence = Some(status.state);
            l.last_seen = Some(now);
            let online = status.state == Presence::Online;
            let new =
                online && (status.connected_at.is_none() || status.connected_at != l.connected_at);
            l.connected_at = if online { status.connected_at } else { None };
            new
        };
        let mut rec = self
            .store
            .kiosk(kiosk)?
            .unwrap_or_else(|| KioskRecord::new(kiosk.clone()));
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
        self.store.put_kiosk(&rec)?;
        Ok(reconnected)
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
        let presence = live.presence.or(rec.as_ref().and_then(|r| r.presence));
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
