//! Getting jobs to kiosks (DESIGN.md, "Delivery", print jobs step 4).
//!
//! MQTT QoS 1 is only the transport: the broker forgets queued messages when
//! it restarts and rumqttc drops in-flight ones on a new session. So every
//! unfinished job (in the store's `pending` index) is published again
//!
//! - when its kiosk reports `online` (it may have lost its session), and
//! - on a timer (`delivery.republish_interval`) while its kiosk is online,
//!
//! until the kiosk reports an outcome. Publishing the same job twice is
//! safe: the agent deduplicates by `job_id` and answers a duplicate with its
//! stored result, which is also how a `received` job's lost outcome is
//! recovered. A job still `queued` at its deadline (`expires_at`, or
//! `created_at + delivery.default_expires_in`) is marked `expired`; it stays
//! pending for `delivery.result_grace` so the kiosk can correct that if it
//! did receive it, then the gateway stops asking.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use kiosk_schemas::{JobId, JobState, KioskId, Topic};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::DeliveryConfig;
use crate::echo::Echoes;
use crate::fleet::Fleet;
use crate::mqtt::MqttLink;
use crate::store::{JobRecord, ReportOutcome, Source, Store, StoreError};

/// Reason recorded when the gateway expires a job.
pub const EXPIRED_QUEUED: &str = "expired before the kiosk received it";

/// How often finished jobs older than `store.retention` are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Publishes jobs and runs the republish/expiry timer.
pub struct Delivery {
    store: Store,
    fleet: Arc<Fleet>,
    link: MqttLink,
    config: DeliveryConfig,
    retention: Duration,
    last_sent: Mutex<HashMap<JobId, Instant>>,
    echoes: Arc<Echoes>,
}

impl Delivery {
    /// A deliverer over the given store, registry and MQTT link; what it
    /// publishes is remembered in `echoes`.
    pub fn new(
        store: Store,
        fleet: Arc<Fleet>,
        link: MqttLink,
        config: DeliveryConfig,
        retention: Duration,
        echoes: Arc<Echoes>,
    ) -> Self {
        Delivery {
            store,
            fleet,
            link,
            config,
            retention,
            last_sent: Mutex::default(),
            echoes,
        }
    }

