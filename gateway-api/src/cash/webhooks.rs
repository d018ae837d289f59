//! Webhooks: the events of the log ([`crate::events`]) whose type
//! `webhooks.events` selects (default `["cash_session.*",
//! "cash_credit.*"]`), POSTed to the backend (`webhooks.url`), signed,
//! retried with backoff until a 2xx, and durable across restarts.
//!
//! Each event is in the log from the transaction of the change it reports,
//! so no change is recorded without its event. One task delivers them in
//! order from a durable cursor (tree `webhook_cursor`); a failing endpoint
//! holds the queue (so the backend always sees events in the order they
//! happened) and is retried after 1 s, 2 s, 4 s, ... up to
//! `webhooks.max_backoff`, with jitter. Delivery is at least once: a crash
//! right after a successful POST sends that event again, with the same `id`
//! for the backend to deduplicate. The log keeps an event the cursor has
//! not passed, whatever `events.retention` says.
//!
//! ```text
//! POST <webhooks.url>
//! Content-Type: application/json
//! X-Kiosk-Event: cash_session.paid
//! X-Kiosk-Delivery: 42
//! X-Kiosk-Signature: sha256=<hex HMAC-SHA256 of the body with webhooks.secret>
//!
//! {"id":"42","type":"cash_session.paid","created_at":"2026-11-21T10:00:03Z",
//!  "kiosk_id":"k1","data":{"session":{...session as GET /v1/cash-sessions/{id} shows it...}}}
//! ```
//!
//! Cash events (`data.session` as `GET /v1/cash-sessions/{id}` shows it,
//! `data.credit` as the unassigned-credits listing shows a credit; the
//! fleet's other events are listed in [`crate::events`]):
//!
//! | type | when | data |
//! |---|---|---|
//! | `cash_session.opened` | opened | `session` |
//! | `cash_session.credit` | a credit counted towards `amount_due` | `session`, `credit` |
//! | `cash_session.paid` | `amount_inserted` reached `amount_due` (not final yet) | `session` |
//! | `cash_session.late_credit` | a credit for a session no longer open: more `change_due` or `refund_due` | `session`, `credit` |
//! | `cash_session.cancelling` | the cancel was accepted | `session` |
//! | `cash_session.cancelled` | the kiosk confirmed and every credit arrived: `refund_due` final | `session` |
//! | `cash_session.settled` | a paid session became final: `change_due` final | `session` |
//! | `cash_credit.unassigned` | a credit no session can take | `credit` |
//! | `cash_credit.assigned` | an operator assigned an unassigned credit | `credit`, `session` |
//! | `cash_credit.refunded` | an operator marked one refunded | `credit` |

use std::time::Duration;

use hmac::{Hmac, Mac};
use kiosk_schemas::backoff::Backoff;
use kiosk_store::{StoreError, keys, record};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookConfig;
use crate::events::{self, Event, EventLog};

/// Version of the webhook queue records of older versions.
const HOOK_V: u8 = 1;
/// Key of the cursor in the tree `webhook_cursor`.
const CURSOR: &[u8] = b"cursor";

/// A queued delivery of an older version (tree `webhooks`); converted
/// into the event log when the store opens.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HookRecord {
    id: u64,
    event: String,
    body: String,
    attempts: u32,
    next_attempt_at: kiosk_schemas::Timestamp,
}

/// The highest id in the webhook queue of older versions (`0`: none): the
/// event log's ids go on after it.
///
/// # Errors
/// [`StoreError::Sled`] when the tree cannot be read.
pub fn old_queue_last_id(db: &sled::Db) -> Result<u64, StoreError> {
    Ok(db
        .open_tree("webhooks")?
        .last()?
        .map_or(0, |(k, _)| keys::read_u64(&k)))
}

/// Where delivery stands: the id of the last event delivered or passed
/// over; cheap to clone.
#[derive(Debug, Clone)]
pub struct Cursor {
    tree: sled::Tree,
}

impl Cursor {
    /// Opens the cursor in `db`, moving what the webhook queue of older
    /// versions still holds into `log` (same ids, delivered first). A new
    /// cursor starts after the last durable event: webhooks configured
    /// later do not replay the past.
    ///
    /// # Errors
    /// [`StoreError`] when the trees cannot be read or written.
    pub fn open(db: &sled::Db, log: &EventLog) -> Result<Self, StoreError> {
        let tree = db.open_tree("webhook_cursor")?;
        let old = db.open_tree("webhooks")?;
        let mut first_old = None;
        for item in old.iter() {
            let (k, v) = item?;
            match record::decode::<HookRecord>(HOOK_V, &v) {
                Ok(hook) => {
                    let body: serde_json::Value =
                        serde_json::from_str(&hook.body).unwrap_or_default();
                    let created_at = body["created_at"]
                        .as_str()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(hook.next_attempt_at);
                    log.import(&Event {
                        id: hook.id,
                        kind: hook.event,
                        created_at,
                        kiosk_id: None,
                        data: body["data"].clone(),
                    })?;
                    first_old.get_or_insert(hook.id);
                }
                Err(e) => tracing::error!(error = %e, "unreadable queued webhook dropped"),
            }
            old.remove(k)?;
        }
        let cursor = Cursor { tree };
        match (cursor.get()?, first_old) {
            (None, Some(first)) => cursor.set(first - 1)?,
            (None, None) => cursor.set(log.durable())?,
            (Some(at), Some(first)) if first <= at => cursor.set(first - 1)?,
            (Some(_), _) => {}
        }
        Ok(cursor)
    }

