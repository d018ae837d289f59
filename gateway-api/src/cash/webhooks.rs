//! Webhooks: session and credit events POSTed to the backend
//! (`webhooks.url`), signed, retried with backoff until a 2xx, and durable
//! across restarts.
//!
//! Each event is queued in the sled tree `webhooks` in the same transaction
//! as the change it reports, so no change is recorded without its event.
//! One task delivers them in order; a failing endpoint holds the queue (so
//! the backend always sees events in the order they happened) and is
//! retried after 1 s, 2 s, 4 s, ... up to `webhooks.max_backoff`, with
//! jitter. Delivery is at least once: a crash right after a successful POST
//! sends that event again, with the same `id` for the backend to
//! deduplicate.
//!
//! ```text
//! POST <webhooks.url>
//! Content-Type: application/json
//! X-Kiosk-Event: cash_session.paid
//! X-Kiosk-Delivery: 42
//! X-Kiosk-Signature: sha256=<hex HMAC-SHA256 of the body with webhooks.secret>
//!
//! {"id":"42","type":"cash_session.paid","created_at":"2026-11-21T10:00:03Z",
//!  "data":{"session":{...session as GET /v1/cash-sessions/{id} shows it...}}}
//! ```
//!
//! Events (`data.session` as `GET /v1/cash-sessions/{id}` shows it,
//! `data.credit` as the unassigned-credits listing shows a credit):
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

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use kiosk_schemas::Timestamp;
use kiosk_schemas::backoff::Backoff;
use kiosk_store::record;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use sled::transaction::{TransactionalTree, UnabortableTransactionError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::event::{CashChange, CashEventKind};
use super::{CreditRecord, CreditView, SessionRecord, SessionView};
use crate::config::WebhookConfig;
use crate::store::{Store, StoreError};

const HOOK_V: u8 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HookRecord {
    id: u64,
    event: String,
    body: String,
    attempts: u32,
    next_attempt_at: Timestamp,
}

/// An event ready to be queued inside a transaction.
#[derive(Debug, Clone)]
pub struct PreparedHook {
    key: [u8; 8],
    bytes: Vec<u8>,
}

/// The webhook queue; cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    db: sled::Db,
    tree: sled::Tree,
    enabled: bool,
    wake: Arc<Notify>,
}

fn body(id: u64, event: &str, data: serde_json::Value) -> String {
    json!({"id": id.to_string(), "type": event, "created_at": Utc::now(), "data": data}).to_string()
}

impl Webhooks {
    /// Opens the queue in `store`'s database. With `enabled` false (no
    /// `webhooks.url`) nothing is ever queued.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the tree cannot be opened.
    pub fn open(store: &Store, enabled: bool) -> Result<Self, StoreError> {
        Ok(Webhooks {
            db: store.db().clone(),
            tree: store.db().open_tree("webhooks")?,
            enabled,
            wake: Arc::new(Notify::new()),
        })
    }

    /// The sled tree, for transactions.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// A fresh, increasing event id. Call it outside transactions: sled's
    /// id generator takes the lock a transaction holds.
    ///
    /// # Errors
    /// [`StoreError::Sled`] on storage failure.
    pub fn reserve(&self) -> Result<u64, StoreError> {
        if !self.enabled {
            // Nothing will be queued under it.
            return Ok(0);
        }
        Ok(self.db.generate_id()?)
    }

    /// The record of an event; `data` is built only when webhooks are on.
    fn prepare(
        &self,
        id: u64,
        event: CashEventKind,
        data: impl FnOnce() -> serde_json::Value,
    ) -> Option<PreparedHook> {
        if !self.enabled {
            return None;
        }
        let rec = HookRecord {
            id,
            event: event.webhook_type().to_owned(),
            body: body(id, event.webhook_type(), data()),
            attempts: 0,
            next_attempt_at: Utc::now(),
        };
        let bytes = record::encode(HOOK_V, &rec).ok()?;
        Some(PreparedHook {
            key: id.to_be_bytes(),
            bytes,
        })
    }

    /// The delivery of `change` under id `id` (from
    /// [`Webhooks::reserve`]): `data` holds the `session` and, for a credit
    /// event, the `credit`; `None` when webhooks are off.
    pub fn record_change(&self, id: u64, change: &CashChange) -> Option<PreparedHook> {
        match (&change.session, &change.credit) {
            (Some(session), credit) => self.record(id, change.kind, session, credit.as_ref()),
            (None, Some(credit)) => self.record_credit(id, change.kind, credit),
            (None, None) => None,
        }
    }

