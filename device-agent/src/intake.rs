//! What arrives on the kiosk's topics: print jobs and commands.
//!
//! A `cancel` command is recorded in the inbox ([`Inbox::cancel`]) and
//! answered, after the flush, with the job's result: `cancelled`, or its
//! state when it was too late (a `printing` job reports `received`, and
//! its outcome follows).
//!
//! For each print job (DESIGN.md, "Print jobs", step 2): check it, store it
//! in the inbox (a duplicate job id is answered with the stored state),
//! flush, and only then acknowledge the PUBLISH and publish the result
//! (`received`, or `failed`/`expired` with the reason). Messages are
//! handled in batches so one flush covers many jobs.
//!
//! Bad input never stops the agent: an oversized payload, malformed JSON,
//! an unknown document kind, an unknown printer — each becomes a `failed`
//! result naming the reason when the job id can be read, and a log line
//! otherwise.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use kiosk_schemas::log_limit::SharedLogLimiter;
use kiosk_schemas::wire::{self, WireError};
use kiosk_schemas::{
    CashAck, CashControl, Command, CommandKind, Document, JobId, JobResult, PrintJob, RawDocument,
    Topic, TopicKind, V1,
};

use kiosk_mqtt::AckOutcome;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::connection::{Incoming, Publisher};
use crate::inbox::{Admission, CancelOutcome, Inbox, InboxError, InboxRecord};
use crate::render::{self, RenderOptions};
use crate::state::InboxState;
use crate::status::StatusBoard;

/// Most messages handled before one flush.
const BATCH: usize = 128;
/// Largest command payload, in bytes.
const COMMAND_LIMIT: usize = 16 * 1024;

/// The intake task's state.
pub struct Intake {
    /// The inbox.
    pub inbox: Inbox,
    /// Publishing results.
    pub publisher: Publisher,
    /// Printers by name with their rendering options, for checking jobs
    /// and rendering test pages.
    pub printers: HashMap<String, RenderOptions>,
    /// Wakes the worker of each printer.
    pub wake: HashMap<String, Arc<Notify>>,
    /// Status board (for `ping`).
    pub board: StatusBoard,
    /// Largest job payload accepted, in bytes.
    pub max_job_bytes: usize,
    /// The cash side, when the kiosk has an acceptor.
    pub cash: Option<CashLink>,
    /// At most one warning per reason and [`WARN_WINDOW`] about unusable
    /// messages from the cloud, so a broken backend cannot flood the log.
    warnings: SharedLogLimiter<&'static str>,
}

/// At most one warning about unusable cloud messages per reason in this
/// window; the next one says how many were suppressed.
pub const WARN_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// What the intake needs of the cash side.
pub struct CashLink {
    /// The acceptance and the outbox (acknowledgements delete from it).
    pub cash: crate::cash::Cash,
    /// Wakes the [`crate::cash::Sender`]: acknowledgements open its window.
    pub sender: std::sync::Arc<tokio::sync::Notify>,
}

/// What to do once a batch is flushed.
#[derive(Default)]
struct After {
    acks: Vec<Incoming>,
    results: Vec<JobResult>,
    wake: Vec<String>,
    status: bool,
    /// A job or command touched the inbox: flush before acknowledging. A
    /// batch of only cash acks and controls needs no flush here (a lost ack
    /// deletion only re-sends a credit, which the cloud ignores; a control
    /// flushes itself).
    stored: bool,
    /// Cash controls, applied in order after the flush and before the
    /// acknowledgements.
    controls: Vec<CashControl>,
}

impl Intake {
    /// Builds the intake from the configuration.
    pub fn new(
        config: &AgentConfig,
        printers: HashMap<String, RenderOptions>,
        inbox: Inbox,
        publisher: Publisher,
        wake: HashMap<String, Arc<Notify>>,
        board: StatusBoard,
    ) -> Self {
        Intake {
            inbox,
            publisher,
            printers,
            wake,
            board,
            max_job_bytes: config.print.max_job_bytes,
            cash: None,
            warnings: SharedLogLimiter::new(WARN_WINDOW, 32),
        }
    }

    /// `Some(suppressed)` when a warning for `reason` may be logged now.
    fn warn_allowed(&self, reason: &'static str) -> Option<u64> {
        self.warnings.check(reason, std::time::Instant::now())
    }

