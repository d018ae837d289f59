//! Printer drivers: where a job's bytes go and how readiness is read.
//!
//! Drivers block; the agent calls them from `spawn_blocking`, moving the
//! driver into the closure and getting it back. They connect or open per
//! call, so [`open`] never fails and a printer that was off at start-up
//! works as soon as it is back.
//!
//! - [`device::DeviceDriver`]: a character device (`/dev/usb/lp0`) or a
//!   file; one-way, so paper state is unknown.
//! - [`tcp::TcpDriver`]: raw TCP (port 9100); two-way, status read with
//!   `DLE EOT`.

pub mod device;
pub mod tcp;

use std::io;
use std::time::Duration;

use kiosk_schemas::PrinterStatus;

use crate::config::{DriverKind, PrinterConfig};

/// A way to reach one printer.
pub trait PrinterDriver: Send + Sync + 'static {
    /// Human-readable target, e.g. `"tcp 10.0.0.5:9100"` or
    /// `"device /dev/usb/lp0"`; used in logs and error messages.
    fn describe(&self) -> String;

    /// Reads readiness now. Blocks for at most about the configured timeout
    /// per step (connect, each status answer) on two-way links.
    ///
    /// Never fails: an unreachable or silent printer is `ready: false,
    /// online: false` with `error` saying why.
    fn status(&mut self) -> PrinterStatus;

    /// Writes one job's bytes completely.
    ///
    /// # Errors
    /// [`PrinterError`] naming the target when it cannot be opened or
    /// reached, or a write fails or times out. The bytes may then have been
    /// printed in part.
    fn write_job(&mut self, bytes: &[u8]) -> Result<(), PrinterError>;
}

/// The driver for a configured printer. Nothing is opened or connected
/// yet: that happens on each [`PrinterDriver::status`] and
/// [`PrinterDriver::write_job`] call.
pub fn open(config: &PrinterConfig) -> Box<dyn PrinterDriver> {
    match config.driver {
        DriverKind::Device => Box::new(device::DeviceDriver::new(&config.address)),
        DriverKind::Tcp => Box::new(tcp::TcpDriver::new(&config.address, config.timeout)),
    }
}

/// Why a printer could not be reached or written to. Messages name the
/// target as [`PrinterDriver::describe`] does.
#[derive(Debug, thiserror::Error)]
pub enum PrinterError {
    /// The `host:port` of a tcp printer did not resolve to any address.
    #[error("cannot resolve printer address {address:?}: {source}")]
    Resolve {
        /// The configured address, with the default port added.
        address: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// Opening, connecting, writing or reading failed.
    #[error("cannot {action} {target}: {source}")]
    Io {
        /// What was tried: `"open"`, `"connect to"`, `"write to"`, ...
        action: &'static str,
        /// The printer, e.g. `tcp 10.0.0.5:9100`.
        target: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// A connect, write or status read did not finish within the timeout.
    #[error("timed out after {} ms trying to {action} {target}", timeout.as_millis())]
    Timeout {
        /// What was tried: `"connect to"`, `"write to"`, `"read status from"`.
        action: &'static str,
        /// The printer, e.g. `tcp 10.0.0.5:9100`.
        target: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The printer answered a `DLE EOT` status request with something that
    /// is not a status byte, or closed the connection instead.
    #[error("{target} gave no valid status: {reason}")]
    Status {
        /// The printer, e.g. `tcp 10.0.0.5:9100`.
        target: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// `escpos` could not build a command.
    #[error("cannot build ESC/POS command: {0}")]
    Escpos(#[from] escpos::errors::PrinterError),
}

impl PrinterError {
    /// True when the error happened before any byte of the job could leave:
    /// the address did not resolve, or the device/connection could not be
    /// opened. Such a job did not print and may wait for the printer
    /// instead of failing.
    pub fn nothing_written(&self) -> bool {
        match self {
            PrinterError::Resolve { .. } | PrinterError::Escpos(_) => true,
            PrinterError::Io { action, .. } | PrinterError::Timeout { action, .. } => {
                matches!(*action, "connect to" | "open")
            }
            PrinterError::Status { .. } => false,
        }
    }
}

/// A status for a printer that cannot be used now, with the reason.
fn not_ready(error: String) -> PrinterStatus {
    PrinterStatus {
        ready: false,
        online: false,
        paper: kiosk_schemas::PaperStatus::Unknown,
        cover_open: false,
        error: Some(error),
    }
}
