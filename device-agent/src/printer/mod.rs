//! Printer drivers: where a job's bytes go and how readiness is read.
//!
//! Drivers block; the agent calls them from `spawn_blocking`, moving the
//! driver into the closure and getting it back. They connect or open per
//! call, so [`open`] never fails and a printer that was off at start-up
//! works as soon as it is back.
//!
//! A job goes out in two calls (DESIGN.md, "Print jobs", step 3):
//! [`PrinterDriver::hand_over`] returns once the printer has every byte and
//! the end of the job, and the worker records the job `printed` (flushed)
//! right then; [`PrinterDriver::finish_job`] does what the link does after
//! a job (tcp: wait for the printer to close), and its outcome is printer
//! status, never the job's.
//!
//! - [`device::DeviceDriver`]: a character device (`/dev/usb/lp0`,
//!   `/dev/ttyUSB0`) or a file; status by `DLE EOT` where the device
//!   answers on its read side, else a USB printer's `LPGETSTATUS` ioctl,
//!   else one-way (paper unknown).
//! - [`tcp::TcpDriver`]: raw TCP (port 9100); two-way, status read with
//!   `DLE EOT`.
//! - [`cups::CupsDriver`]: a CUPS queue, printed raw over IPP; a job is
//!   handed over once CUPS reports it completed (paper unknown).

pub mod cups;
pub mod device;
mod realtime;
pub mod tcp;
pub mod usb;

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use kiosk_schemas::PrinterStatus;
use tokio::sync::watch;

use crate::config::{DriverKind, PrinterConfig};

/// Largest piece written in one call, so [`Progress`] moves during a big
/// job (images, many copies), in bytes.
pub const CHUNK_BYTES: usize = 16 * 1024;

/// Longest wait for a device's `DLE EOT` answer (2 s): the printer's
/// `timeout` when shorter. A device without a read side costs this once a
/// minute.
const MAX_ANSWER_WAIT: Duration = Duration::from_secs(2);

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

    /// Hands one job's bytes over completely, and returns as soon as that
    /// is done: `tcp` every byte written and the write side shut down,
    /// `device` every byte written and `fsync` returned, `cups` the CUPS
    /// job `completed` (its `progress` moves once, to the job's size, when
    /// CUPS starts sending the job). Bytes go out in
    /// pieces of at most [`CHUNK_BYTES`]; `progress` counts each piece once
    /// the operating system took it.
    ///
    /// # Errors
    /// [`PrinterError`] naming the target when it cannot be opened or
    /// reached, or a write fails or times out (each piece waits at most
    /// the configured timeout). The bytes counted in `progress` may then
    /// have printed; [`PrinterError::nothing_written`] tells when none
    /// can have.
    fn hand_over(&mut self, bytes: &[u8], progress: &Progress) -> Result<(), PrinterError>;

    /// After a successful [`PrinterDriver::hand_over`], once the job is
    /// recorded: ends the job on the link (`tcp`: waits up to 2 s, at most
    /// the timeout, for the printer to close its side). Does nothing when
    /// no job was handed over since the last call.
    ///
    /// # Errors
    /// [`PrinterError`] when the link failed after the job (for example
    /// the printer reset the connection). The job stays printed: this is
    /// about the printer, for its status.
    fn finish_job(&mut self) -> Result<(), PrinterError> {
        Ok(())
    }
}

