//! Cash payments on the gateway side (DESIGN.md, "Cash credits", steps 4-5).
//!
//! A payment session belongs to one kiosk. Its states:
//!
//! ```text
//!            credit reaches amount_due              kiosk confirmed + credits held
//!   open ─────────────────────────────► paid ─────────────────────────────► paid, final (settled)
//!     │
//!     │ POST .../cancel (202)                        kiosk confirmed + credits held
//!     └──────────────────────────────► cancelling ─────────────────────────► cancelled (final)
//! ```
//!
//! Ending acceptance is two-phase: the gateway sends `disable(S)`, the
//! kiosk confirms on `cash/state` with `last_seq`, the last outbox seq it
//! assigned to a credit of `S`; the session's totals are *final* once the
//! gateway holds every credit of that outbox up to `last_seq` (its
//! contiguous watermark). Until then `GET` shows the totals so far
//! (`change_due` when paid, `refund_due` when cancelling).
//!
//! A credit that carries a session id goes to that session whatever its
//! state: while `open` it counts towards `amount_due`; once `paid` it adds
//! to `change_due`, once `cancelling`/`cancelled` to `refund_due` (a *late*
//! credit). Only credits taken with no session, or naming a session the
//! gateway cannot apply them to, are *unassigned*; an operator assigns or
//! refunds those through the API.
//!
//! - this module, pure: `session.rs`, the session record and its state
//!   machine; `credit.rs`, the credit record, where an incoming credit goes
//!   and how an unassigned one is resolved; `view.rs`, how the API, event
//!   streams and webhooks show both; `control.rs`, the `cash/control`
//!   messages a kiosk must get;
//! - [`store`]: the sled trees and the exactly-once application of credits;
//! - [`live`]: fan-out of session events to Server-Sent-Event streams;
//! - [`webhooks`]: durable, signed, retried delivery of events to the
//!   backend;
//! - [`resend`]: re-sends `disable` controls while a confirmation is
//!   awaited.

mod control;
mod credit;
pub mod event;
pub mod live;
pub mod resend;
mod session;
pub mod store;
#[cfg(test)]
mod tests;
pub mod token;
mod view;
pub mod webhooks;

pub use control::{control_for, controls_for, disables_for};
pub use credit::{
    CreditRecord, Placement, Resolution, ResolutionAction, ResolveDecision, ResolveRefusal,
    UnassignedReason, decide_resolution, parse_credit_id, place_credit,
};
pub use session::{
    CancelEffect, ConfirmEffect, Confirmation, CreditEffect, CreditOrigin, CreditRefusal,
    SessionCredit, SessionRecord, SessionState, Settlement,
};
pub use view::{ConfirmationView, CreditView, ResolutionView, SessionView, exponent};
