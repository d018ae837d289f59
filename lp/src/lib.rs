//! The `LPGETSTATUS` ioctl of Linux printer ports (`linux/lp.h`), which the
//! `usblp` driver answers with the printer's GET_PORT_STATUS byte (USB
//! printer class 1.1, 4.2.2). This crate holds the workspace's only
//! `unsafe` block, so that every other crate keeps `unsafe_code = "forbid"`.
//! It also opens a printer's read side without blocking ([`open_read_side`]),
//! which needs the `O_NONBLOCK` and `O_NOCTTY` flags of `libc`, and puts a
//! serial printer's tty in raw mode ([`make_raw_if_tty`], through `nix`).

use std::io;
use std::os::fd::AsFd;

/// `ioctl` request: the port status of a printer, an `int` (`linux/lp.h`).
pub const LPGETSTATUS: u32 = 0x060b;
/// Port status bit: paper out (active high).
pub const LP_POUTPA: i32 = 0x20;
/// Port status bit: the printer is selected, i.e. online (active high).
pub const LP_PSELECD: i32 = 0x10;
/// Port status bit: *no* error (the nERROR line, active low).
pub const LP_PERRORP: i32 = 0x08;

/// The port status bits (`LP_*`) of the open device `fd`.
///
/// # Errors
/// The operating system's error: `ENOTTY` when `fd` is not a printer port
/// (a regular file, a pipe, `/dev/null`), `EIO` when the printer did not
/// answer; `Unsupported` off Linux.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn get_status(fd: impl AsFd) -> io::Result<i32> {
    use std::os::fd::AsRawFd;
    let fd = fd.as_fd();
    let mut bits: libc::c_int = 0;
    // SAFETY: LPGETSTATUS writes one `int` through its pointer argument,
    // which points at `bits`, alive and exclusively borrowed for the call;
    // `fd` is a borrowed, open descriptor. Drivers that do not know the
    // request answer ENOTTY without touching the pointer.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            LPGETSTATUS as libc::Ioctl,
            &mut bits as *mut libc::c_int,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(bits)
}

/// Off Linux there is no `LPGETSTATUS`.
///
/// # Errors
/// Always `Unsupported`.
#[cfg(not(target_os = "linux"))]
pub fn get_status(_fd: impl AsFd) -> io::Result<i32> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Opens the device at `path` for reading and writing without blocking
/// (`O_NONBLOCK`: a read with nothing to read fails with `WouldBlock`,
/// which `usblp` and ttys honour) and without making it the process's
/// controlling terminal (`O_NOCTTY`, for serial printers on `/dev/tty*`).
/// Used to ask a printer for its status on its read side (`DLE EOT`).
///
/// # Errors
/// The operating system's error from `open(2)`.
#[cfg(target_os = "linux")]
pub fn open_read_side(path: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// When `file` is a terminal (a serial printer on `/dev/ttyUSB0`, a pty),
/// puts it in raw mode (`cfmakeraw`: no line editing, no echo, no `\n` to
/// `\r\n`, 8 bits), keeping its speed, so job bytes and status answers
/// pass unchanged. Returns whether it was a terminal; anything else is left
/// alone.
///
/// # Errors
/// The operating system's error from `tcgetattr`/`tcsetattr`.
#[cfg(target_os = "linux")]
pub fn make_raw_if_tty(file: &std::fs::File) -> io::Result<bool> {
    use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
    if !nix::unistd::isatty(file).unwrap_or(false) {
        return Ok(false);
    }
    let mut termios = tcgetattr(file).map_err(io::Error::from)?;
    cfmakeraw(&mut termios);
    tcsetattr(file, SetArg::TCSANOW, &termios).map_err(io::Error::from)?;
    Ok(true)
}

/// Off Linux terminals are left as they are.
///
/// # Errors
/// Never.
#[cfg(not(target_os = "linux"))]
pub fn make_raw_if_tty(_file: &std::fs::File) -> io::Result<bool> {
    Ok(false)
}

/// Off Linux the read side is not used.
///
/// # Errors
/// Always `Unsupported`.
#[cfg(not(target_os = "linux"))]
pub fn open_read_side(_path: &std::path::Path) -> io::Result<std::fs::File> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No lp device can be made here (no usblp, no CUSE): the real ioctl on
    /// a regular file and on /dev/null must say "not a printer port".
    #[cfg(target_os = "linux")]
    #[test]
    fn regular_files_and_dev_null_are_not_printer_ports() {
        let file = tempfile::tempfile().unwrap();
        let err = get_status(&file).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}");
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let err = get_status(&null).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}");
    }

    /// A FIFO with no writer: a blocking read would wait forever, this one
    /// says `WouldBlock` at once.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_read_side_does_not_block() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let mut side = open_read_side(&fifo).unwrap();
        let err = side.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    }
}
