//! Cash credits (`kiosk/<id>/cash`), their acknowledgement
//! (`kiosk/<id>/cash/ack`) and acceptor control (`kiosk/<id>/cash/control`).
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
    /// The payment session that was enabled on the kiosk when the credit was
    /// read, if any; informative, the cloud assigns credits itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
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
