//! One task per logical printer: prints its queued jobs in arrival order
//! (DESIGN.md, "Print jobs", step 3), and keeps the printer's status fresh.
//!
//! For the oldest `received` job of its printer the worker:
//! 1. reports it `expired` if `expires_at` has passed;
//! 2. reads the printer's status; while it is not ready (offline, cover
//!    open, paper out) the job waits and the status is re-read every
//!    `print.status_interval`;
//! 3. renders it (copies × document) and marks it `printing` with its
//!    `bytes_total`, flushed;
//! 4. hands the bytes over ([`PrinterDriver::hand_over`]), recording
//!    `bytes_written` as they go (not flushed: a lower bound after a
//!    crash), and marks it `printed`, flushed and reported, as soon as the
//!    hand-over returns. A write that fails part-way makes it `failed` with
//!    the printer's error and the byte counts. If the printer could not
//!    even be reached, nothing was written: the job goes back to
//!    `received` and waits;
//! 5. only then finishes the job on the link
//!    ([`PrinterDriver::finish_job`]: tcp waits up to 2 s for the printer
//!    to close). What the printer does after the job (paper out, a reset
//!    connection) goes to the kiosk status, from that step or the next
//!    status read, never into the job, which is printed already.
//!
//! Drivers block, so they run on `spawn_blocking`; the inbox is only
//! touched from this task and the intake task, through transactions.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiosk_schemas::{JobId, PrinterStatus};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::PrinterConfig;
use crate::connection::Publisher;
use crate::inbox::{Inbox, InboxError, InboxRecord};
use crate::intake::result_of;
use crate::printer::{PrinterDriver, PrinterError, Progress};
use crate::render::{self, RenderOptions};
use crate::state::InboxState;
use crate::status::StatusBoard;

/// Reason reported for a job that expired while waiting for its printer.
pub const EXPIRED_WAITING: &str = "expired while waiting for the printer";

/// A printer's worker.
pub struct Worker {
    /// Logical printer name.
    pub name: String,
    /// The printer's configuration (to reopen its driver).
    pub config: PrinterConfig,
    /// Its driver; `None` while a blocking call holds it, or after that
    /// call panicked (then it is reopened from `config`).
    pub driver: Option<Box<dyn PrinterDriver>>,
    /// Rendering options (width, code page).
    pub options: RenderOptions,
    /// The inbox.
    pub inbox: Inbox,
    /// For results.
    pub publisher: Publisher,
    /// Printer readings go here.
    pub board: StatusBoard,
    /// Woken when a job for this printer arrives.
    pub wake: Arc<Notify>,
    /// How often to re-read status while idle or waiting.
    pub status_interval: Duration,
}

enum Step {
    Idle,
    Busy,
    Wait,
}

