//! Printers reached through a path: a character device such as
//! `/dev/usb/lp0` (USB printer class), any other character device, or a
//! regular file (handy for tests and for looking at the bytes).
//!
//! Status: a USB printer (`usblp`) tells its paper and online state through
//! the `LPGETSTATUS` ioctl (`linux/lp.h`), which the kernel answers with the
//! printer's GET_PORT_STATUS byte (USB printer class 1.1, 4.2.2): the
//! parallel-port bits `LP_POUTPA` (paper out), `LP_PSELECD` (selected,
//! online) and `LP_PERRORP` (no error, active low). Paths that cannot
//! answer it (a regular file, a pipe, `/dev/null`: `ENOTTY`) stay one-way:
//! paper unknown, ready when the path can be written. The cover is never
//! reported open: the port bits cannot tell it from other faults. The
//! read side (`DLE EOT` answers) is not used: see [`PortStatus`].
//!
//! The path is opened for appending on every job. A regular file is created
//! when its parent directory exists; nothing is ever created under `/dev`,
//! where a missing node means the printer is unplugged or off.
//!
//! Writes are not bounded by a timeout: std has none for files, and the
//! kernel's printer driver answers for the device. A job is handed over
//! when its write and `fsync` returned; a device without `fsync` (`EINVAL`,
//! as `usblp` and `/dev/null`) has it when the write returned.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiosk_schemas::{PaperStatus, PrinterStatus};

use super::{PrinterDriver, PrinterError, Progress, not_ready, write_counted};

pub use kiosk_lp::{LP_PERRORP, LP_POUTPA, LP_PSELECD, LPGETSTATUS};

/// Reads the port status of an open printer device: the seam between the
/// status logic ([`status_from_port`]) and the kernel ([`LpGetStatus`]),
/// so the logic is tested with a stub.
///
/// Only the ioctl is used, not `DLE EOT` on the device's read side: many
/// USB receipt printers have no read endpoint or answer late, a `usblp`
/// read blocks without `O_NONBLOCK` and `poll`, and the answer bytes can
/// mix with automatic status the printer sends. The port bits are enough
/// to hold jobs while paper is out or the printer is offline.
pub trait PortStatus: std::fmt::Debug + Send + Sync + 'static {
    /// The status bits (`LP_*`) of `file`.
    ///
    /// # Errors
    /// The operating system's error; `ENOTTY` (or `EINVAL`) when `file` is
    /// not a printer port.
    fn read(&self, file: &File) -> io::Result<i32>;
}

/// The real [`PortStatus`]: the `LPGETSTATUS` ioctl ([`kiosk_lp::get_status`];
/// off Linux every path answers `Unsupported`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LpGetStatus;

impl PortStatus for LpGetStatus {
    fn read(&self, file: &File) -> io::Result<i32> {
        kiosk_lp::get_status(file)
    }
}

/// What the port status bits say, or `None` when the device cannot tell
/// (the ioctl failed: `ENOTTY` on a regular file, pipe or `/dev/null`, or an
/// I/O error from a printer that does not answer GET_PORT_STATUS), so the
/// caller falls back to one-way status.
///
/// `None` too when paper-out, select and error are all low, which printers
/// that do not implement GET_PORT_STATUS answer.
///
/// Not ready when paper is out, the printer is not selected (offline) or it
/// signals an error (`LP_PERRORP` low: cover open, cutter jam, ...), the
/// first of these named in `error`. Paper is `ok` or `out`: the port has no
/// near-end bit.
pub fn status_from_port(reading: io::Result<i32>) -> Option<PrinterStatus> {
    let bits = match reading {
        Ok(bits) => bits,
        Err(e) => {
            tracing::trace!(error = %e, "no port status; paper state unknown");
            return None;
        }
    };
    // All three lines low ("deselected, in error, paper present") is what
    // a printer that does not really implement GET_PORT_STATUS answers;
    // taking it at its word would hold its jobs forever. Treated as no
    // answer, like a failed ioctl.
    if bits & (LP_POUTPA | LP_PSELECD | LP_PERRORP) == 0 {
        tracing::trace!(bits, "port status says nothing usable; paper state unknown");
        return None;
    }
    let paper_out = bits & LP_POUTPA != 0;
    let online = bits & LP_PSELECD != 0;
    let fault = bits & LP_PERRORP == 0;
    let error = if paper_out {
        Some("paper out")
    } else if !online {
        Some("printer offline (not selected)")
    } else if fault {
        Some("printer reports an error (cover open or another fault)")
    } else {
        None
    };
    Some(PrinterStatus {
        ready: error.is_none(),
        online,
        paper: if paper_out {
            PaperStatus::Out
        } else {
            PaperStatus::Ok
        },
        cover_open: false,
        error: error.map(str::to_owned),
    })
}

