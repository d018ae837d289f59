//! A fake cash acceptor (the Arduino end of the serial line) on a real
//! pseudo-terminal pair.
//!
//! The agent opens [`FakeAcceptor::path`], a symlink to the pty's slave
//! side (as udev's `/dev/kiosk-cash` links to `/dev/ttyUSB0`); the test
//! holds the master side: it writes acceptor lines (`BILL:1000`) and reads
//! the commands the agent sends (`ENABLE`, `DISABLE`). [`FakeAcceptor::unplug`]
//! removes the port the way pulling the USB cable does, and
//! [`FakeAcceptor::replug`] brings a new one back under the same name.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::task::JoinHandle;
use tokio_serial::SerialStream;

use crate::pty::{self, AtEof};

/// The acceptor's end of a serial line.
pub struct FakeAcceptor {
    link: PathBuf,
    writer: Option<tokio::sync::Mutex<WriteHalf<SerialStream>>>,
    reader: Option<JoinHandle<()>>,
    commands: Arc<Mutex<Vec<String>>>,
}

fn record_commands(commands: &Mutex<Vec<String>>, line: &[u8]) {
    let text = String::from_utf8_lossy(line).trim().to_owned();
    commands
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(text);
}

impl FakeAcceptor {
    /// Creates a pty pair and the symlink `dir/cash` to its slave side.
    /// Must run inside a tokio runtime.
    ///
    /// # Errors
    /// When no pty can be allocated or the link cannot be made.
    pub fn start(dir: &Path) -> io::Result<FakeAcceptor> {
        let mut a = FakeAcceptor {
            link: dir.join("cash"),
            writer: None,
            reader: None,
            commands: Arc::default(),
        };
        a.attach()?;
        Ok(a)
    }

    fn attach(&mut self) -> io::Result<()> {
        let master = pty::plug(&self.link)?;
        let (rd, wr) = tokio::io::split(master);
        let commands = self.commands.clone();
        self.reader = Some(tokio::spawn(pty::read_lines(
            rd,
            AtEof::Retry,
            move |line| record_commands(&commands, line),
        )));
        self.writer = Some(tokio::sync::Mutex::new(wr));
        Ok(())
    }

    /// The port name to put in the agent's `cash.port`.
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// Writes `line` and a newline, as the Arduino would.
    ///
    /// # Errors
    /// When unplugged, or the write fails.
    pub async fn send(&self, line: &str) -> io::Result<()> {
        self.send_bytes(format!("{line}\n").as_bytes()).await
    }

    /// Writes raw bytes (noise, over-long lines, ...).
    ///
    /// # Errors
    /// When unplugged, or the write fails.
    pub async fn send_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        let Some(w) = &self.writer else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "unplugged"));
        };
        let mut w = w.lock().await;
        w.write_all(bytes).await?;
        w.flush().await
    }

    /// Every command line received so far (`ENABLE`, `DISABLE`).
    pub fn commands(&self) -> Vec<String> {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the last command received is `command`.
    pub async fn wait_last_command(&self, command: &str, timeout: Duration) -> bool {
        crate::wait_until(timeout, Duration::from_millis(10), || {
            self.commands().last().map(String::as_str) == Some(command)
        })
        .await
    }

    /// Pulls the cable: the pty goes away (the agent's reads fail) and the
    /// name disappears.
    pub fn unplug(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        self.writer = None;
        pty::unlink(&self.link);
    }

    /// Plugs a new port in under the same name.
    ///
    /// # Errors
    /// When no pty can be allocated or the link cannot be made.
    pub fn replug(&mut self) -> io::Result<()> {
        self.unplug();
        self.attach()
    }
}

impl Drop for FakeAcceptor {
    fn drop(&mut self) {
        self.unplug();
    }
}
