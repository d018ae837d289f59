//! Handling what kiosks and backends publish: statuses, job results, jobs
//! published straight to `kiosk/<id>/print`, and cash credits.
//!
//! Messages are handled in batches: apply each to the store, flush once,
//! then acknowledge them all (group commit). A message is acknowledged only
//! after its effect is durable; one whose handling failed is not
//! acknowledged, so the broker delivers it again. Malformed messages are
//! logged, counted and acknowledged (redelivering them cannot help); the
//! warnings about them are rate-limited per kiosk and reason
//! ([`WarnLimit`]: one per [`WARN_WINDOW`], the next saying how many were
//! suppressed), so one broken kiosk cannot flood the log. The metrics
//! count every one.
//!
//! Cash credits (DESIGN.md, "Cash credits", step 2): each is stored and
//! applied exactly once ([`crate::cash::store::CashStore::apply_credit`]);
//! after the flush the gateway publishes `cash/ack` with the outbox's
//! contiguous watermark, the kiosk's controls when a session became paid,
//! the live events, and wakes the webhook sender.
//!
//! Cash states (`kiosk/<id>/cash/state`, step 5): a `CashState` with
//! `enabled: false` confirms the end of acceptance for its session with
//! `last_seq`; it is stored on the session
//! ([`crate::cash::store::CashStore::confirm`]). After every batch with
//! credits or confirmations, the kiosk's sessions that now hold every
//! credit up to their confirmation become final
//! ([`crate::cash::store::CashStore::settle_ready`]), in the same flush.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiosk_mqtt::{AckOutcome, Incoming, Publish};
use kiosk_schemas::log_limit::SharedLogLimiter;
use kiosk_schemas::wire::{self, WireError};
use kiosk_schemas::{
    CashAck, CashEvent, CashState, JobResult, KioskId, KioskStatus, PrintJob, Topic, TopicKind, V1,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cash::live::{Live, LiveEvent};
use crate::cash::resend::{self, send_controls};
use crate::cash::store::{CashStore, ConfirmOutcome};
use crate::cash::{CreditEffect, SessionState};
use crate::echo::Echoes;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::mqtt::MqttLink;
use crate::presence::StatusOutcome;
use crate::store::{ByteCounts, MqttJobOutcome, ReportOutcome, Source, Store, StoreError};

/// Most messages applied before one flush.
const BATCH: usize = 256;
/// Largest status or result payload accepted, in bytes.
const SMALL_MESSAGE_LIMIT: usize = 64 * 1024;

/// At most one warning about unusable messages per kiosk and reason in
/// this window.
pub const WARN_WINDOW: Duration = Duration::from_secs(60);
/// (kiosk, reason) pairs the warning limit remembers.
const WARN_KEYS: usize = 4096;

/// The rate limit of warnings about unusable messages, per kiosk and reason.
pub struct WarnLimit(SharedLogLimiter<(KioskId, &'static str)>);

impl Default for WarnLimit {
    fn default() -> Self {
        WarnLimit(SharedLogLimiter::new(WARN_WINDOW, WARN_KEYS))
    }
}

impl WarnLimit {
    /// `Some(suppressed)` when a warning for `(kiosk, reason)` should be
    /// logged now, `None` when it is suppressed.
    pub fn check(&self, kiosk: &KioskId, reason: &'static str) -> Option<u64> {
        self.0
            .check((kiosk.clone(), reason), std::time::Instant::now())
    }
}

/// The ingest task's state.
pub struct Ingest {
    /// Durable store.
    pub store: Store,
    /// Kiosk registry.
    pub fleet: Arc<Fleet>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// For acknowledgements.
    pub link: MqttLink,
    /// Kiosks that reported `online`, for the delivery task.
    pub online: mpsc::Sender<KioskId>,
    /// Largest print job payload accepted, in bytes.
    pub max_job_bytes: usize,
    /// Cash sessions and credits.
    pub cash: CashStore,
    /// Live session events.
    pub live: Arc<Live>,
    /// Rate limit of the warnings about unusable messages.
    pub warnings: WarnLimit,
    /// The jobs delivery published, whose echoes need no handling.
    pub echoes: Arc<Echoes>,
}

/// What to do once a batch is flushed.
#[derive(Default)]
struct After {
    /// Kiosks that reported `online` on a new connection.
    online: Vec<KioskId>,
    /// Of those, the kiosks with an acceptor: send their control.
    cash_online: Vec<KioskId>,
    /// Highest contiguous seq per (kiosk, outbox) to acknowledge.
    cash_acks: BTreeMap<(KioskId, String), u64>,
    /// Kiosks whose sessions changed so that they need their controls
    /// again (a session became paid; the kiosk accepts for a session that
    /// should be disabled).
    controls: Vec<KioskId>,
    /// Kiosks with new credits or confirmations: settle what is ready.
    settle: BTreeSet<KioskId>,
    /// Live events per session.
    live: Vec<(String, LiveEvent)>,
    /// Something may have been written to the store: flush before
    /// acknowledging. A batch of only echoes of our own jobs, unusable
    /// messages and duplicates needs no flush.
    stored: bool,
}

impl Ingest {
    /// Runs until `shutdown` or until the MQTT session ends.
    pub async fn run(self, mut rx: mpsc::Receiver<Incoming>, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut batch = Vec::with_capacity(BATCH);
        while kiosk_mqtt::next_batch(&mut rx, BATCH, &mut batch, &shutdown).await {
            // Store work off the runtime (see `kiosk_store::unblocked`).
            let (worker, messages) = (this.clone(), std::mem::take(&mut batch));
            let (acks, after) = kiosk_store::unblocked(move || worker.apply(messages)).await;
            this.finish_batch(acks, after).await;
        }
    }

    /// Applies a batch to the store (not flushed): the messages to
    /// acknowledge once it is durable, and what to do then.
    fn apply(&self, batch: Vec<Incoming>) -> (Vec<Incoming>, After) {
        let mut acks = Vec::with_capacity(batch.len());
        let mut after = After::default();
        for m in batch {
            match self.handle(&m.publish, &mut after) {
                Ok(()) => acks.push(m),
                Err(e) => {
                    // rumqttd then sees the next acknowledgement out of
                    // order and drops the connection; on reconnect it
                    // redelivers this message.
                    tracing::error!(topic = %m.publish.topic, error = %e, "not acknowledged; broker will redeliver");
                }
            }
        }
        for kiosk in std::mem::take(&mut after.settle) {
            let events = resend::settle(&self.cash, &self.metrics, &kiosk);
            after.live.extend(events);
        }
        (acks, after)
    }

    /// Flushes what [`Ingest::apply`] wrote, then acknowledges and publishes.
    async fn finish_batch(&self, acks: Vec<Incoming>, after: After) {
        if after.stored
            && let Err(e) = self.store.flush().await
        {
            tracing::error!(error = %e, "store flush failed; nothing acknowledged");
            return;
        }
        for m in &acks {
            match self.link.ack(m).await {
                AckOutcome::Queued => {}
                AckOutcome::EarlierConnection => tracing::debug!(topic = %m.publish.topic,
                    "not acknowledging a message from an earlier connection"),
                AckOutcome::SessionEnded => tracing::debug!(topic = %m.publish.topic,
                    "ack not enqueued: session ended"),
            }
        }
        for ((kiosk, outbox), up_to_seq) in after.cash_acks {
            let ack = CashAck {
                v: V1,
                outbox,
                up_to_seq,
            };
            if let Err(e) =
                self.link
                    .try_publish(&Topic::cash_ack(&kiosk), false, wire::encode(&ack))
            {
                // The kiosk sends the credits again and gets a new ack.
                tracing::warn!(kiosk = %kiosk, error = %e, "cash ack not published");
            }
        }
        let mut sent = BTreeSet::new();
        for kiosk in after.controls.iter().chain(&after.cash_online) {
            if sent.insert(kiosk) {
                send_controls(&self.cash, &self.link, kiosk, false);
            }
        }
        for (session_id, event) in after.live {
            self.live.publish(&session_id, event);
        }
        for kiosk in after.online {
            if self.online.try_send(kiosk).is_err() {
                tracing::debug!("delivery busy; the timer will resend");
            }
        }
    }

    fn reject(&self, kiosk: &KioskId, topic: &str, reason: &'static str, err: &WireError) {
        self.metrics.rejected(reason);
        if let Some(suppressed) = self.warnings.check(kiosk, reason) {
            tracing::warn!(kiosk = %kiosk, topic, reason, error = %err, suppressed,
                "ignoring unusable MQTT message");
        }
    }

    fn handle(&self, p: &Publish, after: &mut After) -> Result<(), StoreError> {
        let Some(topic) = Topic::parse(&p.topic) else {
            self.metrics.rejected("unknown_topic");
            tracing::debug!(topic = %p.topic, "ignoring message on a foreign topic");
            return Ok(());
        };
        let kiosk = topic.kiosk();
        if topic.kind() == TopicKind::Print && self.echoes.take(&p.payload) {
            // Our own publish: stored and flushed before it was sent.
            self.metrics.echo();
            return Ok(());
        }
        // Conservative: every branch below that reaches the store may write.
        after.stored = true;
        match topic.kind() {
            TopicKind::Status => {
                if p.payload.is_empty() {
                    // A cleared retained status: nothing to learn.
                    return Ok(());
                }
                match wire::decode::<KioskStatus>(&p.payload, SMALL_MESSAGE_LIMIT) {
                    Ok(status) => match self.fleet.apply_status(kiosk, &status)? {
                        StatusOutcome::StaleWill => {
                            self.metrics.stale_will();
                            tracing::info!(kiosk = %kiosk, connection_id = status.connection_id.as_deref().unwrap_or(""),
                                "ignoring the offline of an earlier connection: the kiosk has reconnected");
                        }
                        StatusOutcome::Applied {
                            transition,
                            reconnected,
                        } => {
                            if reconnected {
                                after.online.push(kiosk.clone());
                                if status.cash.is_some() {
                                    after.cash_online.push(kiosk.clone());
                                }
                            }
                            let connection_id = status.connection_id.as_deref().unwrap_or("");
                            match transition {
                                Some(t) => {
                                    self.metrics.presence_transition(t);
                                    tracing::info!(kiosk = %kiosk, to = ?t.to, reason = t.reason.as_str(),
                                        connection_id, "kiosk presence");
                                }
                                None => tracing::debug!(kiosk = %kiosk, state = ?status.state,
                                    connection_id, reconnected, "kiosk status"),
                            }
                        }
                    },
                    Err(e) => self.reject(kiosk, &p.topic, reason(&e), &e),
                }
            }
            TopicKind::PrintResult => {
                self.fleet.seen(kiosk);
                match wire::decode::<JobResult>(&p.payload, SMALL_MESSAGE_LIMIT) {
                    Ok(result) => self.apply_result(kiosk, result)?,
                    Err(e) => self.reject(kiosk, &p.topic, reason(&e), &e),
                }
            }
            TopicKind::Print => match wire::decode::<PrintJob>(&p.payload, self.max_job_bytes) {
                Ok(job) => match self.store.record_mqtt_job(kiosk, &job, &p.payload)? {
                    MqttJobOutcome::Recorded => {
                        self.metrics.job_created("mqtt");
                        tracing::info!(job_id = %job.job_id, kiosk = %kiosk, "recorded job published over MQTT");
                    }
                    MqttJobOutcome::WrongKiosk => {
                        self.metrics.rejected("job_id_of_other_kiosk");
                        if let Some(suppressed) =
                            self.warnings.check(kiosk, "job_id_of_other_kiosk")
                        {
                            tracing::warn!(job_id = %job.job_id, kiosk = %kiosk, suppressed,
                                "job id belongs to another kiosk; not recorded");
                        }
                    }
                    MqttJobOutcome::Completed | MqttJobOutcome::Known => {}
                },
                // The kiosk answers such a job with a `failed` result naming
                // the reason; the gateway just counts it.
                Err(e) => self.reject(kiosk, &p.topic, reason(&e), &e),
            },
            TopicKind::Cash => {
                self.fleet.seen(kiosk);
                match wire::decode::<CashEvent>(&p.payload, SMALL_MESSAGE_LIMIT) {
                    Ok(event) => self.apply_credit(kiosk, &event, after)?,
                    Err(e) => self.reject(kiosk, &p.topic, reason(&e), &e),
                }
            }
            TopicKind::CashState => {
                self.fleet.seen(kiosk);
                match wire::decode::<CashState>(&p.payload, SMALL_MESSAGE_LIMIT) {
                    Ok(state) => self.apply_state(kiosk, &state, after)?,
                    Err(e) => self.reject(kiosk, &p.topic, reason(&e), &e),
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn apply_credit(
        &self,
        kiosk: &KioskId,
        event: &CashEvent,
        after: &mut After,
    ) -> Result<(), StoreError> {
        if event.seq == 0 || event.amount <= 0 || event.outbox.is_empty() || event.outbox.len() > 64
        {
            self.metrics.rejected("invalid_credit");
            if let Some(suppressed) = self.warnings.check(kiosk, "invalid_credit") {
                tracing::warn!(kiosk = %kiosk, seq = event.seq, amount = event.amount, suppressed,
                    "invalid credit ignored");
            }
            return Ok(());
        }
        let outcome = self.cash.apply_credit(kiosk, event)?;
        after
            .cash_acks
            .insert((kiosk.clone(), event.outbox.clone()), outcome.ack_up_to);
        if outcome.duplicate {
            self.metrics.credit("duplicate");
            tracing::debug!(kiosk = %kiosk, seq = event.seq, "duplicate credit ignored");
            return Ok(());
        }
        after.settle.insert(kiosk.clone());
        match &outcome.applied {
            Some((session, _, effect)) => {
                let late = *effect == CreditEffect::Late;
                self.metrics.credit(if late { "late" } else { "session" });
                tracing::info!(kiosk = %kiosk, seq = event.seq, amount = event.amount, session = %session.session_id,
                    state = session.state.as_str(), inserted = session.amount_inserted, due = session.amount_due,
                    late, "credit applied");
                after
                    .live
                    .extend(outcome.events.iter().filter_map(LiveEvent::of));
                if *effect == CreditEffect::Paid {
                    tracing::info!(session = %session.session_id, change_due = session.change_due(), "session paid");
                    after.controls.push(kiosk.clone());
                }
            }
            None => {
                self.metrics.credit("unassigned");
                tracing::warn!(kiosk = %kiosk, seq = event.seq, amount = event.amount, currency = %event.currency,
                    session = event.session_id.as_deref().unwrap_or(""), reason = ?outcome.credit.unassigned,
                    "credit kept as unassigned");
            }
        }
        Ok(())
    }

    /// A `CashState` from `kiosk`: `enabled: false` with a session confirms
    /// the end of acceptance for it; `enabled: true` for a session that is
    /// no longer open means the kiosk missed its `disable`: send the
    /// controls again.
    fn apply_state(
        &self,
        kiosk: &KioskId,
        state: &CashState,
        after: &mut After,
    ) -> Result<(), StoreError> {
        if state.outbox.is_empty()
            || state.outbox.len() > 64
            || state
                .session_id
                .as_ref()
                .is_some_and(|s| s.is_empty() || s.len() > 128)
        {
            self.metrics.rejected("invalid_cash_state");
            if let Some(suppressed) = self.warnings.check(kiosk, "invalid_cash_state") {
                tracing::warn!(kiosk = %kiosk, suppressed, "invalid cash state ignored");
            }
            return Ok(());
        }
        let Some(session_id) = state.session_id.as_deref() else {
            self.metrics.cash_state("no_session");
            return Ok(());
        };
        if state.enabled {
            self.metrics.cash_state("enabled");
            match self.cash.session(session_id)? {
                Some(s) if &s.kiosk_id == kiosk && s.state != SessionState::Open => {
                    tracing::warn!(kiosk = %kiosk, session = session_id, state = s.state.as_str(),
                        "kiosk accepts for a session that has ended; sending its controls again");
                    after.controls.push(kiosk.clone());
                }
                _ => {}
            }
            return Ok(());
        }
        match self.cash.confirm(kiosk, state)? {
            ConfirmOutcome::Recorded(s) => {
                self.metrics.cash_state("confirmed");
                tracing::info!(kiosk = %kiosk, session = %s.session_id, state = s.state.as_str(),
                    last_seq = state.last_seq, outbox = %state.outbox, "kiosk confirmed end of acceptance");
                after.settle.insert(kiosk.clone());
            }
            ConfirmOutcome::Duplicate(_) => {
                self.metrics.cash_state("duplicate");
                // Still worth a look: the credits may have arrived meanwhile.
                after.settle.insert(kiosk.clone());
            }
            ConfirmOutcome::Unknown => {
                self.metrics.cash_state("unknown_session");
                tracing::warn!(kiosk = %kiosk, session = session_id, "cash state for an unknown session ignored");
            }
        }
        Ok(())
    }

    fn apply_result(&self, kiosk: &KioskId, result: JobResult) -> Result<(), StoreError> {
        let outcome = self.store.apply_report(
            kiosk,
            &result.job_id,
            result.state.into(),
            result.at,
            result.reason.clone(),
            ByteCounts::reported(result.bytes_written, result.bytes_total),
            Source::Kiosk,
        )?;
        match outcome {
            ReportOutcome::Applied { from, record } => {
                tracing::info!(job_id = %record.job_id, kiosk = %kiosk, from = ?from, to = record.state.as_str(),
                    reason = record.reason.as_deref().unwrap_or(""), "job state");
                if record.state == kiosk_schemas::JobState::Printed {
                    let latency = Utc::now() - record.accepted_at;
                    self.metrics.observe_latency(
                        latency.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6,
                    );
                }
            }
            ReportOutcome::Duplicate => {}
            ReportOutcome::Conflict(record) => {
                tracing::warn!(job_id = %record.job_id, kiosk = %kiosk, recorded = record.state.as_str(),
                    reported = ?result.state, "conflicting result ignored; first outcome stands");
            }
            ReportOutcome::WrongKiosk => {
                self.metrics.rejected("job_id_of_other_kiosk");
                if let Some(suppressed) = self.warnings.check(kiosk, "result_of_other_kiosk") {
                    tracing::warn!(job_id = %result.job_id, kiosk = %kiosk, suppressed,
                        "result for another kiosk's job ignored");
                }
            }
        }
        Ok(())
    }
}

fn reason(e: &WireError) -> &'static str {
    match e {
        WireError::TooLarge { .. } => "oversized",
        WireError::Invalid(_) => "malformed",
    }
}
