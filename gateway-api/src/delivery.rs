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
//!
//! Cancels go the same way: every job in the store's `cancels` index (a
//! cancel its kiosk has not answered) gets a `cancel` command on
//! `kiosk/<id>/cmd` when the cancel is made, when its kiosk comes online
//! and on the timer, until the kiosk reports a final state for the job or
//! the job's grace period passes. A `queued` job that was cancelled is out
//! of `pending`, so it is never published again; the command reaches a
//! kiosk that got an earlier publish of it (perhaps kept by the broker
//! while the kiosk was offline), and the kiosk refuses the job then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiosk_schemas::{Command, CommandKind, JobId, JobState, KioskId, Topic, V1, wire};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
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
    /// When each unanswered cancel's command was last sent.
    cancel_sent: Mutex<HashMap<JobId, Instant>>,
    echoes: Arc<Echoes>,
    clock: Clock,
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
            cancel_sent: Mutex::default(),
            echoes,
            clock: Clock::system(),
        }
    }

    /// The same deliverer reading the time from `clock` (expiry, grace,
    /// republish pacing, purge); [`Clock::system`] by default.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
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

    /// Publishes the `cancel` command for `job_id` to `kiosk/<kiosk>/cmd`
    /// (QoS 1, not retained). Returns false when it could not be enqueued:
    /// the timer sends it again while the cancel is unanswered.
    pub fn send_cancel(&self, kiosk: &KioskId, job_id: &JobId) -> bool {
        let cmd = Command {
            v: V1,
            kind: CommandKind::Cancel {
                job_id: job_id.clone(),
            },
        };
        match self
            .link
            .try_publish(&Topic::cmd(kiosk), false, wire::encode(&cmd))
        {
            Ok(()) => {
                self.lock_cancels()
                    .insert(job_id.clone(), self.clock.instant());
                tracing::debug!(job_id = %job_id, kiosk = %kiosk, "cancel sent");
                true
            }
            Err(e) => {
                tracing::debug!(job_id = %job_id, error = %e, "cancel not sent now; will retry");
                false
            }
        }
    }

    fn lock_cancels(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Instant>> {
        self.cancel_sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cancel_sent_recently(&self, job: &JobId) -> bool {
        self.lock_cancels()
            .get(job)
            .is_some_and(|t| self.clock.since(*t) < self.config.republish_interval)
    }

    /// Sends the `cancel` command of every unanswered cancel of `kiosk`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub fn send_cancels(&self, kiosk: &KioskId) -> Result<usize, StoreError> {
        let cancels = self.store.pending_cancels(Some(kiosk))?;
        let sent = cancels
            .iter()
            .filter(|(k, job)| self.send_cancel(k, job))
            .count();
        if sent > 0 {
            tracing::info!(kiosk = %kiosk, cancels = sent, "sent unanswered cancels to kiosk");
        }
        Ok(sent)
    }

    /// The timer's pass over unanswered cancels: drops those whose job is
    /// gone or past its grace period, sends the others' commands to online
    /// kiosks once per `republish_interval`. Returns how many were dropped.
    fn sweep_cancels(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        lifetime: chrono::Duration,
        grace: chrono::Duration,
    ) -> Result<usize, StoreError> {
        let cancels = self.store.pending_cancels(None)?;
        {
            let ids: std::collections::HashSet<&JobId> = cancels.iter().map(|(_, id)| id).collect();
            self.lock_cancels().retain(|id, _| ids.contains(id));
        }
        let mut dropped = 0;
        for (kiosk, job_id) in cancels {
            let past_grace = match self.store.job(&job_id)? {
                Some(rec) => {
                    let deadline = rec.deadline(lifetime);
                    now >= deadline.checked_add_signed(grace).unwrap_or(deadline)
                }
                None => true,
            };
            if past_grace {
                tracing::warn!(job_id = %job_id, kiosk = %kiosk,
                    "cancel not answered within the grace period; no longer sending it");
                self.store.drop_cancel(&kiosk, &job_id)?;
                self.lock_cancels().remove(&job_id);
                dropped += 1;
                continue;
            }
            if self.fleet.is_online(&kiosk) && !self.cancel_sent_recently(&job_id) {
                self.send_cancel(&kiosk, &job_id);
            }
        }
        Ok(dropped)
    }

    fn sent_now(&self, job: &JobId) {
        self.lock().insert(job.clone(), self.clock.instant());
    }

    fn sent_recently(&self, job: &JobId) -> bool {
        self.lock()
            .get(job)
            .is_some_and(|t| self.clock.since(*t) < self.config.republish_interval)
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
        let now = self.clock.now();
        let lifetime = chrono::Duration::from_std(self.config.default_expires_in)
            .unwrap_or(chrono::Duration::MAX);
        let grace =
            chrono::Duration::from_std(self.config.result_grace).unwrap_or(chrono::Duration::MAX);
        let mut expired = 0;
        let mut dropped = self.sweep_cancels(now, lifetime, grace)?;
        let pending = self.store.pending(None)?;
        // Finished jobs leave the pending index: forget when they were sent.
        {
            let ids: std::collections::HashSet<&JobId> = pending.iter().map(|(_, id)| id).collect();
            self.lock().retain(|id, _| ids.contains(id));
        }
        for (kiosk, job_id) in pending {
            let Some(rec) = self.store.job(&job_id)? else {
                // A creation cut short by a crash (or one still under way,
                // which this leaves alone).
                if self.store.drop_unfinished(&kiosk, &job_id)? {
                    tracing::info!(job_id = %job_id, kiosk = %kiosk,
                        "removed what an unfinished job creation left");
                }
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
    /// kiosk's unanswered cancels and unfinished jobs whenever its id
    /// arrives on `online`, and
    /// purges old finished jobs hourly.
    pub async fn run(
        self: Arc<Self>,
        mut online: mpsc::Receiver<KioskId>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.config.republish_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge = self.clock.instant();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::error!(error = %e, "delivery sweep failed");
                    }
                    if self.clock.since(last_purge) >= PURGE_EVERY {
                        last_purge = self.clock.instant();
                        self.purge();
                    }
                }
                Some(kiosk) = online.recv() => {
                    // Cancels first: a kiosk that is sent a job it holds
                    // already answers it from its inbox either way.
                    if let Err(e) = self.send_cancels(&kiosk) {
                        tracing::error!(kiosk = %kiosk, error = %e, "could not send pending cancels");
                    }
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
        match self.store.purge_finished(self.clock.now() - retention) {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "purged finished jobs past retention"),
            Err(e) => tracing::error!(error = %e, "purge failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The timer's decisions under tokio's paused clock: time moves only by
    //! `advance()`, so deadlines are checked to the millisecond, no sleeps.

    use kiosk_schemas::{KioskStatus, Secret, Timestamp};

    use super::*;
    use crate::mqtt::{self, MqttSettings};
    use crate::store::{Origin, Transition};
    use kiosk_mqtt::Session;

    const REPUBLISH: Duration = Duration::from_secs(30);
    const GRACE: Duration = Duration::from_secs(3600);
    const MS: Duration = Duration::from_millis(1);

    struct Setup {
        _dir: tempfile::TempDir,
        store: Store,
        fleet: Arc<Fleet>,
        delivery: Arc<Delivery>,
        /// Never run: publishes wait in rumqttc's request queue, which is
        /// all the timer needs (it notes when it sent). Kept so that queue
        /// stays open.
        _sessions: (Session, Session),
        start: Timestamp,
    }

    fn kiosk() -> KioskId {
        KioskId::new("k1").unwrap()
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fleet = Arc::new(Fleet::new(
            store.clone(),
            None,
            [kiosk()],
            Duration::from_secs(30),
        ));
        let (link, consumer, producer) = mqtt::connect(&MqttSettings {
            brokers: vec![("127.0.0.1".into(), 1)],
            client_id: "gw".into(),
            username: "gw".into(),
            password: Secret::new("pw"),
            keep_alive: Duration::from_secs(30),
            backoff: (Duration::from_millis(200), Duration::from_secs(10)),
            tls: None,
            max_packet_bytes: 1 << 20,
        });
        let config = DeliveryConfig {
            republish_interval: REPUBLISH,
            result_grace: GRACE,
            ..DeliveryConfig::default()
        };
        let start = Timestamp::from_timestamp(1_700_000_000, 0).unwrap();
        let delivery = Delivery::new(
            store.clone(),
            fleet.clone(),
            link,
            config,
            Duration::from_secs(86_400),
            Arc::default(),
        )
        .with_clock(Clock::tokio(start));
        Setup {
            _dir: dir,
            store,
            fleet,
            delivery: Arc::new(delivery),
            _sessions: (consumer, producer),
            start,
        }
    }

    /// A `queued` job for `k1` created at `created`, due at `expires_at`.
    fn queue(store: &Store, id: &str, created: Timestamp, expires_at: Timestamp) -> JobId {
        let job_id = JobId::new(id).unwrap();
        let rec = JobRecord {
            job_id: job_id.clone(),
            kiosk_id: kiosk(),
            printer: "receipt".into(),
            copies: 1,
            created_at: created,
            expires_at: Some(expires_at),
            state: JobState::Queued,
            reason: None,
            history: vec![Transition {
                state: JobState::Queued,
                at: created,
                reason: None,
            }],
            origin: Origin::Http {
                api_key: "test".into(),
            },
            reprint_of: None,
            accepted_at: created,
            gateway_expired: false,
            bytes: None,
        };
        let payload =
            br#"{"v":1,"job_id":"x","printer":"receipt","document":{"kind":"text","text":"x"}}"#;
        store.create_job(rec, payload, None).unwrap();
        job_id
    }

    fn state(store: &Store, job: &JobId) -> JobState {
        store.job(job).unwrap().unwrap().state
    }

    fn is_pending(store: &Store, job: &JobId) -> bool {
        store
            .pending(Some(&kiosk()))
            .unwrap()
            .iter()
            .any(|(_, id)| id == job)
    }

    fn bring_online(fleet: &Fleet) {
        let mut status = KioskStatus::online("0.1.0", Default::default());
        status.connection_id = Some("c1".into());
        fleet.apply_status(&kiosk(), &status).unwrap();
        assert!(fleet.is_online(&kiosk()));
    }

    fn last_sent(delivery: &Delivery, job: &JobId) -> Option<Instant> {
        delivery.lock().get(job).copied()
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_job_expires_at_its_deadline_and_stays_pending_for_the_grace() {
        let s = setup();
        let lifetime = Duration::from_secs(600);
        let deadline = s.start + chrono::Duration::from_std(lifetime).unwrap();
        let job = queue(&s.store, "j1", s.start, deadline);

        tokio::time::advance(lifetime - MS).await;
        assert_eq!(s.delivery.sweep().await.unwrap(), 0, "1 ms early");
        assert_eq!(state(&s.store, &job), JobState::Queued);

        tokio::time::advance(MS).await;
        assert_eq!(s.delivery.clock.now(), deadline);
        assert_eq!(s.delivery.sweep().await.unwrap(), 1, "at the deadline");
        let rec = s.store.job(&job).unwrap().unwrap();
        assert_eq!(rec.state, JobState::Expired);
        assert_eq!(rec.reason.as_deref(), Some(EXPIRED_QUEUED));
        assert!(is_pending(&s.store, &job), "the kiosk may still report it");

        tokio::time::advance(GRACE - MS).await;
        assert_eq!(s.delivery.sweep().await.unwrap(), 0, "expired only once");
        assert!(is_pending(&s.store, &job), "1 ms before the grace ends");

        tokio::time::advance(MS).await;
        s.delivery.sweep().await.unwrap();
        assert!(!is_pending(&s.store, &job), "no longer asked for");
        assert_eq!(state(&s.store, &job), JobState::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_of_an_online_kiosk_is_republished_once_per_interval() {
        let s = setup();
        bring_online(&s.fleet);
        let job = queue(&s.store, "j1", s.start, s.start + chrono::Duration::days(1));
        let t0 = s.delivery.clock.instant();
        s.delivery.sweep().await.unwrap();
        assert_eq!(last_sent(&s.delivery, &job), Some(t0), "first sweep sends");

        // Sweeps every second over three intervals: one send per interval.
        let mut sends = Vec::new();
        for _ in 0..3 * REPUBLISH.as_secs() {
            tokio::time::advance(Duration::from_secs(1)).await;
            let before = last_sent(&s.delivery, &job);
            s.delivery.sweep().await.unwrap();
            let after = last_sent(&s.delivery, &job);
            if after != before {
                sends.push(after.unwrap() - t0);
            }
        }
        assert_eq!(sends, [REPUBLISH, 2 * REPUBLISH, 3 * REPUBLISH]);
        assert_eq!(state(&s.store, &job), JobState::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_republishes_every_interval_and_not_to_offline_kiosks() {
        let s = setup();
        let job = queue(&s.store, "j1", s.start, s.start + chrono::Duration::days(1));
        let (_online_tx, online_rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let t0 = s.delivery.clock.instant();
        let task = tokio::spawn(s.delivery.clone().run(online_rx, shutdown.clone()));

        // Offline: the timer sweeps but sends nothing.
        tokio::time::advance(REPUBLISH).await;
        settle().await;
        assert_eq!(last_sent(&s.delivery, &job), None);

        bring_online(&s.fleet);
        let mut previous = None;
        for k in 2..=4u32 {
            tokio::time::advance(REPUBLISH - MS).await;
            settle().await;
            assert_eq!(last_sent(&s.delivery, &job), previous, "before tick {k}");
            tokio::time::advance(MS).await;
            settle().await;
            previous = Some(t0 + REPUBLISH * k);
            assert_eq!(last_sent(&s.delivery, &job), previous, "tick {k}");
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    fn cancel_sent(delivery: &Delivery, job: &JobId) -> Option<Instant> {
        delivery.lock_cancels().get(job).copied()
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_queued_job_is_never_sent_but_its_cancel_is_until_the_grace_ends() {
        let s = setup();
        let lifetime = Duration::from_secs(600);
        let deadline = s.start + chrono::Duration::from_std(lifetime).unwrap();
        let job = queue(&s.store, "j1", s.start, deadline);
        s.store.cancel_job(&job, s.start).unwrap();

        // Offline: nothing goes out.
        s.delivery.sweep().await.unwrap();
        assert_eq!(last_sent(&s.delivery, &job), None);
        assert_eq!(cancel_sent(&s.delivery, &job), None);

        // Online: the cancel goes out, once per interval; the job never.
        bring_online(&s.fleet);
        let t0 = s.delivery.clock.instant();
        s.delivery.sweep().await.unwrap();
        assert_eq!(cancel_sent(&s.delivery, &job), Some(t0));
        tokio::time::advance(REPUBLISH - MS).await;
        s.delivery.sweep().await.unwrap();
        assert_eq!(cancel_sent(&s.delivery, &job), Some(t0));
        tokio::time::advance(MS).await;
        s.delivery.sweep().await.unwrap();
        assert_eq!(cancel_sent(&s.delivery, &job), Some(t0 + REPUBLISH));
        assert_eq!(
            last_sent(&s.delivery, &job),
            None,
            "a cancelled job is never sent"
        );
        assert_eq!(s.delivery.send_pending(&kiosk()).unwrap(), 0);
        assert_eq!(state(&s.store, &job), JobState::Cancelled);

        // Never answered: dropped when the grace ends, still cancelled.
        tokio::time::advance(lifetime + GRACE).await;
        s.delivery.sweep().await.unwrap();
        assert!(!s.store.cancel_pending(&kiosk(), &job).unwrap());
        assert_eq!(cancel_sent(&s.delivery, &job), None);
        assert_eq!(state(&s.store, &job), JobState::Cancelled);
    }

    /// Lets spawned tasks run what is due at the current (paused) instant.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
}
