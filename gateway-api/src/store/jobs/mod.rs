//! Print jobs: their records (tree `jobs`), their wire bytes (`payloads`),
//! the index of unfinished jobs (`pending`) and idempotency keys.
//!
//! - [`records`]: the job records, their versions, reading them, converting
//!   older ones when the store opens.
//! - [`creation`]: new jobs, from HTTP (with idempotency) and from MQTT.
//! - [`reports`]: states reported by kiosks and by the gateway's expiry.
//! - [`pending`]: the index of unfinished jobs.
//! - [`cancels`]: cancels, and the index of those the kiosk has not
//!   answered (`cancels`).
//! - [`retention`]: purging finished jobs.

mod cancels;
mod creation;
mod pending;
mod records;
mod reports;
mod retention;
#[cfg(test)]
mod tests;

pub use cancels::{CANCELLED_QUEUED, CancelOutcome};
pub use creation::{CreateOutcome, MqttJobOutcome};
pub use records::{ByteCounts, JobRecord, Origin, Transition};
pub use reports::{ReportOutcome, Source};

pub(super) use records::decode_job;
