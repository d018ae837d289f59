//! The pseudo-terminal plumbing shared by the fake serial peers
//! ([`FakeAcceptor`](crate::FakeAcceptor), [`FakeBoard`](crate::FakeBoard)):
//! a pty pair whose slave side is reached through a symlink (as udev's
//! `/dev/kiosk-cash` links to `/dev/ttyUSB0`), and a line reader that
//! survives the EIO a pty master reads while no one has the slave open.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_serial::SerialStream;

/// How long a reader waits before reading again after EOF or an error.
const RETRY_READ: Duration = Duration::from_millis(10);

/// Creates a pty pair, points `link` at its slave side (replacing whatever
/// was there) and returns the master side. The slave is closed here: the
/// program under test opens it by name.
pub(crate) fn plug(link: &Path) -> io::Result<SerialStream> {
    let (master, slave) = SerialStream::pair().map_err(io::Error::other)?;
    let name = tokio_serial::SerialPort::name(&slave)
        .ok_or_else(|| io::Error::other("pty has no name"))?;
    drop(slave);
    unlink(link);
    std::os::unix::fs::symlink(&name, link)?;
    Ok(master)
}

/// Removes `link`, as the device node disappears when the cable is pulled.
/// A link that is already gone is fine.
pub(crate) fn unlink(link: &Path) {
    let _ = std::fs::remove_file(link);
}

/// What a line reader does when a read returns EOF or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtEof {
    /// Wait a little and read again: a pty master reads EOF or EIO while no
    /// one has the slave side open, and reads again once someone does.
    Retry,
    /// Stop: the stream is over (an in-memory pipe whose other end is gone).
    Stop,
}

/// Reads `rd` forever (or until EOF with [`AtEof::Stop`]), calling `on_line`
/// with each line received, without its `\n` and without a `\r` before it.
/// Bytes after the last newline wait for the rest of their line.
pub(crate) async fn read_lines<R, F>(mut rd: R, at_eof: AtEof, mut on_line: F)
where
    R: AsyncRead + Unpin,
    F: FnMut(&[u8]),
{
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match rd.read(&mut buf).await {
            Ok(n) if n > 0 => {
                for &b in &buf[..n] {
                    if b == b'\n' {
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        on_line(&line);
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            _ if at_eof == AtEof::Stop => return,
            _ => tokio::time::sleep(RETRY_READ).await,
        }
    }
}