/// Writes jobs to a device node or file.
#[derive(Debug, Clone)]
pub struct DeviceDriver {
    path: PathBuf,
    port: Arc<dyn PortStatus>,
}

impl DeviceDriver {
    /// A driver for `path` reading status with [`LpGetStatus`]; nothing is
    /// opened yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_port_status(path, Arc::new(LpGetStatus))
    }

    /// A driver for `path` reading the port status with `port` (tests give
    /// a stub).
    pub fn with_port_status(path: impl Into<PathBuf>, port: Arc<dyn PortStatus>) -> Self {
        DeviceDriver {
            path: path.into(),
            port,
        }
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A missing path may be created only when it is a plain file path.
    fn may_create(&self) -> bool {
        !self.path.starts_with("/dev")
    }

    fn open(&self) -> io::Result<File> {
        OpenOptions::new()
            .append(true)
            .create(self.may_create())
            .open(&self.path)
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> PrinterError {
        PrinterError::Io {
            action,
            target: self.describe(),
            source,
        }
    }

    /// Whether a job written now would arrive: `Err` with the reason when
    /// not; `Ok` with the path opened for writing when it was opened (to
    /// read its port status), `Ok(None)` when it would be created or is a
    /// FIFO.
    fn writable(&self) -> Result<Option<File>, String> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.is_dir() => Err(format!("{} is a directory", self.path.display())),
            // Opening a FIFO for writing blocks until a reader shows up;
            // its existence is all that can be checked without waiting.
            Ok(meta) if is_fifo(&meta) => Ok(None),
            // Opening is the real permission check (and the usblp driver
            // refuses to open a printer that is gone).
            Ok(_) => self
                .open()
                .map(Some)
                .map_err(|e| format!("cannot open {} for writing: {e}", self.path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.may_create() {
                    return Err(format!(
                        "{} does not exist (printer unplugged or off?)",
                        self.path.display()
                    ));
                }
                let parent = match self.path.parent() {
                    Some(p) if p.as_os_str().is_empty() => Path::new("."),
                    Some(p) => p,
                    None => {
                        return Err(format!("{} has no parent directory", self.path.display()));
                    }
                };
                if parent.is_dir() {
                    Ok(None)
                } else {
                    Err(format!(
                        "neither {} nor its directory exists",
                        self.path.display()
                    ))
                }
            }
            Err(e) => Err(format!("cannot inspect {}: {e}", self.path.display())),
        }
    }
}

#[cfg(unix)]
fn is_fifo(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_fifo()
}

#[cfg(not(unix))]
fn is_fifo(_meta: &std::fs::Metadata) -> bool {
    false
}

impl PrinterDriver for DeviceDriver {
    fn describe(&self) -> String {
        format!("device {}", self.path.display())
    }

