//! A fake ESC/POS printer on a device node: a real pseudo-terminal pair
//! whose slave side the agent opens by name (a symlink, as udev's
//! `/dev/usb/lp0` or `/dev/ttyUSB0`), as its `device` driver opens a USB or
//! serial printer.
//!
//! Like [`FakePrinter`](crate::FakePrinter) it answers every `DLE EOT n`
//! (n = 1 to 4) at once, on the device's read side, with the status byte of
//! the current [`FakeStatus`], and records every other byte. A device node
//! has no connection per job, so what it records is one byte stream
//! ([`FakeDevicePrinter::received`]). [`FakeDevicePrinter::set_silent`]
//! makes it a printer without a usable read side.
//!
//! The pty starts cooked, as a fresh `/dev/ttyUSB0` does (line editing,
//! echo, `\n` to `\r\n`): a program that does not put it in raw mode
//! itself gets its one-byte answers only after a newline and has its job
//! bytes changed, as on a real serial line.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::printer::{FakeStatus, Scanner};
use crate::pty;

/// How long the reader waits before reading again after EOF or EIO (what
/// a pty master reads while no one has the slave open).
const RETRY_READ: Duration = Duration::from_millis(10);

/// The printer's end of a device node, serving until dropped.
pub struct FakeDevicePrinter {
    link: PathBuf,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    status: FakeStatus,
    silent: bool,
    received: Vec<u8>,
    status_queries: usize,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeDevicePrinter {
    /// Creates a pty pair and the symlink `dir/lp0` to its slave side.
    /// Online, cover closed, paper ok, answering. Must run inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// When no pty can be allocated or the link cannot be made.
    pub fn start(dir: &Path) -> io::Result<FakeDevicePrinter> {
        let link = dir.join("lp0");
        let master = pty::plug(&link)?;
        cook(&link)?;
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(serve(master, Arc::clone(&state)));
        Ok(FakeDevicePrinter { link, state, task })
    }

    /// The path to put in the agent's `printers.<name>.address`.
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// What the next status answers say.
    pub fn set_status(&self, status: FakeStatus) {
        lock(&self.state).status = status;
    }

    /// When true, status requests are read but never answered.
    pub fn set_silent(&self, silent: bool) {
        lock(&self.state).silent = silent;
    }

    /// Every byte received except the status requests, in order.
    pub fn received(&self) -> Vec<u8> {
        lock(&self.state).received.clone()
    }

    /// `DLE EOT` requests seen so far, answered or not.
    pub fn status_queries(&self) -> usize {
        lock(&self.state).status_queries
    }

    /// Waits until at least `n` bytes (status requests not counted) have
    /// arrived; returns them, or `None` after `timeout`.
    pub async fn wait_for_bytes(&self, n: usize, timeout: Duration) -> Option<Vec<u8>> {
        crate::wait_until(timeout, Duration::from_millis(10), || {
            lock(&self.state).received.len() >= n
        })
        .await
        .then(|| self.received())
    }
}

impl Drop for FakeDevicePrinter {
    /// Stops serving; the node's name goes away, as when the printer is
    /// unplugged.
    fn drop(&mut self) {
        self.task.abort();
        pty::unlink(&self.link);
    }
}

/// Sets the pty at `link` to a fresh terminal's cooked mode. The setting
/// stays with the pty (its master is open) after this descriptor closes.
fn cook(link: &Path) -> io::Result<()> {
    use nix::sys::termios::{InputFlags, LocalFlags, OutputFlags, SetArg, tcgetattr, tcsetattr};
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(link)?;
    let mut t = tcgetattr(&slave).map_err(io::Error::from)?;
    t.local_flags |= LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ECHOCTL;
    t.output_flags |= OutputFlags::OPOST | OutputFlags::ONLCR;
    t.input_flags |= InputFlags::ICRNL;
    tcsetattr(&slave, SetArg::TCSANOW, &t).map_err(io::Error::from)
}

async fn serve(mut master: tokio_serial::SerialStream, state: Arc<Mutex<State>>) {
    let mut scanner = Scanner::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match master.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => {
                tokio::time::sleep(RETRY_READ).await;
                continue;
            }
        };
        let answers: Vec<u8> = {
            let mut state = lock(&state);
            let mut bytes = Vec::new();
            let queries = scanner.feed(&buf[..n], &mut bytes);
            state.received.extend_from_slice(&bytes);
            state.status_queries += queries.len();
            if state.silent {
                Vec::new()
            } else {
                state.status.answers(&queries)
            }
        };
        if !answers.is_empty() {
            // Nobody may have the slave open any more: the answer is then
            // lost, as a printer's is when the host stopped reading.
            let _ = master.write_all(&answers).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::FakePaper;

    /// Opens the slave as a program would, asks `DLE EOT 4`, and reads the
    /// answer on a blocking thread.
    async fn ask_paper(path: PathBuf) -> u8 {
        tokio::task::spawn_blocking(move || {
            let mut port = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            raw(&port);
            port.write_all(&[0x10, 0x04, 0x04]).unwrap();
            let mut answer = [0u8; 1];
            port.read_exact(&mut answer).unwrap();
            answer[0]
        })
        .await
        .unwrap()
    }

    /// What a program must do with the cooked pty.
    fn raw(port: &std::fs::File) {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let mut t = tcgetattr(port).unwrap();
        cfmakeraw(&mut t);
        tcsetattr(port, SetArg::TCSANOW, &t).unwrap();
    }

    #[tokio::test]
    async fn answers_on_the_read_side_and_records_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let printer = FakeDevicePrinter::start(dir.path()).unwrap();
        assert_eq!(ask_paper(printer.path().to_owned()).await, 0x12);
        printer.set_status(FakeStatus {
            paper: FakePaper::Out,
            ..FakeStatus::default()
        });
        assert_eq!(ask_paper(printer.path().to_owned()).await, 0x7e);

        let path = printer.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let mut port = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            raw(&port);
            // Raw: `\n` stays `\n`, and bytes above 0x7f pass.
            port.write_all(b"\x1b@caf\x82\n\x1dV\x00").unwrap();
        })
        .await
        .unwrap();
        let got = printer.wait_for_bytes(10, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"\x1b@caf\x82\n\x1dV\x00"[..]));
        assert_eq!(printer.status_queries(), 2);
    }

    /// Without raw mode the line discipline gets in the way, as on a real
    /// serial port: `\n` goes out as `\r\n`.
    #[tokio::test]
    async fn the_pty_starts_cooked() {
        let dir = tempfile::tempdir().unwrap();
        let printer = FakeDevicePrinter::start(dir.path()).unwrap();
        let path = printer.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let mut port = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            port.write_all(b"a\n").unwrap();
        })
        .await
        .unwrap();
        let got = printer.wait_for_bytes(3, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"a\r\n"[..]));
    }
}
