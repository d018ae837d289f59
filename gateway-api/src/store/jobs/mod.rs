//! Print jobs: their records (tree `jobs`), their wire bytes (`payloads`),
//! the index of unfinished jobs (`pending`), the indexes for listing
//! (`jobs_by_time`, `jobs_by_kiosk`, `jobs_by_state`) and idempotency keys.
//!
//! - [`records`]: the job records, their versions, reading them, converting
//!   older ones when the store opens.
//! - [`creation`]: new jobs, from HTTP (with idempotency) and from MQTT.
//! - [`reports`]: states reported by kiosks and by the gateway's expiry.
//! - [`pending`]: the index of unfinished jobs.
//! - [`cancels`]: cancels, and the index of those the kiosk has not
//!   answered (`cancels`).
//! - [`index`]: the indexes for listing (by time, kiosk, state).
//! - [`listing`]: pages of jobs, newest first, through those indexes.
//! - [`retention`]: purging finished jobs.

mod cancels;
mod creation;
mod index;
mod listing;
mod pending;
mod records;
mod reports;
mod retention;
#[cfg(test)]
mod tests;

pub use cancels::{CANCELLED_QUEUED, CancelOutcome};
pub use creation::{CreateOutcome, MqttJobOutcome};
pub use listing::{Cursor, JobFilter, Page};
pub use records::{ByteCounts, JobRecord, Origin, Transition};
pub use reports::{ReportOutcome, Source};

pub(super) use records::decode_job;
