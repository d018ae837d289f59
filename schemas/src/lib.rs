//! Shared vocabulary of kiosk-fleet: topic names and the JSON messages that
//! travel on them (records kept in sled are `kiosk-store`'s).
//!
//! - [`topic`]: [`Topic`] and its constructors, one per topic of DESIGN.md.
//! - [`print`], [`status`], [`cash`], [`command`]: one file per message family.
//! - [`wire`]: JSON encode/decode with errors that name the offending field.
//!
//! Every wire message carries `"v": 1` ([`V1`]), unknown fields are ignored,
//! money is an integer count of minor units plus an ISO 4217 code, and times
//! are RFC 3339 UTC. This crate has no async runtime and no I/O.

pub mod backoff;
pub mod cash;
pub mod command;
pub mod id;
pub mod log_limit;
pub mod mqtt_url;
pub mod print;
pub mod schema;
pub mod secret;
pub mod settings;
pub mod status;
pub mod topic;
pub mod version;
pub mod wire;

pub use cash::{CashAck, CashAction, CashControl, CashEvent, CashState, CreditKind};
pub use command::{Command, CommandKind};
pub use id::{Currency, IdError, JobId, KioskId};
pub use mqtt_url::MqttUrl;
pub use print::{
    Barcode, BarcodeFormat, Document, ImageWidth, JobResult, JobState, PrintJob, RawDocument,
    Receipt, ReceiptImage, ReceiptItem, ReceiptLine, ResultState, TextDocument, Ticket,
    TicketAlign, TicketItem, TicketLine, TicketText,
};
pub use secret::Secret;
pub use status::{CashDeviceStatus, KioskStatus, PaperStatus, Presence, PrinterStatus};
pub use topic::{Topic, TopicKind};
pub use version::V1;

/// Timestamps on the wire and in stores: UTC, serialized as RFC 3339.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
