//! Commands to a kiosk (`kiosk/<id>/cmd`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{JobId, V1};

/// A command, published QoS 1 on `kiosk/<id>/cmd`.
///
/// ```json
/// {"v":1,"kind":"test_print","printer":"receipt"}
/// {"v":1,"kind":"ping"}
/// {"v":1,"kind":"cancel","job_id":"01J9..."}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Command {
    /// Wire version, always 1.
    pub v: V1,
    /// What to do.
    #[serde(flatten)]
    pub kind: CommandKind,
}

/// The commands a kiosk understands, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandKind {
    /// Print a test page on `printer`.
    TestPrint {
        /// Logical printer name.
        printer: String,
    },
    /// Re-publish the kiosk status now.
    Ping,
    /// Cancel the job `job_id`: unless its write to the printer started,
    /// the kiosk records the cancel durably (also for a job that has not
    /// arrived yet, which it then refuses when it does) and reports the
    /// job `cancelled` on `kiosk/<id>/print/result`; otherwise it reports
    /// the job's state and the job goes on to `printed` or `failed`.
    /// Sent by the gateway for `POST /v1/print-jobs/{job_id}/cancel`, again
    /// on every republish until the kiosk answers.
    Cancel {
        /// The job to cancel.
        job_id: JobId,
    },
}
