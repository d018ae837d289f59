//! One task per logical printer: prints its queued jobs in arrival order
//! (DESIGN.md, "Print jobs", step 3), and keeps the printer's status fresh.
//!
//! For the oldest `received` job of its printer the worker:
//! 1. reports it `expired` if `expires_at` has passed;
//! 2. reads the printer's status; while it is not ready (offline, cover
//!    open, paper out) the job waits and the status is re-read every
//!    `print.status_interval`;
//! 3. renders it (copies × document) and marks it `printing`, flushed;
//! 4. writes the bytes and marks it `printed`, or `failed` with the
//!    printer's error. If the printer could not even be reached, nothing was
//!    written: the job goes back to `received` and waits.
//!
//! Drivers block, so they run on `spawn_blocking`; the inbox is only
//! touched from this task and the intake task, through transactions.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiosk_schemas::PrinterStatus;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::PrinterConfig;
use crate::connection::Publisher;
use crate::inbox::{Inbox, InboxError, InboxRecord};
use crate::intake::result_of;
use crate::printer::{PrinterDriver, PrinterError};
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
        let job = match rec.job() {
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

        self.inbox
            .transition(&rec.job_id, InboxState::Printing, None)?;
        // `printing` must be on disk before the first byte leaves: after a
        // crash, the job is then reported `interrupted`, never reprinted.
        self.inbox.flush().await?;
        match self.write(bytes).await {
            Ok(()) => {
                tracing::info!(job_id = %rec.job_id, printer = %self.name, copies = job.copies, "job printed");
                tracing::debug!(job_id = %rec.job_id, "preview:\n{}", rendered.preview);
                self.finish(&rec, InboxState::Printed, None).await?;
            }
            Err(WriteError::Printer(e)) if e.nothing_written() => {
                tracing::warn!(job_id = %rec.job_id, printer = %self.name, error = %e,
                    "printer unreachable, nothing written; job waits");
                self.inbox
                    .transition(&rec.job_id, InboxState::Received, None)?;
                self.inbox.flush().await?;
                self.board.set_printer(&self.name, unreachable(&e));
                return Ok(Step::Wait);
            }
            Err(e) => {
                tracing::error!(job_id = %rec.job_id, printer = %self.name, error = %e, "job failed");
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
        self.publisher.publish_result(result_of(&rec));
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

    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), WriteError> {
        match self.with_driver(move |d| d.write_job(&bytes)).await {
            Some(r) => r.map_err(WriteError::Printer),
            None => Err(WriteError::Panicked),
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

fn unreachable(e: &PrinterError) -> PrinterStatus {
    PrinterStatus {
        error: Some(e.to_string()),
        ..PrinterStatus::default()
    }
}
