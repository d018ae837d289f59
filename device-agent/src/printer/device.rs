//! Printers reached through a path: a character device such as
//! `/dev/usb/lp0` (USB printer class), any other character device (a
//! serial printer on `/dev/ttyUSB0`), or a regular file (handy for tests
//! and for looking at the bytes).
//!
//! Status, for character devices, from two sources:
//!
//! - **The read side:** the agent sends `DLE EOT 1`, `2` and `4` (Epson
//!   ESC/POS reference) to the device and reads the answers, as on `tcp`:
//!   online, cover open, paper near end and out. Many USB receipt printers
//!   have no usable read side; a device that does not answer within the
//!   answer wait when first asked is asked again only every
//!   [`SILENT_RETRY`] or when its node changes, so it costs one wait a
//!   minute. A device that has answered and stops is not ready until it
//!   answers again, as a silent `tcp` printer is: a printer switched off
//!   behind a serial adapter keeps its node, and writing jobs into it would
//!   lose them.
//! - **The port status:** a USB printer (`usblp`) tells its paper and online
//!   state through the `LPGETSTATUS` ioctl (`linux/lp.h`), which the kernel
//!   answers with the printer's GET_PORT_STATUS byte (USB printer class
//!   1.1, 4.2.2): the parallel-port bits `LP_POUTPA` (paper out),
//!   `LP_PSELECD` (selected, online) and `LP_PERRORP` (no error, active
//!   low). It has no near-end bit and cannot tell the cover from other
//!   faults.
//!
//! The read side's answer wins when there is one; otherwise the port
//! status; a path that answers neither (a regular file, a pipe,
//! `/dev/null`) stays one-way: paper unknown, ready when the path can be
//! written.
//!
//! A terminal (a serial printer on `/dev/ttyUSB0`) is put in raw mode on
//! every open ([`kiosk_lp::make_raw_if_tty`]), at the speed it is set to,
//! so neither job bytes nor answers are changed by the line discipline.
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
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiosk_schemas::{PaperStatus, PrinterStatus};

use super::{PrinterDriver, PrinterError, Progress, not_ready, realtime, write_counted};

pub use kiosk_lp::{LP_PERRORP, LP_POUTPA, LP_PSELECD, LPGETSTATUS};

/// How long a device has to answer each `DLE EOT` request on its read side
/// unless set ([`DeviceDriver::with_answer_wait`]): 500 ms. Printers answer
/// real-time requests within milliseconds, busy or not.
pub const ANSWER_WAIT: Duration = Duration::from_millis(500);

/// How often a device that gave no answer is asked again (60 s), in case
/// it was only slow (just switched on) the first time.
pub const SILENT_RETRY: Duration = Duration::from_secs(60);

/// How often a read waiting for an answer looks again (5 ms).
const POLL_ANSWER: Duration = Duration::from_millis(5);

/// Reads the port status of an open printer device: the seam between the
/// status logic ([`status_from_port`]) and the kernel ([`LpGetStatus`]),
/// so the logic is tested with a stub.
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

/// What the device's read side has shown so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadSide {
    /// Not asked yet, or the node changed since.
    Untried,
    /// Has answered: its status comes from there.
    Answers,
    /// Gave no answer when asked at `since`.
    Silent { since: Instant },
}

/// A non-blocking device file whose reads and writes wait up to `.1` each,
/// polling, then fail with `TimedOut`.
struct Deadline<'a>(&'a File, Duration);

