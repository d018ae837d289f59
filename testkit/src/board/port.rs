//! The I/O around [`BoardState`]: the shared state under one lock, the
//! task that reads host lines, the task that writes the board's lines to
//! the port, and the task that fires the board's timers.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::state::BoardState;
use crate::pty::{self, AtEof};

/// How long the board waits for one write to the port before giving it up.
/// A pty master blocks once no one reads the slave; a real board's USB
/// writes are just lost then, and so are these.
const WRITE_TIMEOUT: Duration = Duration::from_millis(200);

/// Lines waiting for the port beyond which further lines are dropped, so a
/// stuck port never holds up the board's logic.
const OUT_QUEUE: usize = 256;

/// A message for the task that writes the port.
pub(super) enum Out {
    /// A board line, without its newline; lost if the write fails.
    Line(String),
    /// Bytes from [`FakeBoard::send_raw`], with where to report the result.
    Raw(Vec<u8>, oneshot::Sender<io::Result<()>>),
}

pub(super) struct Inner {
    pub(super) board: BoardState,
    /// The current port's writer; `None` while unplugged.
    pub(super) out: Option<mpsc::Sender<Out>>,
}

pub(super) struct Shared {
    pub(super) inner: Mutex<Inner>,
    /// Wakes the timer task to recompute its deadline.
    pub(super) timer_wake: Notify,
    /// Bumped after every change, for the `wait_*` methods.
    pub(super) changed: watch::Sender<()>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state at tokio's current time and queues the lines
    /// it returns, under one lock so lines go out in the order the state
    /// produced them.
    pub(super) fn apply<T>(
        &self,
        f: impl FnOnce(&mut BoardState, Instant) -> (T, Vec<String>),
    ) -> T {
        let mut inner = self.lock();
        let (value, lines) = f(&mut inner.board, Instant::now());
        if let Some(out) = &inner.out {
            for line in lines {
                // A full queue means a stuck port: the line is lost, as on
                // a real board; unacked credits go out again later.
                let _ = out.try_send(Out::Line(line));
            }
        }
        drop(inner);
        self.changed.send_replace(());
        value
    }

    /// [`Self::apply`], then lets the timer task see the new deadlines.
    pub(super) fn update<T>(
        &self,
        f: impl FnOnce(&mut BoardState, Instant) -> (T, Vec<String>),
    ) -> T {
        let value = self.apply(f);
        self.timer_wake.notify_one();
        value
    }
}

pub(super) async fn run_timers(shared: Arc<Shared>) {
    loop {
        let deadline = shared.lock().board.next_deadline();
        match deadline {
            Some(deadline) => tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = shared.timer_wake.notified() => {}
            },
            None => shared.timer_wake.notified().await,
        }
        shared.apply(|b, now| ((), b.tick(now)));
    }
}

async fn write_bounded<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> io::Result<()> {
    let write = async {
        wr.write_all(bytes).await?;
        wr.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the port took no data for 200 ms",
        )),
    }
}

async fn write_port<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Out>) {
    while let Some(out) = rx.recv().await {
        match out {
            Out::Line(mut line) => {
                line.push('\n');
                // Lost on error (EIO or a full pty while no one has the
                // slave open): unacked credits are re-sent by the timers.
                let _ = write_bounded(&mut wr, line.as_bytes()).await;
            }
            Out::Raw(bytes, reply) => {
                let _ = reply.send(write_bounded(&mut wr, &bytes).await);
            }
        }
    }
}

/// The tasks tied to one port; dropping them closes it.
pub(super) struct Port {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Port {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

pub(super) fn attach<S>(shared: &Arc<Shared>, io: S, at_eof: AtEof) -> Port
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    shared.lock().out = Some(tx);
    let for_reader = shared.clone();
    let reader = tokio::spawn(pty::read_lines(rd, at_eof, move |line| {
        let text = String::from_utf8_lossy(line).trim().to_owned();
        for_reader.update(|b, now| ((), b.host_line(&text, now)));
    }));
    Port {
        reader,
        writer: tokio::spawn(write_port(wr, rx)),
    }
}
