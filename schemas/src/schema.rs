//! JSON Schema (draft 2020-12) of every wire message, for backends in other
//! languages. The files in `schemas/json/` are generated from these types and
//! a test keeps them current: run `UPDATE_SCHEMAS=1 cargo test -p
//! kiosk-schemas` after changing a message type.

use schemars::schema_for;

use crate::{
    CashAck, CashControl, CashEvent, CashState, Command, JobResult, KioskStatus, PrintJob,
};

/// `(file name, schema)` for every wire message, in topic-table order.
pub fn wire_schemas() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("print-job.schema.json", schema_for!(PrintJob).to_value()),
        ("job-result.schema.json", schema_for!(JobResult).to_value()),
        ("cash-event.schema.json", schema_for!(CashEvent).to_value()),
        ("cash-ack.schema.json", schema_for!(CashAck).to_value()),
        (
            "cash-control.schema.json",
            schema_for!(CashControl).to_value(),
        ),
        ("cash-state.schema.json", schema_for!(CashState).to_value()),
        (
            "kiosk-status.schema.json",
            schema_for!(KioskStatus).to_value(),
        ),
        ("command.schema.json", schema_for!(Command).to_value()),
    ]
}
