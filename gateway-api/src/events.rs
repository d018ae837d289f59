//! The event log: one record for everything that happens in the fleet, in
//! one vocabulary, written in the same sled transaction as the change it
//! reports. Webhooks ([`crate::cash::webhooks`]) and the event stream
//! (`GET /v1/events`) read it in order.
//!
//! | type | when | `data` |
//! |---|---|---|
//! | `print_job.state_changed` | a job moved from one state to another | `job_id`, `kiosk_id`, `printer`, `from`, `to`, `reason` |
//! | `kiosk.online` | a kiosk came online | `kiosk_id`, `agent_version` |
//! | `kiosk.offline` | a kiosk went offline (its will, a clean stop, or three heartbeats of silence) | `kiosk_id`, `reason` |
//! | `printer.status_changed` | a printer's reported status changed | `kiosk_id`, `printer`, `from`, `to` (as `GET /v1/kiosks/{id}` shows a printer) |
//! | `cash_session.*`, `cash_credit.*` | see [`crate::cash::webhooks`] | `session`, `credit` |
//!
//! Each event is `{"id": "42", "type": ..., "created_at": RFC 3339,
//! "kiosk_id": ..., "data": {...}}`. Ids increase in the order the changes
//! committed: they are taken inside the writing transaction, and sled runs
//! transactions one at a time (its process-wide lock), so a reader that
//! resumes after id `n` misses nothing. Ids may skip numbers (a retried
//! transaction), never repeat. Readers see an event only once it is
//! durable ([`EventLog::durable`]): an event the gateway could lose in a
//! crash is never sent, so an id is never reused for another event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use kiosk_schemas::{KioskId, Timestamp};
use kiosk_store::{StoreError, keys, record};
use serde::{Deserialize, Serialize};
use sled::transaction::{TransactionalTree, UnabortableTransactionError};
use tokio::sync::watch;

/// Version of [`EventRecord`].
const EVENT_V: u8 = 1;

/// The type of an event that is not a cash event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FleetEventKind {
    /// `print_job.state_changed`
    PrintJobStateChanged,
    /// `kiosk.online`
    KioskOnline,
    /// `kiosk.offline`
    KioskOffline,
    /// `printer.status_changed`
    PrinterStatusChanged,
}

impl FleetEventKind {
    /// The event's `type`.
    pub fn name(self) -> &'static str {
        match self {
            FleetEventKind::PrintJobStateChanged => "print_job.state_changed",
            FleetEventKind::KioskOnline => "kiosk.online",
            FleetEventKind::KioskOffline => "kiosk.offline",
            FleetEventKind::PrinterStatusChanged => "printer.status_changed",
        }
    }
}

/// An event as stored: postcard behind a version byte; `data` is JSON
/// text (postcard cannot carry a JSON value).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventRecord {
    id: u64,
    kind: String,
    created_at: Timestamp,
    kiosk_id: Option<String>,
    data: String,
}

/// One event, as readers get it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Durable, increasing id.
    pub id: u64,
    /// `print_job.state_changed`, `kiosk.online`, `cash_session.paid`, ...
    pub kind: String,
    /// When it happened (the gateway's clock).
    pub created_at: Timestamp,
    /// The kiosk it concerns, if any.
    pub kiosk_id: Option<String>,
    /// What happened (see the module docs per type).
    pub data: serde_json::Value,
}

impl Event {
    /// `{"id": "<id>", "type", "created_at", "kiosk_id", "data"}`: the body
    /// of a webhook and the `data:` of an event-stream message.
    pub fn to_json(&self) -> String {
        let mut body = serde_json::json!({
            "id": self.id.to_string(),
            "type": self.kind,
            "created_at": self.created_at,
            "data": self.data,
        });
        if let Some(k) = &self.kiosk_id {
            body["kiosk_id"] = serde_json::Value::String(k.clone());
        }
        body.to_string()
    }
}

/// The log; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    tree: sled::Tree,
    /// The last id taken.
    last: Arc<AtomicU64>,
    /// Every event up to this id is durable.
    durable: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("last", &self.last.load(Ordering::Relaxed))
            .finish()
    }
}

impl EventLog {
    /// Opens the log in `db` (tree `events`). Ids go on after the last
    /// stored one and after `at_least` (ids handed out before by another
    /// scheme, such as the webhook queue of older versions).
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the tree cannot be read.
    pub fn open(db: &sled::Db, at_least: u64) -> Result<Self, StoreError> {
        let tree = db.open_tree("events")?;
        let last = match tree.last()? {
            Some((k, _)) => keys::read_u64(&k),
            None => 0,
        }
        .max(at_least);
        Ok(EventLog {
            tree,
            last: Arc::new(AtomicU64::new(last)),
            // Everything stored when the log opens was flushed (or is what
            // sled recovered, which is all there is).
            durable: Arc::new(watch::Sender::new(last)),
        })
    }