    /// A session event (`credit` set for [`CashEventKind::Credit`],
    /// [`CashEventKind::LateCredit`] and [`CashEventKind::Assigned`]);
    /// `None` when webhooks are off.
    fn record(
        &self,
        id: u64,
        event: CashEventKind,
        session: &SessionRecord,
        credit: Option<&CreditRecord>,
    ) -> Option<PreparedHook> {
        self.prepare(id, event, || {
            let mut data = json!({"session": SessionView::from(session)});
            if let Some(c) = credit {
                data["credit"] = serde_json::to_value(CreditView::from(c)).unwrap_or_default();
            }
            data
        })
    }

    /// A credit event without a session ([`CashEventKind::Unassigned`],
    /// [`CashEventKind::Refunded`]); `None` when webhooks are off.
    fn record_credit(
        &self,
        id: u64,
        event: CashEventKind,
        credit: &CreditRecord,
    ) -> Option<PreparedHook> {
        self.prepare(id, event, || json!({"credit": CreditView::from(credit)}))
    }

    /// Queues `hook` in a transaction over [`Webhooks::tree`].
    ///
    /// # Errors
    /// The transaction's storage error.
    pub fn insert(
        tx: &TransactionalTree,
        hook: Option<&PreparedHook>,
    ) -> Result<(), UnabortableTransactionError> {
        if let Some(h) = hook {
            tx.insert(&h.key, h.bytes.as_slice())?;
        }
        Ok(())
    }

    /// The `type` of every queued delivery, oldest first.
    #[cfg(test)]
    pub(crate) fn queued_types(&self) -> Vec<String> {
        self.tree
            .iter()
            .values()
            .map(|v| {
                record::decode::<HookRecord>(HOOK_V, &v.unwrap())
                    .unwrap()
                    .event
            })
            .collect()
    }

    /// Tells the sender that events were queued (after the flush).
    pub fn wake(&self) {
        self.wake.notify_one();
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

/// Delivers queued events to `webhooks.url`.
pub struct Sender {
    hooks: Webhooks,
    config: WebhookConfig,
    url: String,
    client: reqwest::Client,
}

impl Sender {
    /// A sender for `config` (which has a `url`).
    pub fn new(hooks: Webhooks, config: WebhookConfig, url: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .unwrap_or_default();
        Sender {
            hooks,
            config,
            url,
            client,
        }
    }

    fn head(&self) -> Option<HookRecord> {
        let (k, v) = self.hooks.tree.first().ok()??;
        match record::decode::<HookRecord>(HOOK_V, &v) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "unreadable webhook record dropped");
                let _ = self.hooks.tree.remove(k);
                None
            }
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let Some(mut hook) = self.head() else {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.hooks.wake.notified() => continue,
                    // The tree may have been filled before we looked.
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            };
            let wait = (hook.next_attempt_at - Utc::now())
                .to_std()
                .unwrap_or_default();
            if !wait.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let sig = signature(self.config.secret.expose().as_bytes(), hook.body.as_bytes());
            let sent = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.client
                    .post(&self.url)
                    .header("content-type", "application/json")
                    .header("x-kiosk-event", &hook.event)
                    .header("x-kiosk-delivery", hook.id.to_string())
                    .header("x-kiosk-signature", sig)
                    .body(hook.body.clone())
                    .send() => r,
            };
            let failure = match sent {
                Ok(resp) if resp.status().is_success() => None,
                Ok(resp) => Some(format!("HTTP {}", resp.status())),
                Err(e) => Some(e.to_string()),
            };
            match failure {
                None => {
                    tracing::debug!(id = hook.id, event = hook.event, "webhook delivered");
                    if let Err(e) = self.hooks.tree.remove(hook.id.to_be_bytes()) {
                        tracing::error!(error = %e, "could not dequeue a delivered webhook");
                    }
                }
                Some(why) => {
                    hook.attempts += 1;
                    let mut backoff = Backoff::new(
                        Duration::from_secs(1).min(self.config.max_backoff),
                        self.config.max_backoff,
                    );
                    let mut delay = Duration::ZERO;
                    for _ in 0..hook.attempts {
                        delay = backoff.next_delay(rand::thread_rng().r#gen());
                    }
                    hook.next_attempt_at = Utc::now()
                        + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                    tracing::warn!(
                        id = hook.id,
                        event = hook.event,
                        attempts = hook.attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        error = why,
                        "webhook delivery failed"
                    );
                    if let Ok(bytes) = record::encode(HOOK_V, &hook) {
                        let _ = self.hooks.tree.insert(hook.id.to_be_bytes(), bytes);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
