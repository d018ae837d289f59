//! States reported for jobs: by the kiosk in its results, by the gateway
//! itself when a job expires.

use kiosk_schemas::{JobId, JobState, KioskId, Timestamp};
use sled::Transactional;

use super::cancels::cancel_key;
use super::index::IndexTx;
use super::pending::pending_key;
use super::records::{ByteCounts, JOB_V, JobRecord, Origin, decode_job};
use crate::events::FleetEventKind;
use crate::state::Step;
use crate::store::{Store, StoreError, abort, encode};

/// Who reports a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The kiosk, in a result.
    Kiosk,
    /// The gateway itself (expiry).
    Gateway,
}

/// Result of [`Store::apply_report`].
#[derive(Debug, Clone)]
pub enum ReportOutcome {
    /// The job moved from `from` to the record's current state.
    Applied {
        /// Previous state (`None` if the job was unknown until now).
        from: Option<JobState>,
        /// The updated record.
        record: JobRecord,
    },
    /// Nothing changed (duplicate or older report).
    Duplicate,
    /// A terminal report contradicting the recorded terminal state.
    Conflict(JobRecord),
    /// The job belongs to another kiosk; the report is ignored.
    WrongKiosk,
}

/// The `data` of `print_job.state_changed` for `rec`, which moved from
/// `from` (`null` for a job first seen in its result).
pub(super) fn state_changed(rec: &JobRecord, from: Option<JobState>) -> serde_json::Value {
    serde_json::json!({
        "job_id": rec.job_id,
        "kiosk_id": rec.kiosk_id,
        "printer": rec.printer,
        "from": from.map(JobState::as_str),
        "to": rec.state.as_str(),
        "reason": rec.reason,
    })
}

impl Store {
    /// Applies a state reported for `job_id` of `kiosk` by `source` (a
    /// kiosk's result, or the gateway's own expiry), with the byte counts
    /// of a job that failed mid-write. A report for an unknown job creates a
    /// record without content, so `GET /v1/print-jobs/{id}` can show jobs
    /// that were published straight over MQTT even when their result
    /// overtakes them.
    ///
    /// A kiosk's final state ends the job's unanswered cancel (its
    /// `cancels` entry); while the gateway's own `cancelled` is
    /// unconfirmed, the kiosk's `printed`, `failed` or `expired` replaces
    /// it ([`JobRecord::apply`]), and its `cancelled` confirms it without
    /// another transition (answered [`ReportOutcome::Duplicate`]).
    ///
    /// # Errors
    /// [`StoreError`] on storage failure.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_report(
        &self,
        kiosk: &KioskId,
        job_id: &JobId,
        reported: JobState,
        at: Timestamp,
        reason: Option<String>,
        bytes: Option<ByteCounts>,
        source: Source,
    ) -> Result<ReportOutcome, StoreError> {
        let key = job_id.as_str().as_bytes();
        let pkey = pending_key(kiosk, job_id);
        let ckey = cancel_key(kiosk, job_id);
        // It may create the record: keep creations out (before the
        // transaction, never inside it).
        let _creating = self.creating();
        let log = &self.events;
        let trees = (
            &self.jobs,
            &self.pending,
            &self.cancels,
            log.tree(),
            &self.by_time,
            &self.by_kiosk,
            &self.by_state,
        );
        let outcome = trees.transaction(
            |(jobs, pend, cancels, events, by_time, by_kiosk, by_state)| {
                let index = IndexTx {
                    by_time,
                    by_kiosk,
                    by_state,
                };
                let (mut rec, from) = match jobs.get(key)? {
                    Some(bytes) => {
                        let rec = decode_job(key, &bytes).map_err(abort)?;
                        if &rec.kiosk_id != kiosk {
                            return Ok(ReportOutcome::WrongKiosk);
                        }
                        let from = rec.state;
                        (rec, Some(from))
                    }
                    None => (
                        JobRecord {
                            job_id: job_id.clone(),
                            kiosk_id: kiosk.clone(),
                            printer: String::new(),
                            copies: 1,
                            created_at: at,
                            expires_at: None,
                            state: JobState::Queued,
                            reason: None,
                            history: Vec::new(),
                            origin: Origin::Mqtt,
                            reprint_of: None,
                            accepted_at: chrono::Utc::now(),
                            gateway_expired: false,
                            bytes: None,
                        },
                        None,
                    ),
                };
                let cancel_asked = cancels.get(ckey.as_slice())?.is_some();
                let answered = source == Source::Kiosk && reported.is_terminal();
                if cancel_asked && answered {
                    cancels.remove(ckey.as_slice())?;
                }
                let unconfirmed = cancel_asked && rec.state == JobState::Cancelled;
                match rec.apply(reported, at, reason.clone(), bytes, source, unconfirmed) {
                    Step::Advance(_) => {}
                    Step::Duplicate => return Ok(ReportOutcome::Duplicate),
                    Step::Conflict => return Ok(ReportOutcome::Conflict(rec)),
                }
                let bytes = encode(JOB_V, job_id.as_str(), &rec).map_err(abort)?;
                jobs.insert(key, bytes)?;
                match from {
                    Some(from) => index.moved(from, &rec)?,
                    None => index.insert(&rec)?,
                }
                if rec.is_settled() {
                    pend.remove(pkey.as_slice())?;
                }
                let kind = FleetEventKind::PrintJobStateChanged.name();
                log.append(events, kind, Some(kiosk), state_changed(&rec, from))?;
                Ok(ReportOutcome::Applied { from, record: rec })
            },
        )?;
        if let ReportOutcome::Applied { from, record } = &outcome {
            self.counts.moved(*from, record.state);
        }
        Ok(outcome)
    }
}