    /// The sled tree, for transactions.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Appends an event inside a transaction over [`EventLog::tree`];
    /// returns its id. Call it inside the closure: the id is taken there,
    /// in commit order.
    ///
    /// # Errors
    /// The transaction's storage error.
    pub fn append(
        &self,
        tx: &TransactionalTree,
        kind: &str,
        kiosk: Option<&KioskId>,
        data: serde_json::Value,
    ) -> Result<u64, UnabortableTransactionError> {
        let id = self.last.fetch_add(1, Ordering::SeqCst) + 1;
        let rec = EventRecord {
            id,
            kind: kind.to_owned(),
            created_at: Utc::now(),
            kiosk_id: kiosk.map(|k| k.as_str().to_owned()),
            data: data.to_string(),
        };
        // Encoding a struct of strings and numbers cannot fail; should it,
        // the event is dropped rather than the change refused.
        match record::encode(EVENT_V, &rec) {
            Ok(bytes) => {
                tx.insert(&keys::be_u64(id)[..], bytes)?;
            }
            Err(e) => tracing::error!(id, kind, error = %e, "event not recorded"),
        }
        Ok(id)
    }

    /// Stores an event of an older version as it was (same id), outside a
    /// transaction; for converting a store when it opens.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn import(&self, event: &Event) -> Result<(), StoreError> {
        let rec = EventRecord {
            id: event.id,
            kind: event.kind.clone(),
            created_at: event.created_at,
            kiosk_id: event.kiosk_id.clone(),
            data: event.data.to_string(),
        };
        let bytes = record::encode_keyed(EVENT_V, "event", &rec)?;
        self.tree.insert(&keys::be_u64(event.id)[..], bytes)?;
        self.last.fetch_max(event.id, Ordering::SeqCst);
        self.durable.send_modify(|d| *d = (*d).max(event.id));
        Ok(())
    }

    /// The last id taken so far (read it before a flush: once the flush is
    /// done, every event up to it is durable).
    pub fn taken(&self) -> u64 {
        self.last.load(Ordering::SeqCst)
    }

    /// Every event up to `id` is durable now (after a flush that started
    /// after `id` was [`EventLog::taken`]); wakes the readers.
    pub fn mark_durable(&self, id: u64) {
        self.durable.send_if_modified(|d| {
            let moved = id > *d;
            *d = (*d).max(id);
            moved
        });
    }

    /// Every event up to this id is durable.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Changes of [`EventLog::durable`], for readers waiting for more.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Up to `limit` durable events after id `after`, oldest first, whose
    /// type and kiosk `wanted` accepts. Unreadable records are skipped (and
    /// logged).
    ///
    /// # Errors
    /// [`StoreError::Sled`] on storage failure.
    pub fn after(
        &self,
        after: u64,
        limit: usize,
        wanted: impl Fn(&str, Option<&str>) -> bool,
    ) -> Result<Vec<Event>, StoreError> {
        Ok(self.page(after, limit, wanted)?.0)
    }

    /// Like [`EventLog::after`], with the id up to which the log was read
    /// (the last event returned, or the last durable id when fewer than
    /// `limit` matched): a reader resumes from there.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on storage failure.
    pub fn page(
        &self,
        after: u64,
        limit: usize,
        wanted: impl Fn(&str, Option<&str>) -> bool,
    ) -> Result<(Vec<Event>, u64), StoreError> {
        let durable = self.durable();
        let mut out = Vec::new();
        if after >= durable {
            return Ok((out, after));
        }
        let range = keys::be_u64(after.saturating_add(1))..=keys::be_u64(durable);
        for item in self.tree.range(range) {
            let (k, v) = item?;
            let rec = match record::decode::<EventRecord>(EVENT_V, &v) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(id = keys::read_u64(&k), error = %e, "unreadable event skipped");
                    continue;
                }
            };
            if !wanted(&rec.kind, rec.kiosk_id.as_deref()) {
                continue;
            }
            out.push(Event {
                id: rec.id,
                kind: rec.kind,
                created_at: rec.created_at,
                kiosk_id: rec.kiosk_id,
                data: serde_json::from_str(&rec.data).unwrap_or(serde_json::Value::Null),
            });
            if out.len() >= limit {
                return Ok((out, rec.id));
            }
        }
        Ok((out, durable))
    }

    /// The oldest id still stored, if any.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on storage failure.
    pub fn first_id(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.tree.first()?.map(|(k, _)| keys::read_u64(&k)))
    }

    /// Deletes events older than `before`, but none after id `keep_after`
    /// (what the webhook sender has not delivered yet). Returns how many.
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    pub fn purge(&self, before: Timestamp, keep_after: u64) -> Result<usize, StoreError> {
        let mut purged = 0;
        for item in self.tree.iter() {
            let (k, v) = item?;
            if keys::read_u64(&k) > keep_after {
                break;
            }
            let old =
                record::decode::<EventRecord>(EVENT_V, &v).map_or(true, |r| r.created_at < before);
            if !old {
                break;
            }
            self.tree.remove(k)?;
            purged += 1;
        }
        Ok(purged)
    }
}