/// Bytes of the job being handed over that the operating system took so
/// far. Shared between the driver, writing on a blocking thread, and the
/// worker, which records the count in the inbox; cheap to clone.
#[derive(Debug, Clone)]
pub struct Progress {
    written: Arc<watch::Sender<u64>>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            written: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Progress {
    /// Counts `n` more bytes written.
    pub fn add(&self, n: u64) {
        self.written.send_modify(|w| *w += n);
    }

    /// Bytes written so far.
    pub fn get(&self) -> u64 {
        *self.written.borrow()
    }

    /// A receiver that wakes on every change of the count.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }
}

/// Writes all of `bytes` to `out` in pieces of at most [`CHUNK_BYTES`],
/// adding each piece written to `progress`.
fn write_counted(out: &mut impl Write, bytes: &[u8], progress: &Progress) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let piece = &rest[..rest.len().min(CHUNK_BYTES)];
        match out.write(piece) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                progress.add(n as u64);
                rest = &rest[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The driver for a configured printer. Nothing is opened or connected
/// yet: that happens on each [`PrinterDriver::status`] and
/// [`PrinterDriver::hand_over`] call.
pub fn open(config: &PrinterConfig) -> Box<dyn PrinterDriver> {
    match config.driver {
        DriverKind::Device => Box::new(
            device::DeviceDriver::new(&config.address)
                .with_answer_wait(config.timeout.min(MAX_ANSWER_WAIT)),
        ),
        DriverKind::Tcp => Box::new(tcp::TcpDriver::new(&config.address, config.timeout)),
        DriverKind::Cups => Box::new(cups::CupsDriver::new(
            config.queue.as_deref().unwrap_or_default(),
            config.server.as_deref(),
            config.timeout,
        )),
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
    /// CUPS refused the job, did not answer, ended it without completing
    /// it, or it made no progress within the timeout (then it was
    /// cancelled).
    #[error("{target}: {reason}")]
    Cups {
        /// The queue, e.g. `cups kitchen at localhost:631`.
        target: String,
        /// What happened, with the CUPS job id and state when known.
        reason: String,
        /// True only when CUPS cannot print the job: no job was created
        /// (unreachable, refused), or the agent's own cancel after the
        /// timeout held before CUPS ever started processing it. A job
        /// that CUPS or an operator ended is false: it is not retried.
        nothing_written: bool,
    },
    /// `escpos` could not build a command.
    #[error("cannot build ESC/POS command: {0}")]
    Escpos(#[from] escpos::errors::PrinterError),
}

impl PrinterError {
    /// True when the error happened before any byte of the job could leave:
    /// the address did not resolve, or the device/connection could not be
    /// opened, or (cups) no CUPS job exists that could still print. Such a job did not print and may wait for the printer
    /// instead of failing. (The worker also checks that [`Progress`] is 0.)
    pub fn nothing_written(&self) -> bool {
        match self {
            PrinterError::Resolve { .. } | PrinterError::Escpos(_) => true,
            PrinterError::Io { action, .. } | PrinterError::Timeout { action, .. } => {
                matches!(*action, "connect to" | "open")
            }
            PrinterError::Status { .. } => false,
            PrinterError::Cups {
                nothing_written, ..
            } => *nothing_written,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most 5 bytes per call, fails on the third call.
    struct Flaky {
        calls: usize,
        got: Vec<u8>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            match self.calls {
                2 => Err(io::ErrorKind::Interrupted.into()),
                4 => Err(io::ErrorKind::BrokenPipe.into()),
                _ => {
                    let n = buf.len().min(5);
                    self.got.extend_from_slice(&buf[..n]);
                    Ok(n)
                }
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn progress_counts_what_was_written_before_an_error() {
        let progress = Progress::default();
        let mut seen = progress.subscribe();
        let mut out = Flaky {
            calls: 0,
            got: Vec::new(),
        };
        let err = write_counted(&mut out, b"0123456789abcdef", &progress).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(out.got, b"0123456789");
        assert_eq!(progress.get(), 10);
        assert!(seen.has_changed().unwrap());
        assert_eq!(*seen.borrow_and_update(), 10);

        let progress = Progress::default();
        let big = vec![7u8; 3 * CHUNK_BYTES + 1];
        let mut sink = Vec::new();
        write_counted(&mut sink, &big, &progress).unwrap();
        assert_eq!((sink, progress.get()), (big, 3 * CHUNK_BYTES as u64 + 1));
    }
}