    /// Runs until `shutdown` or until the connection task ends.
    pub async fn run(self, mut rx: mpsc::Receiver<Incoming>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        while kiosk_mqtt::next_batch(&mut rx, BATCH, &mut batch, &shutdown).await {
            let mut after = After::default();
            for m in batch.drain(..) {
                match self.handle(&m.publish, &mut after) {
                    Ok(()) => after.acks.push(m),
                    Err(e) => {
                        // Not acknowledged. rumqttd then sees the next
                        // acknowledgement out of order and drops the
                        // connection; on reconnect it redelivers this one.
                        tracing::error!(topic = %m.publish.topic, error = %e, "could not store message");
                    }
                }
            }
            if after.stored
                && let Err(e) = self.inbox.flush().await
            {
                tracing::error!(error = %e, "inbox flush failed; nothing acknowledged");
                continue;
            }
            if let Some(cash) = &self.cash {
                for control in &after.controls {
                    if let Err(e) = cash.cash.control(control).await {
                        // The cloud sends the control again on the next
                        // connection; the acceptor keeps its stored state.
                        tracing::error!(error = %e, "cash control could not be stored; acceptance unchanged");
                    }
                }
            }
            for m in &after.acks {
                match self.publisher.ack(m).await {
                    AckOutcome::Queued => {}
                    AckOutcome::EarlierConnection => {
                        tracing::debug!("not acknowledging a message from an earlier connection");
                    }
                    AckOutcome::SessionEnded => tracing::debug!("ack not enqueued: session ended"),
                }
            }
            for r in after.results {
                if let Err(e) = self.publisher.publish_result(r) {
                    tracing::warn!(error = %e, "result queue full; the cloud will ask again");
                }
            }
            for printer in after.wake {
                if let Some(n) = self.wake.get(&printer) {
                    n.notify_one();
                }
            }
            if after.status
                && let Err(e) = self.publisher.publish_status(&self.board.online_status())
            {
                tracing::warn!(error = %e, "publish not enqueued");
            }
        }
    }

    fn handle(&self, p: &kiosk_mqtt::Publish, after: &mut After) -> Result<(), InboxError> {
        let Some(topic) = Topic::parse(&p.topic) else {
            if let Some(suppressed) = self.warn_allowed("unexpected topic") {
                tracing::warn!(topic = %p.topic, suppressed, "message on an unexpected topic ignored");
            }
            return Ok(());
        };
        if topic.kiosk() != self.publisher.kiosk() {
            if let Some(suppressed) = self.warn_allowed("another kiosk") {
                tracing::warn!(topic = %p.topic, suppressed, "message for another kiosk ignored");
            }
            return Ok(());
        }
        match topic.kind() {
            TopicKind::Print => {
                after.stored = true;
                self.handle_job(&p.payload, after)
            }
            TopicKind::Cmd => {
                after.stored = true;
                self.handle_command(&p.payload, after)
            }
            TopicKind::CashAck => {
                self.handle_cash_ack(&p.payload);
                Ok(())
            }
            TopicKind::CashControl => {
                self.handle_cash_control(&p.payload, after);
                Ok(())
            }
            other => {
                tracing::debug!(topic = %p.topic, kind = ?other, "no handler for topic; ignored");
                Ok(())
            }
        }
    }

    fn handle_job(&self, payload: &[u8], after: &mut After) -> Result<(), InboxError> {
        let job = match wire::decode::<PrintJob>(payload, self.max_job_bytes) {
            Ok(job) => job,
            Err(e) => {
                let reason = match &e {
                    WireError::TooLarge { size, limit } => {
                        format!("job payload too large: {size} bytes, limit {limit} bytes")
                    }
                    WireError::Invalid(m) => format!("invalid job: {m}"),
                };
                return self.refuse(
                    wire::peek_job_id(payload),
                    InboxState::Failed,
                    reason,
                    after,
                );
            }
        };
        if let Err(reason) = job.validate() {
            return self.refuse(
                Some(job.job_id),
                InboxState::Failed,
                format!("invalid job: {reason}"),
                after,
            );
        }
        if !self.printers.contains_key(&job.printer) {
            let reason = format!("unknown printer {:?} on this kiosk", job.printer);
            return self.refuse(Some(job.job_id), InboxState::Failed, reason, after);
        }
        if job.is_expired_at(Utc::now()) {
            let reason = "expired before it reached the kiosk".to_owned();
            return self.refuse(Some(job.job_id), InboxState::Expired, reason, after);
        }
        // Stored as the bytes that arrived: never re-encoded.
        match self.inbox.admit(&job, payload)? {
            Admission::New(rec) => {
                tracing::info!(job_id = %rec.job_id, printer = %rec.printer, kind = job.document.kind(), "job received");
                after.results.push(result_of(&rec));
                after.wake.push(rec.printer);
            }
            Admission::Duplicate(rec) => {
                tracing::debug!(job_id = %rec.job_id, state = ?rec.state, "duplicate job answered with stored state");
                after.results.push(result_of(&rec));
            }
        }
        Ok(())
    }

    fn refuse(
        &self,
        job_id: Option<JobId>,
        state: InboxState,
        reason: String,
        after: &mut After,
    ) -> Result<(), InboxError> {
        let Some(job_id) = job_id else {
            if let Some(suppressed) = self.warn_allowed("no job id") {
                tracing::warn!(
                    reason,
                    suppressed,
                    "print message without a readable job id dropped"
                );
            }
            return Ok(());
        };
        if let Some(suppressed) = self.warn_allowed("job refused") {
            tracing::warn!(job_id = %job_id, reason, suppressed, "job refused");
        }
        let rec = match self.inbox.refuse(job_id, state, reason)? {
            Admission::New(rec) | Admission::Duplicate(rec) => rec,
        };
        after.results.push(result_of(&rec));
        Ok(())
    }

