//! Commands to a kiosk (`kiosk/<id>/cmd`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::V1;

/// A command, published QoS 1 on `kiosk/<id>/cmd`.
///
/// ```json
/// {"v":1,"kind":"test_print","printer":"receipt"}
/// {"v":1,"kind":"ping"}
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
}