    /// Publishes a stored job's wire bytes to `kiosk/<id>/print` (QoS 1,
    /// not retained). Returns false when it could not be enqueued (it stays
    /// pending and the timer tries again) or has no content.
    pub fn send(&self, rec: &JobRecord) -> bool {
        match self.store.payload(&rec.job_id) {
            Ok(Some(payload)) => self.publish(&rec.kiosk_id, &rec.job_id, payload.to_vec()),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(job_id = %rec.job_id, error = %e, "stored job unreadable");
                false
            }
        }
    }

    /// Publishes `payload`, the wire bytes of job `job_id` as stored, to
    /// `kiosk/<kiosk>/print` (QoS 1, not retained), and remembers it so
    /// its echo is recognised ([`Echoes`]). Returns false when it could not
    /// be enqueued: it stays pending and the timer tries again.
    pub fn publish(&self, kiosk: &KioskId, job_id: &JobId, payload: Vec<u8>) -> bool {
        self.echoes.published(&payload);
        match self.link.try_publish(&Topic::print(kiosk), false, payload) {
            Ok(()) => {
                self.sent_now(job_id);
                tracing::debug!(job_id = %job_id, kiosk = %kiosk, "job published");
                true
            }
            Err(e) => {
                tracing::debug!(job_id = %job_id, error = %e, "job not published now; will retry");
                false
            }
        }
    }

    fn sent_now(&self, job: &JobId) {
        self.lock().insert(job.clone(), Instant::now());
    }

    fn sent_recently(&self, job: &JobId) -> bool {
        self.lock()
            .get(job)
            .is_some_and(|t| t.elapsed() < self.config.republish_interval)
    }

    fn forget(&self, job: &JobId) {
        self.lock().remove(job);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Instant>> {
        self.last_sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes every unfinished job of `kiosk`, in creation order.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub fn send_pending(&self, kiosk: &KioskId) -> Result<usize, StoreError> {
        let mut jobs = Vec::new();
        for (_, job_id) in self.store.pending(Some(kiosk))? {
            if let Some(rec) = self.store.job(&job_id)? {
                jobs.push(rec);
            }
        }
        jobs.sort_by_key(|j| j.accepted_at);
        let sent = jobs.iter().filter(|j| self.send(j)).count();
        if sent > 0 {
            tracing::info!(kiosk = %kiosk, jobs = sent, "sent unfinished jobs to kiosk");
        }
        Ok(sent)
    }

    /// One pass of the timer: expire overdue `queued` jobs, stop asking
    /// about jobs past their grace period, re-send the rest to online
    /// kiosks. Returns the number of jobs expired.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        let lifetime = chrono::Duration::from_std(self.config.default_expires_in)
            .unwrap_or(chrono::Duration::MAX);
        let grace =
            chrono::Duration::from_std(self.config.result_grace).unwrap_or(chrono::Duration::MAX);
        let mut expired = 0;
        let mut dropped = 0;
        let pending = self.store.pending(None)?;
        // Finished jobs leave the pending index: forget when they were sent.
        {
            let ids: std::collections::HashSet<&JobId> = pending.iter().map(|(_, id)| id).collect();
            self.lock().retain(|id, _| ids.contains(id));
        }
        for (kiosk, job_id) in pending {
            let Some(rec) = self.store.job(&job_id)? else {
                self.store.drop_pending(&kiosk, &job_id)?;
                continue;
            };
            let deadline = rec.deadline(lifetime);
            if now >= deadline.checked_add_signed(grace).unwrap_or(deadline) {
                tracing::warn!(job_id = %job_id, kiosk = %kiosk, state = rec.state.as_str(),
                    "no outcome reported within the grace period; no longer asking the kiosk");
                self.store.drop_pending(&kiosk, &job_id)?;
                self.forget(&job_id);
                dropped += 1;
                continue;
            }
            if rec.state == JobState::Queued && now >= deadline {
                let outcome = self.store.apply_report(
                    &kiosk,
                    &job_id,
                    JobState::Expired,
                    now,
                    Some(EXPIRED_QUEUED.to_owned()),
                    None,
                    Source::Gateway,
                )?;
                if matches!(outcome, ReportOutcome::Applied { .. }) {
                    tracing::info!(job_id = %job_id, kiosk = %kiosk, "job expired while queued");
                    expired += 1;
                }
                continue;
            }
            if self.fleet.is_online(&kiosk) && !self.sent_recently(&job_id) {
                self.send(&rec);
            }
        }
        if expired + dropped > 0 {
            self.store.flush().await?;
        }
        Ok(expired)
    }

    /// Runs until `shutdown`: sweeps every `republish_interval`, sends a
    /// kiosk's unfinished jobs whenever its id arrives on `online`, and
    /// purges old finished jobs hourly.
    pub async fn run(
        self: Arc<Self>,
        mut online: mpsc::Receiver<KioskId>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.config.republish_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::error!(error = %e, "delivery sweep failed");
                    }
                    if last_purge.elapsed() >= PURGE_EVERY {
                        last_purge = Instant::now();
                        self.purge();
                    }
                }
                Some(kiosk) = online.recv() => {
                    if let Err(e) = self.send_pending(&kiosk) {
                        tracing::error!(kiosk = %kiosk, error = %e, "could not send pending jobs");
                    }
                }
            }
        }
    }

    fn purge(&self) {
        let Ok(retention) = chrono::Duration::from_std(self.retention) else {
            return;
        };
        match self.store.purge_finished(Utc::now() - retention) {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "purged finished jobs past retention"),
            Err(e) => tracing::error!(error = %e, "purge failed"),
        }
    }
}