    /// The id of the last event delivered or passed over.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on storage failure.
    pub fn get(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.tree.get(CURSOR)?.map(|v| keys::read_u64(&v)))
    }

    fn set(&self, id: u64) -> Result<(), StoreError> {
        self.tree.insert(CURSOR, &keys::be_u64(id)[..])?;
        Ok(())
    }
}

type HmacSha256 = Hmac<Sha256>;

/// `sha256=<hex>`: the signature of `body` with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| {
        // HMAC takes keys of any length.
        unreachable!("HMAC accepts any key length")
    });
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", hex::encode(digest))
}

/// Delivers the selected events of the log to `webhooks.url`.
pub struct Sender {
    log: EventLog,
    cursor: Cursor,
    config: WebhookConfig,
    url: String,
    client: reqwest::Client,
}

impl Sender {
    /// A sender for `config` (which has a `url`).
    pub fn new(log: EventLog, cursor: Cursor, config: WebhookConfig, url: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .unwrap_or_default();
        Sender {
            log,
            cursor,
            config,
            url,
            client,
        }
    }

    /// The next event to deliver, moving the cursor past those
    /// `webhooks.events` does not select; `None` when there is none yet.
    fn next(&self) -> Result<Option<Event>, StoreError> {
        let at = self.cursor.get()?.unwrap_or(0);
        let patterns = &self.config.events;
        let (page, through) = self
            .log
            .page(at, 1, |kind, _| events::matches(patterns, kind))?;
        if let Some(event) = page.into_iter().next() {
            return Ok(Some(event));
        }
        // Nothing selected up to `through`: pass over it with one write.
        if through > at {
            self.cursor.set(through)?;
        }
        Ok(None)
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut durable = self.log.watch();
        let mut attempts: u32 = 0;
        loop {
            let event = match self.next() {
                Ok(Some(e)) => e,
                Ok(None) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = durable.changed() => continue,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the event log; webhooks wait");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    }
                }
            };
            let body = event.to_json();
            let sig = signature(self.config.secret.expose().as_bytes(), body.as_bytes());
            let sent = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.client
                    .post(&self.url)
                    .header("content-type", "application/json")
                    .header("x-kiosk-event", &event.kind)
                    .header("x-kiosk-delivery", event.id.to_string())
                    .header("x-kiosk-signature", sig)
                    .body(body)
                    .send() => r,
            };
            let failure = match sent {
                Ok(resp) if resp.status().is_success() => None,
                Ok(resp) => Some(format!("HTTP {}", resp.status())),
                Err(e) => Some(e.to_string()),
            };
            match failure {
                None => {
                    tracing::debug!(id = event.id, event = event.kind, "webhook delivered");
                    attempts = 0;
                    if let Err(e) = self.cursor.set(event.id) {
                        tracing::error!(error = %e, "could not move the webhook cursor");
                    }
                }
                Some(why) => {
                    attempts += 1;
                    let mut backoff = Backoff::new(
                        Duration::from_secs(1).min(self.config.max_backoff),
                        self.config.max_backoff,
                    );
                    let mut delay = Duration::ZERO;
                    for _ in 0..attempts {
                        delay = backoff.next_delay(rand::thread_rng().r#gen());
                    }
                    tracing::warn!(
                        id = event.id,
                        event = event.kind,
                        attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        error = why,
                        "webhook delivery failed"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store written by a version with a webhook queue: its undelivered
    /// hooks are delivered first, with their ids, and new events come after.
    #[test]
    fn the_old_queue_moves_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let old = db.open_tree("webhooks").unwrap();
            for id in [5u64, 7] {
                let hook = HookRecord {
                    id,
                    event: "cash_session.paid".into(),
                    body: serde_json::json!({"id": id.to_string(), "type": "cash_session.paid",
                        "created_at": "2026-11-21T10:00:03Z", "data": {"session": {"n": id}}})
                    .to_string(),
                    attempts: 3,
                    next_attempt_at: chrono::Utc::now(),
                };
                old.insert(keys::be_u64(id), record::encode(HOOK_V, &hook).unwrap())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        let store = crate::store::Store::open(dir.path()).unwrap();
        let cursor = Cursor::open(store.db(), store.events()).unwrap();
        assert_eq!(cursor.get().unwrap(), Some(4));
        let log = store.events();
        let got = log.after(4, 10, |_, _| true).unwrap();
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [5, 7]);
        assert_eq!(got[1].data["session"]["n"], 7);
        assert_eq!(got[0].created_at.to_rfc3339(), "2026-11-21T10:00:03+00:00");
        assert!(store.db().open_tree("webhooks").unwrap().is_empty());
        assert!(log.taken() >= 7, "new ids come after the old ones");
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