impl Worker {
    /// Runs until `shutdown`. A job being written when shutdown comes is
    /// finished first; storage errors are logged and retried after a pause.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let step = match self.step().await {
                Ok(step) => step,
                // Cancelled between `next_for` and its next state (the
                // intake records cancels): nothing was written, go on.
                Err(InboxError::Transition {
                    job_id,
                    from: InboxState::Cancelled,
                    ..
                }) => {
                    tracing::info!(job_id, printer = %self.name, "job cancelled before its write; not printed");
                    Step::Busy
                }
                Err(e) => {
                    tracing::error!(printer = %self.name, error = %e, "inbox error; retrying");
                    Step::Wait
                }
            };
            let pause = match step {
                Step::Busy => continue,
                Step::Idle | Step::Wait => self.status_interval,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified(), if matches!(step, Step::Idle) => {}
                _ = tokio::time::sleep(pause) => {
                    if matches!(step, Step::Idle) {
                        self.read_status().await;
                    }
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
    }

    async fn step(&mut self) -> Result<Step, InboxError> {
        let Some(rec) = self.inbox.next_for(&self.name)? else {
            return Ok(Step::Idle);
        };
        let job = match self.inbox.job(&rec)? {
            Ok(job) => job,
            Err(reason) => {
                self.finish(&rec, InboxState::Failed, Some(reason)).await?;
                return Ok(Step::Busy);
            }
        };
        if job.is_expired_at(Utc::now()) {
            self.finish(&rec, InboxState::Expired, Some(EXPIRED_WAITING.to_owned()))
                .await?;
            return Ok(Step::Busy);
        }
        let status = self.read_status().await;
        if !status.ready {
            tracing::debug!(job_id = %rec.job_id, printer = %self.name, "job waits: printer not ready");
            return Ok(Step::Wait);
        }
        let rendered = match render::render(&job.document, &self.options) {
            Ok(r) => r,
            Err(e) => {
                self.finish(
                    &rec,
                    InboxState::Failed,
                    Some(format!("cannot render: {e}")),
                )
                .await?;
                return Ok(Step::Busy);
            }
        };
        let bytes = rendered.bytes.repeat(usize::from(job.copies));

        self.inbox.start_printing(&rec.job_id, bytes.len() as u64)?;
        // `printing` must be on disk before the first byte leaves: after a
        // crash, the job is then reported `interrupted`, never reprinted.
        self.inbox.flush().await?;
        let progress = Progress::default();
        let handed_over = self.hand_over(&rec.job_id, bytes, &progress).await;
        let written = progress.get();
        match handed_over {
            Ok(()) => {
                tracing::info!(job_id = %rec.job_id, printer = %self.name, copies = job.copies, bytes = written, "job printed");
                tracing::debug!(job_id = %rec.job_id, "preview:\n{}", rendered.preview);
                note_written(&self.inbox, &rec.job_id, written);
                // `printed` is flushed and reported before the printer is
                // waited for: a crash from here on leaves it printed, never
                // `interrupted` (and so never reprinted by an operator).
                self.finish(&rec, InboxState::Printed, None).await?;
                self.after_job(&rec.job_id).await;
            }
            Err(WriteError::Printer(e)) if e.nothing_written() && written == 0 => {
                tracing::warn!(job_id = %rec.job_id, printer = %self.name, error = %e,
                    "printer unreachable, nothing written; job waits");
                self.inbox
                    .transition(&rec.job_id, InboxState::Received, None)?;
                self.inbox.flush().await?;
                self.board.set_printer(&self.name, unreachable(&e));
                return Ok(Step::Wait);
            }
            Err(e) => {
                tracing::error!(job_id = %rec.job_id, printer = %self.name, error = %e,
                    bytes_written = written, "job failed");
                // Always with the final count: it tells a half-printed
                // ticket from one that never started.
                note_written(&self.inbox, &rec.job_id, written);
                self.finish(&rec, InboxState::Failed, Some(e.to_string()))
                    .await?;
            }
        }
        Ok(Step::Busy)
    }

    async fn finish(
        &self,
        rec: &InboxRecord,
        state: InboxState,
        reason: Option<String>,
    ) -> Result<(), InboxError> {
        let rec = self.inbox.transition(&rec.job_id, state, reason)?;
        self.inbox.flush().await?;
        if state != InboxState::Printed {
            tracing::warn!(job_id = %rec.job_id, printer = %self.name, state = ?state,
                reason = rec.reason.as_deref().unwrap_or(""), "job not printed");
        }
        if let Err(e) = self.publisher.publish_result(result_of(&rec)) {
            tracing::warn!(error = %e, "result queue full; the cloud will ask again");
        }
        Ok(())
    }

    async fn with_driver<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut dyn PrinterDriver) -> T + Send + 'static,
    ) -> Option<T> {
        let mut driver = self
            .driver
            .take()
            .unwrap_or_else(|| crate::printer::open(&self.config));
        let joined = tokio::task::spawn_blocking(move || {
            let out = f(driver.as_mut());
            (driver, out)
        })
        .await;
        match joined {
            Ok((driver, out)) => {
                self.driver = Some(driver);
                Some(out)
            }
            Err(e) => {
                tracing::error!(printer = %self.name, error = %e, "printer driver panicked");
                None
            }
        }
    }

    async fn read_status(&mut self) -> PrinterStatus {
        let status = self
            .with_driver(|d| d.status())
            .await
            .unwrap_or_else(|| PrinterStatus {
                error: Some("printer driver unavailable".to_owned()),
                ..PrinterStatus::default()
            });
        self.board.set_printer(&self.name, status.clone());
        status
    }

    /// Runs the driver's hand-over of `bytes` and records the bytes
    /// written in the inbox whenever the count moves (unflushed: sled
    /// persists it within its flush interval, and the caller flushes with
    /// the next state).
    async fn hand_over(
        &mut self,
        job_id: &JobId,
        bytes: Vec<u8>,
        progress: &Progress,
    ) -> Result<(), WriteError> {
        let inbox = self.inbox.clone();
        let mut moved = progress.subscribe();
        let counted = progress.clone();
        let write = self.with_driver(move |d| d.hand_over(&bytes, &counted));
        tokio::pin!(write);
        loop {
            tokio::select! {
                written = &mut write => {
                    return match written {
                        Some(r) => r.map_err(WriteError::Printer),
                        None => Err(WriteError::Panicked),
                    };
                }
                Ok(()) = moved.changed() => {
                    let n = *moved.borrow_and_update();
                    note_written(&inbox, job_id, n);
                }
            }
        }
    }

    /// After a job is recorded printed: lets the driver finish it on the
    /// link. A failure there is about the printer: the status is read at
    /// once for the status board, and the job stays printed. (Otherwise
    /// the next job's status read, or the idle one, sees what the printer
    /// says after the job.)
    async fn after_job(&mut self, job_id: &JobId) {
        match self.with_driver(|d| d.finish_job()).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::warn!(job_id = %job_id, printer = %self.name, error = %e,
                    "printer link failed after the job was handed over; the job stays printed");
                self.read_status().await;
            }
            // Logged by `with_driver`; the driver is reopened next time.
            None => {
                self.read_status().await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Printer(PrinterError),
    #[error("printer driver panicked while writing")]
    Panicked,
}

/// Records the bytes of a `printing` job written so far (unflushed). A
/// store error is only logged: the count is a lower bound anyway, and the
/// state change that follows reports the store error if it persists.
fn note_written(inbox: &Inbox, job_id: &JobId, bytes_written: u64) {
    if let Err(e) = inbox.record_progress(job_id, bytes_written) {
        tracing::warn!(job_id = %job_id, bytes_written, error = %e, "cannot record bytes written");
    }
}

fn unreachable(e: &PrinterError) -> PrinterStatus {
    PrinterStatus {
        error: Some(e.to_string()),
        ..PrinterStatus::default()
    }
}
