//! Printers reached through a path: a character device such as
//! `/dev/usb/lp0` (USB printer class), any other character device, or a
//! regular file (handy for tests and for looking at the bytes). The link is
//! one-way, so paper and cover state are unknown.
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

use kiosk_schemas::{PaperStatus, PrinterStatus};

use super::{PrinterDriver, PrinterError, Progress, not_ready, write_counted};

/// Writes jobs to a device node or file.
#[derive(Debug, Clone)]
pub struct DeviceDriver {
    path: PathBuf,
}

impl DeviceDriver {
    /// A driver for `path`; nothing is opened yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DeviceDriver { path: path.into() }
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

    /// Why a job written now would not arrive, or `None` when it would.
    fn unwritable_reason(&self) -> Option<String> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.is_dir() => Some(format!("{} is a directory", self.path.display())),
            // Opening a FIFO for writing blocks until a reader shows up;
            // its existence is all that can be checked without waiting.
            Ok(meta) if is_fifo(&meta) => None,
            // Opening is the real permission check (and the usblp driver
            // refuses to open a printer that is gone).
            Ok(_) => self
                .open()
                .err()
                .map(|e| format!("cannot open {} for writing: {e}", self.path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.may_create() {
                    return Some(format!(
                        "{} does not exist (printer unplugged or off?)",
                        self.path.display()
                    ));
                }
                let parent = match self.path.parent() {
                    Some(p) if p.as_os_str().is_empty() => Path::new("."),
                    Some(p) => p,
                    None => {
                        return Some(format!("{} has no parent directory", self.path.display()));
                    }
                };
                if parent.is_dir() {
                    None
                } else {
                    Some(format!(
                        "neither {} nor its directory exists",
                        self.path.display()
                    ))
                }
            }
            Err(e) => Some(format!("cannot inspect {}: {e}", self.path.display())),
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

    /// Ready and online when the path can be written now (it exists and
    /// opens for writing, or it is a file path whose directory exists);
    /// paper is always unknown and the cover never reported open.
    fn status(&mut self) -> PrinterStatus {
        match self.unwritable_reason() {
            None => PrinterStatus {
                ready: true,
                online: true,
                paper: PaperStatus::Unknown,
                cover_open: false,
                error: None,
            },
            Some(reason) => not_ready(reason),
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