    /// Not ready when the path cannot be written now (missing device
    /// node, directory, no permission). Otherwise what the port status
    /// says ([`status_from_port`]: paper, online, error) when the device
    /// answers `LPGETSTATUS`, else ready and online with paper unknown.
    /// The cover is never reported open.
    fn status(&mut self) -> PrinterStatus {
        let one_way = || PrinterStatus {
            ready: true,
            online: true,
            paper: PaperStatus::Unknown,
            cover_open: false,
            error: None,
        };
        match self.writable() {
            Ok(Some(file)) => match status_from_port(self.port.read(&file)) {
                Some(mut status) => {
                    if let Some(error) = status.error.take() {
                        status.error = Some(format!("{}: {error}", self.describe()));
                    }
                    status
                }
                None => one_way(),
            },
            Ok(None) => one_way(),
            Err(reason) => not_ready(reason),
        }
    }

    /// Opens for appending, writes every byte, flushes, and `fsync`s.
    fn hand_over(&mut self, bytes: &[u8], progress: &Progress) -> Result<(), PrinterError> {
        let mut file = self.open().map_err(|e| self.io_error("open", e))?;
        write_counted(&mut file, bytes, progress)
            .and_then(|()| file.flush())
            .map_err(|e| self.io_error("write to", e))?;
        match file.sync_all() {
            Ok(()) => {}
            // Character devices without fsync: the write returning is all
            // there is.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
            Err(e) => return Err(self.io_error("sync", e)),
        }
        tracing::debug!(target_path = %self.path.display(), bytes = bytes.len(), "job handed over");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A [`PortStatus`] that answers what the test set last.
    #[derive(Debug)]
    struct StubPort(Mutex<io::Result<i32>>);

    impl StubPort {
        fn new(reading: io::Result<i32>) -> Arc<Self> {
            Arc::new(StubPort(Mutex::new(reading)))
        }
        fn set(&self, reading: io::Result<i32>) {
            *self.0.lock().unwrap() = reading;
        }
    }

    impl PortStatus for StubPort {
        fn read(&self, _file: &File) -> io::Result<i32> {
            match &*self.0.lock().unwrap() {
                Ok(bits) => Ok(*bits),
                Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(5))),
            }
        }
    }

    const OK_BITS: i32 = LP_PSELECD | LP_PERRORP;

    #[test]
    fn port_status_bits_map_to_printer_status() {
        use PaperStatus::{Ok as P_OK, Out};
        // (bits, ready, online, paper, error contains)
        let table: &[(i32, bool, bool, PaperStatus, Option<&str>)] = &[
            (OK_BITS, true, true, P_OK, None),
            // Busy and ack lines do not matter.
            (OK_BITS | 0x80 | 0x40, true, true, P_OK, None),
            (OK_BITS | LP_POUTPA, false, true, Out, Some("paper out")),
            // An Epson out of paper: PE high, deselected, nERROR low.
            (LP_POUTPA, false, false, Out, Some("paper out")),
            (LP_PERRORP, false, false, P_OK, Some("offline")),
            (LP_PSELECD, false, true, P_OK, Some("error")),
        ];
        // All three lines low: no usable answer, as when the ioctl fails.
        assert_eq!(status_from_port(Ok(0)), None);
        assert_eq!(status_from_port(Ok(0x80 | 0x40)), None);
        for &(bits, ready, online, paper, error) in table {
            let status = status_from_port(Ok(bits)).unwrap();
            assert_eq!(
                (status.ready, status.online, status.paper, status.cover_open),
                (ready, online, paper, false),
                "bits {bits:#04x}: {status:?}"
            );
            match error {
                None => assert_eq!(status.error, None, "bits {bits:#04x}"),
                Some(e) => assert!(
                    status.error.as_deref().unwrap_or("").contains(e),
                    "bits {bits:#04x}: {status:?}"
                ),
            }
        }
        // Unsupported (plain file, pipe) or unanswered: the caller falls back.
        assert_eq!(
            status_from_port(Err(io::Error::from_raw_os_error(libc_enotty()))),
            None
        );
        assert_eq!(status_from_port(Err(io::Error::from_raw_os_error(5))), None);
    }

    /// ENOTTY on Linux (asm-generic/errno-base.h).
    fn libc_enotty() -> i32 {
        25
    }

    #[test]
    fn paper_out_holds_the_job_until_the_printer_has_paper_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lp0");
        std::fs::write(&path, b"").unwrap();
        let port = StubPort::new(Ok(LP_POUTPA));
        let mut driver = DeviceDriver::with_port_status(&path, port.clone());

        // The worker prints only when `ready` (worker.rs, step 2).
        let status = driver.status();
        assert!(!status.ready, "{status:?}");
        assert_eq!(status.paper, PaperStatus::Out);
        let error = status.error.unwrap();
        assert!(
            error.contains("paper out") && error.contains("lp0"),
            "{error}"
        );

        port.set(Ok(OK_BITS));
        let status = driver.status();
        assert!(status.ready && status.online, "{status:?}");
        assert_eq!(status.paper, PaperStatus::Ok);
        driver
            .hand_over(b"\x1b@receipt\n", &Progress::default())
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\x1b@receipt\n");
    }

    /// The real ioctl on real nodes that are not printer ports (no usblp
    /// device or CUSE can be made here): ENOTTY, so paper stays unknown
    /// and the path is ready as before.
    #[cfg(target_os = "linux")]
    #[test]
    fn real_ioctl_on_a_file_and_dev_null_is_unsupported_and_unknown() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = LpGetStatus.read(file.as_file()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc_enotty()), "{err}");
        for path in [file.path(), Path::new("/dev/null")] {
            let status = DeviceDriver::new(path).status();
            assert!(status.ready && status.online, "{status:?}");
            assert_eq!(status.paper, PaperStatus::Unknown);
        }
    }

    #[test]
    fn writes_append_to_a_file_created_on_first_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("printer.bin");
        let mut driver = DeviceDriver::new(&path);
        assert_eq!(driver.describe(), format!("device {}", path.display()));

        let status = driver.status();
        assert!(status.ready && status.online, "{status:?}");
        assert_eq!(status.paper, PaperStatus::Unknown);

        let progress = Progress::default();
        driver.hand_over(b"\x1b@first\n", &progress).unwrap();
        driver.hand_over(b"second\n", &progress).unwrap();
        driver.finish_job().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\x1b@first\nsecond\n");
        assert_eq!(progress.get(), 15);
        assert!(driver.status().ready);
    }

    #[test]
    fn missing_directory_is_not_ready_and_write_fails_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("lp0");
        let mut driver = DeviceDriver::new(&path);

        let status = driver.status();
        assert!(!status.ready && !status.online);
        assert!(status.error.unwrap().contains("nope"));

        let err = driver
            .hand_over(b"x", &Progress::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot open device") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn a_directory_is_not_a_printer() {
        let dir = tempfile::tempdir().unwrap();
        let status = DeviceDriver::new(dir.path()).status();
        assert!(!status.ready);
        assert!(status.error.unwrap().contains("is a directory"));
    }

    #[test]
    fn missing_device_nodes_are_never_created() {
        let mut driver = DeviceDriver::new("/dev/usb/kiosk-test-no-such-lp");
        let status = driver.status();
        assert!(!status.ready);
        assert!(status.error.unwrap().contains("unplugged"));
        assert!(driver.hand_over(b"x", &Progress::default()).is_err());
        assert!(!Path::new("/dev/usb/kiosk-test-no-such-lp").exists());
    }

    #[cfg(unix)]
    #[test]
    fn character_devices_work() {
        let mut driver = DeviceDriver::new("/dev/null");
        assert!(driver.status().ready);
        let progress = Progress::default();
        driver.hand_over(b"\x1b@hello\n", &progress).unwrap();
        assert_eq!(progress.get(), 8);
    }
}
