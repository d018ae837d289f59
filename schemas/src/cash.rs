//! Cash credits (`kiosk/<id>/cash`), their acknowledgement
//! (`kiosk/<id>/cash/ack`), acceptor control (`kiosk/<id>/cash/control`)
//! and the kiosk's confirmation of it (`kiosk/<id>/cash/state`).
//!
//! Credits are numbered per kiosk by `seq`, starting at 1 and never reused;
//! the cloud applies each `(kiosk, seq)` once and acknowledges the highest
//! contiguous `seq` it has stored. `seq` counts within the kiosk's *outbox*,
//! identified by `outbox`: a random id created with the kiosk's store, so a
//! Pi whose store was wiped (new SD card) starts a new outbox and its new
//! credits are never mistaken for duplicates of old ones.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Currency, Timestamp, V1};

/// What was inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    /// A bank note (`BILL:<minor units>` from the acceptor).
    Bill,
    /// A coin (`COIN:<minor units>` from the acceptor).
    Coin,
}

/// One credit read from the acceptor, published QoS 1 on `kiosk/<id>/cash`
/// after it is stored in the kiosk's outbox.
///
/// ```json
/// {"v":1,"outbox":"8c1f0a2b3c4d5e6f","seq":42,"kind":"bill","amount":1000,"currency":"EUR","at":"2026-11-21T10:00:00Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CashEvent {
    /// Wire version, always 1.
    pub v: V1,
    /// The kiosk's outbox id (16 hex digits).
    pub outbox: String,
    /// Sequence number in the outbox, 1, 2, 3, ...; with `outbox`, the
    /// idempotency key of the credit.
    pub seq: u64,
    /// Bill or coin.
    pub kind: CreditKind,
    /// Value in minor units of `currency` (1000 = 10.00 EUR).
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: Currency,
    /// When the acceptor reported it.
    pub at: Timestamp,
    /// The payment session the acceptor was enabled for when the credit was
    /// read; `None`: it was read while acceptance was off (an *unassigned*
    /// credit). The cloud applies the credit to exactly this session,
    /// whatever that session's state by the time it arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Boot id of the acceptor board that reported it (`READY:v2:<boot
    /// id>`, 8 hex digits); `None` for a v1 board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_boot_id: Option<String>,
    /// The board's own sequence number of the credit (`CREDIT:<seq>:...`)
    /// within that boot; `None` for a v1 board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_seq: Option<u64>,
}

/// The cloud's acknowledgement, published QoS 1 on `kiosk/<id>/cash/ack`:
/// every credit of `outbox` with `seq <= up_to_seq` is stored and may be
/// deleted from the kiosk's outbox.
///
/// ```json
/// {"v":1,"outbox":"8c1f0a2b3c4d5e6f","up_to_seq":42}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CashAck {
    /// Wire version, always 1.
    pub v: V1,
    /// The outbox this acknowledges.
    pub outbox: String,
    /// Highest acknowledged sequence number.
    pub up_to_seq: u64,
}

/// Turns the kiosk's acceptor on or off, published QoS 1 on
/// `kiosk/<id>/cash/control`.
///
/// `enable` names the session the kiosk takes money for and what is still
/// due; the kiosk keeps that acceptance across its own restarts and stops
/// by itself once the credits it took for the session reach the amount due.
/// `disable` names the session whose acceptance ends (or none: stop
/// whatever is enabled). The kiosk answers every control on
/// `kiosk/<id>/cash/state` ([`CashState`]).
///
/// ```json
/// {"v":1,"action":"enable","session_id":"01J9...","amount_due":2000,"currency":"EUR"}
/// {"v":1,"action":"disable","session_id":"01J9..."}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CashControl {
    /// Wire version, always 1.
    pub v: V1,
    /// Enable or disable.
    pub action: CashAction,
    /// The payment session this is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Amount still due, in minor units (for `enable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_due: Option<i64>,
    /// ISO 4217 code of `amount_due`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
}

/// What [`CashControl`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CashAction {
    /// Send `ENABLE` to the acceptor.
    Enable,
    /// Send `DISABLE` to the acceptor.
    Disable,
}

/// The acceptance in force on a kiosk, published QoS 1 on
/// `kiosk/<id>/cash/state` after each change (flushed to the kiosk's store
/// first) and in answer to every [`CashControl`]: it confirms an `enable`,
/// and it confirms a `disable` with `last_seq`, the last outbox `seq` the
/// kiosk assigned to a credit of that session. The cloud treats the
/// session's totals as final once it holds every credit of `outbox` up to
/// `last_seq` (DESIGN.md, "Cash credits", step 5).
///
/// ```json
/// {"v":1,"outbox":"8c1f0a2b3c4d5e6f","session_id":"01J9...","enabled":false,"last_seq":42,"inserted":2500,"at":"2026-11-21T10:00:05Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CashState {
    /// Wire version, always 1.
    pub v: V1,
    /// The kiosk's outbox id (16 hex digits): `last_seq` counts in it.
    pub outbox: String,
    /// The session this state is about; `None` with `enabled: false` when
    /// the kiosk has no session at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// True while the kiosk accepts money for `session_id`; false once that
    /// acceptance ended (by a `disable`, by a newer session's `enable`, or
    /// because the kiosk itself saw the amount due reached).
    pub enabled: bool,
    /// Last outbox `seq` assigned to a credit of `session_id`; 0 when the
    /// kiosk took no credit for it.
    pub last_seq: u64,
    /// Sum of the credits the kiosk recorded for `session_id`, in minor
    /// units (informative: the cloud counts the credits themselves).
    #[serde(default)]
    pub inserted: i64,
    /// When the acceptance took this state (kiosk clock).
    pub at: Timestamp,
}