/// How often [`purge_old`] deletes events past `events.retention`.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Runs until `shutdown`: every hour (and at start) deletes events older
/// than `retention`, keeping every event after `undelivered()` (the
/// webhook cursor; `u64::MAX` without webhooks).
pub async fn purge_old(
    log: EventLog,
    retention: std::time::Duration,
    undelivered: impl Fn() -> u64,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let before = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| Utc::now().checked_sub_signed(r));
        if let Some(before) = before {
            match log.purge(before, undelivered()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "purged events past events.retention"),
                Err(e) => tracing::error!(error = %e, "event purge failed"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PURGE_EVERY) => {}
        }
    }
}

/// Every event type there is (the cash ones and the others).
pub fn all_kinds() -> impl Iterator<Item = &'static str> {
    [
        FleetEventKind::PrintJobStateChanged,
        FleetEventKind::KioskOnline,
        FleetEventKind::KioskOffline,
        FleetEventKind::PrinterStatusChanged,
    ]
    .into_iter()
    .map(FleetEventKind::name)
    .chain(
        crate::cash::event::CashEventKind::ALL
            .into_iter()
            .map(|k| k.webhook_type()),
    )
}

/// Whether `pattern` can match something: `*`, a known type, or a known
/// family followed by `.*`.
pub fn is_pattern(pattern: &str) -> bool {
    let patterns = [pattern.to_owned()];
    pattern == "*" || all_kinds().any(|k| matches(&patterns, k))
}

/// Whether `kind` matches one of `patterns`: a type (`kiosk.online`), a
/// family (`print_job.*`) or everything (`*`).
pub fn matches(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == kind
            || p.strip_suffix(".*")
                .is_some_and(|family| kind.split_once('.').is_some_and(|(f, _)| f == family))
    })
}

#[cfg(test)]
mod tests {
    use sled::Transactional as _;

    use super::*;

    fn append(log: &EventLog, kind: &str) -> u64 {
        (log.tree(),)
            .transaction(|(t,)| Ok(log.append(t, kind, None, serde_json::json!({"n": 1}))?))
            .map_err(StoreError::from)
            .unwrap()
    }

    #[test]
    fn readers_see_durable_events_in_order_and_ids_go_on_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = EventLog::open(&db, 0).unwrap();
        let a = append(&log, "kiosk.online");
        let b = append(&log, "print_job.state_changed");
        assert!(a < b);
        let all = |_: &str, _: Option<&str>| true;
        assert!(log.after(0, 10, all).unwrap().is_empty(), "not durable yet");
        log.mark_durable(log.taken());
        let got: Vec<_> = log
            .after(0, 10, all)
            .unwrap()
            .into_iter()
            .map(|e| (e.id, e.kind))
            .collect();
        assert_eq!(
            got,
            [
                (a, "kiosk.online".to_owned()),
                (b, "print_job.state_changed".to_owned())
            ]
        );
        assert_eq!(log.after(a, 10, all).unwrap()[0].id, b);
        let only_jobs = log
            .after(0, 10, |k, _| k.starts_with("print_job."))
            .unwrap();
        assert_eq!(only_jobs.len(), 1);
        drop(log);
        let log = EventLog::open(&db, 0).unwrap();
        assert_eq!(log.durable(), b);
        assert!(append(&log, "kiosk.offline") > b);
        let log = EventLog::open(&db, 1000).unwrap();
        assert!(append(&log, "kiosk.offline") > 1000);
    }

    #[test]
    fn purge_keeps_what_is_recent_or_undelivered() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = EventLog::open(&db, 0).unwrap();
        let ids: Vec<u64> = (0..4).map(|_| append(&log, "kiosk.online")).collect();
        let later = Utc::now() + chrono::Duration::seconds(1);
        assert_eq!(
            log.purge(later, ids[1]).unwrap(),
            2,
            "only up to the undelivered"
        );
        assert_eq!(log.first_id().unwrap(), Some(ids[2]));
        let earlier = Utc::now() - chrono::Duration::hours(1);
        assert_eq!(log.purge(earlier, u64::MAX).unwrap(), 0, "all recent");
    }

    #[test]
    fn patterns_match_a_type_a_family_or_all() {
        let p = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches(&p(&["print_job.*"]), "print_job.state_changed"));
        assert!(!matches(&p(&["print_job.*"]), "print_jobs.x"));
        assert!(matches(&p(&["kiosk.online"]), "kiosk.online"));
        assert!(!matches(&p(&["kiosk.online"]), "kiosk.offline"));
        assert!(matches(&p(&["*"]), "cash_credit.refunded"));
        assert!(!matches(&p(&[]), "kiosk.online"));
    }
}