    fn handle_cash_ack(&self, payload: &[u8]) {
        let Some(cash) = &self.cash else {
            tracing::debug!("cash ack for a kiosk without an acceptor ignored");
            return;
        };
        match wire::decode::<CashAck>(payload, COMMAND_LIMIT) {
            Ok(ack) => match cash.cash.outbox().ack(&ack.outbox, ack.up_to_seq) {
                Ok(n) => {
                    tracing::debug!(
                        up_to_seq = ack.up_to_seq,
                        deleted = n,
                        "credits acknowledged"
                    );
                    self.board.set_cash_unacked(cash.cash.outbox().len() as u64);
                    if n > 0 {
                        cash.sender.notify_one();
                    }
                }
                // Keeping them only means sending them again.
                Err(e) => tracing::error!(error = %e, "could not delete acknowledged credits"),
            },
            Err(e) => {
                if let Some(suppressed) = self.warn_allowed("invalid cash ack") {
                    tracing::warn!(error = %e, suppressed, "invalid cash ack ignored");
                }
            }
        }
    }

    fn handle_cash_control(&self, payload: &[u8], after: &mut After) {
        if self.cash.is_none() {
            if let Some(suppressed) = self.warn_allowed("no acceptor") {
                tracing::warn!(
                    suppressed,
                    "cash control for a kiosk without an acceptor ignored"
                );
            }
            return;
        }
        match wire::decode::<CashControl>(payload, COMMAND_LIMIT) {
            Ok(control) => {
                tracing::debug!(action = ?control.action, session = ?control.session_id, "cash control");
                after.controls.push(control);
            }
            Err(e) => {
                if let Some(suppressed) = self.warn_allowed("invalid cash control") {
                    tracing::warn!(error = %e, suppressed, "invalid cash control ignored");
                }
            }
        }
    }

    fn handle_command(&self, payload: &[u8], after: &mut After) -> Result<(), InboxError> {
        let cmd = match wire::decode::<Command>(payload, COMMAND_LIMIT) {
            Ok(c) => c,
            Err(e) => {
                if let Some(suppressed) = self.warn_allowed("invalid command") {
                    tracing::warn!(error = %e, suppressed, "invalid command ignored");
                }
                return Ok(());
            }
        };
        match cmd.kind {
            CommandKind::Ping => after.status = true,
            CommandKind::Cancel { job_id } => {
                // Reported after the batch's flush, like every result: the
                // cancel is durable before the cloud hears of it.
                let rec = match self.inbox.cancel(&job_id)? {
                    CancelOutcome::Cancelled(rec) => {
                        tracing::info!(job_id = %rec.job_id, "job cancelled");
                        rec
                    }
                    CancelOutcome::AlreadyCancelled(rec) => rec,
                    CancelOutcome::Refused(rec) => {
                        tracing::info!(job_id = %rec.job_id, state = ?rec.state,
                            "cancel refused: the job's write started or it ended");
                        rec
                    }
                };
                after.results.push(result_of(&rec));
            }
            CommandKind::TestPrint { printer } => {
                let Some(options) = self.printers.get(&printer) else {
                    if let Some(suppressed) = self.warn_allowed("unknown printer") {
                        tracing::warn!(
                            printer,
                            suppressed,
                            "test print for an unknown printer ignored"
                        );
                    }
                    return Ok(());
                };
                let page = render::test_page(&printer, options, self.publisher.kiosk().as_str());
                let job = PrintJob {
                    v: V1,
                    job_id: JobId::new(format!("test-{}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ")))
                        .unwrap_or_else(|e| unreachable!("{e}")),
                    printer,
                    document: Document::Raw(RawDocument::from_bytes(&page.bytes)),
                    copies: 1,
                    created_at: Utc::now(),
                    expires_at: Some(Utc::now() + chrono::Duration::minutes(10)),
                };
                if let Admission::New(rec) = self.inbox.admit(&job, wire::encode(&job))? {
                    tracing::info!(job_id = %rec.job_id, printer = %rec.printer, "test page queued");
                    after.results.push(result_of(&rec));
                    after.wake.push(rec.printer);
                }
            }
        }
        Ok(())
    }
}

/// The result message for a record's current state; a `failed` job whose
/// write started carries its byte counts.
pub fn result_of(rec: &InboxRecord) -> JobResult {
    let failed = rec.state == InboxState::Failed;
    JobResult {
        v: V1,
        job_id: rec.job_id.clone(),
        state: rec.state.result_state(),
        at: rec.updated_at,
        reason: rec.reason.clone(),
        bytes_written: rec.bytes_written.filter(|_| failed),
        bytes_total: rec.bytes_total.filter(|_| failed),
    }
}