impl Deadline<'_> {
    fn retry<T>(wait: Duration, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        let until = Instant::now() + wait;
        loop {
            match op() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= until {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    std::thread::sleep(POLL_ANSWER);
                }
                other => return other,
            }
        }
    }

    /// Reads and drops whatever is waiting (a late answer to an earlier
    /// request, automatic status), at most 4 KiB.
    fn drain(&mut self) {
        let mut sink = [0u8; 256];
        let mut file = self.0;
        for _ in 0..16 {
            match file.read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut file = self.0;
        Self::retry(self.1, || file.read(buf))
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut file = self.0;
        Self::retry(self.1, || file.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes jobs to a device node or file.
#[derive(Debug, Clone)]
pub struct DeviceDriver {
    path: PathBuf,
    port: Arc<dyn PortStatus>,
    read_side: ReadSide,
    /// `(rdev, inode)` of the node last seen at the path.
    node: Option<(u64, u64)>,
    answer_wait: Duration,
    silent_retry: Duration,
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
            read_side: ReadSide::Untried,
            node: None,
            answer_wait: ANSWER_WAIT,
            silent_retry: SILENT_RETRY,
        }
    }

    /// This driver waiting `wait` for each `DLE EOT` answer (the agent
    /// gives the printer's `timeout`, at most 2 s).
    pub fn with_answer_wait(self, wait: Duration) -> Self {
        DeviceDriver {
            answer_wait: wait.max(Duration::from_millis(1)),
            ..self
        }
    }

    /// This driver asking a silent device again after `retry` instead of
    /// [`SILENT_RETRY`] (tests).
    pub fn with_silent_retry(self, retry: Duration) -> Self {
        DeviceDriver {
            silent_retry: retry,
            ..self
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
        let file = OpenOptions::new()
            .append(true)
            .create(self.may_create())
            .open(&self.path)?;
        kiosk_lp::make_raw_if_tty(&file)?;
        Ok(file)
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

impl DeviceDriver {
    /// Asks the device for `DLE EOT 1`, `2` and `4` on its read side.
    fn ask_read_side(&self) -> Result<PrinterStatus, PrinterError> {
        let file = kiosk_lp::open_read_side(&self.path)
            .and_then(|f| kiosk_lp::make_raw_if_tty(&f).map(|_| f))
            .map_err(|e| self.io_error("open", e))?;
        let mut link = Deadline(&file, self.answer_wait);
        link.drain();
        realtime::query(&mut link, &self.describe(), |action, e| {
            if e.kind() == io::ErrorKind::TimedOut {
                PrinterError::Timeout {
                    action,
                    target: self.describe(),
                    timeout: self.answer_wait,
                }
            } else {
                self.io_error(action, e)
            }
        })
    }

    /// The read side's status, or `None` when the device has none (then
    /// the port status or one-way status stands). A silent device is asked
    /// again after `silent_retry`; one that has answered is not ready while
    /// it does not ([`ReadSide`]).
    fn read_side_status(&mut self) -> Option<PrinterStatus> {
        match self.read_side {
            ReadSide::Silent { since } if since.elapsed() < self.silent_retry => return None,
            ReadSide::Untried | ReadSide::Silent { .. } | ReadSide::Answers => {}
        }
        match (self.ask_read_side(), self.read_side) {
            (Ok(status), before) => {
                if before != ReadSide::Answers {
                    tracing::info!(printer = %self.describe(), "device answers DLE EOT on its read side: status from there");
                }
                self.read_side = ReadSide::Answers;
                Some(status)
            }
            (Err(e), ReadSide::Answers) => Some(not_ready(e.to_string())),
            (Err(e), before) => {
                if before == ReadSide::Untried {
                    tracing::info!(printer = %self.describe(), reason = %e, "device gives no DLE EOT answers on its read side: status from the port, else paper unknown; asked again every minute");
                }
                self.read_side = ReadSide::Silent {
                    since: Instant::now(),
                };
                None
            }
        }
    }

    /// Forgets what the read side showed when the node at the path is not
    /// the one seen last (replugged, another printer).
    fn note_node(&mut self, node: Option<(u64, u64)>) {
        if node != self.node {
            self.node = node;
            self.read_side = ReadSide::Untried;
        }
    }
}

/// `(rdev, inode)` of a character device; `None` for anything else.
#[cfg(unix)]
fn char_device_node(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type()
        .is_char_device()
        .then(|| (meta.rdev(), meta.ino()))
}

#[cfg(not(unix))]
fn char_device_node(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
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
    /// node, directory, no permission). Otherwise, for a character device
    /// that answers `DLE EOT` on its read side, what the answers say
    /// (online, cover, paper near end and out; not ready after a request
    /// left unanswered, as on `tcp`); else what the port status says
    /// ([`status_from_port`]: paper, online, error) when the device answers
    /// `LPGETSTATUS`; else ready and online with paper unknown.
    fn status(&mut self) -> PrinterStatus {
        let one_way = || PrinterStatus {
            ready: true,
            online: true,
            paper: PaperStatus::Unknown,
            cover_open: false,
            error: None,
        };
        match self.writable() {
            Ok(Some(file)) => {
                let port = status_from_port(self.port.read(&file));
                let node = file.metadata().ok().as_ref().and_then(char_device_node);
                drop(file);
                self.note_node(node);
                if node.is_some()
                    && let Some(status) = self.read_side_status()
                {
                    return status;
                }
                match port {
                    Some(mut status) => {
                        if let Some(error) = status.error.take() {
                            status.error = Some(format!("{}: {error}", self.describe()));
                        }
                        status
                    }
                    None => one_way(),
                }
            }
            Ok(None) => {
                self.note_node(None);
                one_way()
            }
            Err(reason) => {
                // Gone (unplugged, off): the next node may be another
                // printer, asked afresh.
                self.note_node(None);
                not_ready(reason)
            }
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

    /// `driver.status()` on a blocking thread (the fake device printer
    /// serves on the runtime), the driver handed back.
    async fn status_of(driver: DeviceDriver) -> (DeviceDriver, PrinterStatus) {
        tokio::task::spawn_blocking(move || {
            let mut driver = driver;
            let status = driver.status();
            (driver, status)
        })
        .await
        .unwrap()
    }

    /// Answers well inside this on a loaded machine.
    const WAIT_ANSWER: Duration = Duration::from_secs(2);
    /// For devices that are meant to stay silent.
    const WAIT_SILENCE: Duration = Duration::from_millis(200);

    /// A printer answering `DLE EOT` on a real device node (a pty, cooked
    /// as a fresh serial port is): near end, cover open and paper out come
    /// from its answers, which the port status cannot tell (the pty answers
    /// `LPGETSTATUS` with ENOTTY), and the job's bytes arrive unchanged
    /// (raw mode: no `\r` before `\n`) without status requests among them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_answering_dle_eot_tells_paper_and_cover() {
        use kiosk_testkit::{FakeDevicePrinter, FakePaper, FakeStatus};
        let dir = tempfile::tempdir().unwrap();
        let printer = FakeDevicePrinter::start(dir.path()).unwrap();
        let driver = DeviceDriver::new(printer.path()).with_answer_wait(WAIT_ANSWER);

        let (driver, status) = status_of(driver).await;
        assert_eq!(
            status,
            PrinterStatus {
                ready: true,
                online: true,
                paper: PaperStatus::Ok,
                cover_open: false,
                error: None
            }
        );
        printer.set_status(FakeStatus {
            paper: FakePaper::NearEnd,
            ..FakeStatus::default()
        });
        let (driver, status) = status_of(driver).await;
        assert!(status.ready, "{status:?}");
        assert_eq!(status.paper, PaperStatus::NearEnd);
        printer.set_status(FakeStatus {
            cover_open: true,
            ..FakeStatus::default()
        });
        let (driver, status) = status_of(driver).await;
        assert!(!status.ready && status.cover_open, "{status:?}");
        printer.set_status(FakeStatus {
            paper: FakePaper::Out,
            ..FakeStatus::default()
        });
        let (driver, status) = status_of(driver).await;
        assert!(!status.ready, "{status:?}");
        assert_eq!(status.paper, PaperStatus::Out);
        assert_eq!(status.error.as_deref(), Some("paper out"));
        assert_eq!(printer.status_queries(), 12);

        printer.set_status(FakeStatus::default());
        let (mut driver, status) = status_of(driver).await;
        assert!(status.ready, "{status:?}");
        let job = b"\x1b@caf\x82 \x10\x04 not a request\n\x1dV\x00".to_vec();
        let sent = job.clone();
        tokio::task::spawn_blocking(move || driver.hand_over(&sent, &Progress::default()))
            .await
            .unwrap()
            .unwrap();
        let got = printer
            .wait_for_bytes(job.len(), Duration::from_secs(5))
            .await;
        assert_eq!(got, Some(job));
    }

    /// A device without a usable read side: the port status stands (here
    /// a stub saying paper out), else paper unknown; it is not asked again
    /// until a while has passed or the node at the path changes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_device_is_asked_again_later_or_when_its_node_changes() {
        use kiosk_testkit::FakeDevicePrinter;
        let dir = tempfile::tempdir().unwrap();
        let printer = FakeDevicePrinter::start(dir.path()).unwrap();
        printer.set_silent(true);
        let port = StubPort::new(Ok(LP_POUTPA));
        let driver = DeviceDriver::with_port_status(printer.path(), port.clone())
            .with_answer_wait(WAIT_SILENCE);

        let (driver, status) = status_of(driver).await;
        assert!(!status.ready, "{status:?}");
        assert_eq!(status.paper, PaperStatus::Out);
        assert_eq!(printer.status_queries(), 1, "gave up at the first request");
        port.set(Err(io::Error::from_raw_os_error(libc_enotty())));
        let (driver, status) = status_of(driver).await;
        assert!(status.ready, "{status:?}");
        assert_eq!(status.paper, PaperStatus::Unknown);
        assert_eq!(printer.status_queries(), 1, "not asked again yet");

        // Replugged: another node under the same name (the first one is
        // kept open, so the new pty cannot reuse its number).
        let replugged = FakeDevicePrinter::start(dir.path()).unwrap();
        let (driver, status) = status_of(driver).await;
        assert_eq!(status.paper, PaperStatus::Ok, "{status:?}");
        assert_eq!(replugged.status_queries(), 3);

        drop(driver);
        // A device that was only slow: asked again once the retry is due.
        let slow = FakeDevicePrinter::start(dir.path()).unwrap();
        slow.set_silent(true);
        let driver = DeviceDriver::new(slow.path())
            .with_answer_wait(WAIT_SILENCE)
            .with_silent_retry(Duration::ZERO);
        let (driver, status) = status_of(driver).await;
        assert_eq!(status.paper, PaperStatus::Unknown, "{status:?}");
        slow.set_silent(false);
        let driver = driver.with_answer_wait(WAIT_ANSWER);
        let (_driver, status) = status_of(driver).await;
        assert_eq!(status.paper, PaperStatus::Ok, "{status:?}");
        drop((printer, replugged));
    }

    /// A device that answered and then falls silent (switched off behind a
    /// serial adapter, which keeps its node) is not ready, so jobs wait
    /// instead of going into a dead line, until it answers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_that_stops_answering_holds_jobs_until_it_answers() {
        use kiosk_testkit::FakeDevicePrinter;
        let dir = tempfile::tempdir().unwrap();
        let printer = FakeDevicePrinter::start(dir.path()).unwrap();
        let driver = DeviceDriver::new(printer.path()).with_answer_wait(WAIT_ANSWER);
        let (driver, status) = status_of(driver).await;
        assert_eq!(status.paper, PaperStatus::Ok);

        printer.set_silent(true);
        let mut driver = driver.with_answer_wait(WAIT_SILENCE);
        for _ in 0..4 {
            let (next, status) = status_of(driver).await;
            driver = next;
            assert!(!status.ready && !status.online, "{status:?}");
            let error = status.error.unwrap();
            assert!(
                error.contains("timed out after 200 ms") && error.contains("lp0"),
                "{error}"
            );
        }
        printer.set_silent(false);
        let (_driver, status) = status_of(driver.with_answer_wait(WAIT_ANSWER)).await;
        assert!(status.ready, "{status:?}");
        assert_eq!(status.paper, PaperStatus::Ok);
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
