//! A fake protocol-v2 cash acceptor board (the Arduino's firmware) on a
//! real pseudo-terminal pair.
//!
//! The agent opens [`FakeBoard::path`], a symlink to the pty's slave side,
//! exactly as with [`FakeAcceptor`](crate::FakeAcceptor); the board plays
//! the firmware in tokio tasks and the test plays the customer
//! ([`FakeBoard::insert`]) and the power switch ([`FakeBoard::reset`],
//! [`FakeBoard::unplug`]).
//!
//! Protocol v2, one line per message, ending in `\n` (a `\r` before it is
//! accepted and ignored):
//!
//! | board → host | meaning |
//! |---|---|
//! | `READY:v2:<boot id>` | at power-up and after every reset; 8 lowercase hex digits, random per boot |
//! | `CREDIT:<seq>:<BILL\|COIN>:<minor units>` | a credit; `seq` counts 1, 2, 3 … from each boot |
//! | `ERR:lease` | the lease ran out while enabled: the board inhibited itself |
//! | `ERR:full` | the last free slot for unacknowledged credits was taken: inhibited |
//! | `ERR:unknown command` | a host line that is none of the below |
//!
//! | host → board | meaning |
//! |---|---|
//! | `ENABLE` / `DISABLE` | accept money / inhibit |
//! | `ACK:<seq>` | the host has credit `seq` on disk: forget exactly that credit |
//! | `HELLO` | answer `READY:v2:<current boot id>` (nothing reset) and re-send every unacknowledged credit |
//!
//! Every host line (even an unknown one) renews the lease. The board accepts
//! money when the last of `ENABLE`/`DISABLE` was `ENABLE`, a host line came
//! within the last [`BoardTimings::lease`], and fewer than
//! [`BoardTimings::capacity`] credits are unacknowledged. Each unacknowledged
//! credit is re-sent [`BoardTimings::resend`] after it was last sent, oldest
//! first, until acknowledged.
//!
//! The rules live in `BoardState` (`state.rs`), which does no I/O; the
//! tasks around it (`port.rs`) read host lines, fire its timers and write
//! its lines to the port.

mod port;
mod state;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::pty::{self, AtEof};
use port::{Inner, Out, Port, Shared, attach, run_timers};
use state::BoardState;

/// What a customer inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Money {
    /// A banknote: `BILL` on the wire.
    Bill,
    /// A coin: `COIN` on the wire.
    Coin,
}

impl Money {
    /// The word on the wire: `BILL` or `COIN`.
    pub fn wire(self) -> &'static str {
        match self {
            Money::Bill => "BILL",
            Money::Coin => "COIN",
        }
    }
}

/// A credit the board took and numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardCredit {
    /// The board's counter for this boot: 1, 2, 3 … restarting at 1 after
    /// each reset or replug.
    pub seq: u64,
    /// Bill or coin.
    pub kind: Money,
    /// The amount in minor units (cents), as inserted.
    pub amount: i64,
}

impl BoardCredit {
    /// The line the board sends for this credit, without the newline:
    /// `CREDIT:<seq>:<BILL|COIN>:<amount>`.
    pub fn line(&self) -> String {
        format!("CREDIT:{}:{}:{}", self.seq, self.kind.wire(), self.amount)
    }
}

/// The board's timers and buffer size.
#[derive(Debug, Clone, Copy)]
pub struct BoardTimings {
    /// How long after the last host line the board keeps accepting money
    /// (default 3 s). When it runs out while enabled the board inhibits and
    /// sends `ERR:lease`.
    pub lease: Duration,
    /// How long after a credit was last sent it is sent again while
    /// unacknowledged (default 1 s). Must not be zero.
    pub resend: Duration,
    /// How many unacknowledged credits the board holds (default 16); with
    /// that many it inhibits and sends `ERR:full`.
    pub capacity: usize,
}

impl Default for BoardTimings {
    fn default() -> Self {
        BoardTimings {
            lease: Duration::from_secs(3),
            resend: Duration::from_secs(1),
            capacity: 16,
        }
    }
}

/// A random boot id different from `previous`.
fn new_boot_id(previous: u32) -> u32 {
    loop {
        let id = rand::random::<u32>();
        if id != previous {
            return id;
        }
    }
}

/// A simulated protocol-v2 cash acceptor board on a serial line. See the
/// [module docs](self) for the protocol. Dropping it unplugs it.
///
/// Lines the board sends are queued for a writer task; nothing the port
/// does (EIO, a full buffer, no reader) blocks the board's logic or the
/// methods here, except [`FakeBoard::send_raw`], which waits for its own
/// write.
pub struct FakeBoard {
    /// `dir/cash`; `None` for a board on an in-memory stream.
    link: Option<PathBuf>,
    shared: Arc<Shared>,
    port: Option<Port>,
    timer: JoinHandle<()>,
}

impl FakeBoard {
    /// [`FakeBoard::start_with`] with [`BoardTimings::default`]: lease 3 s,
    /// resend 1 s, capacity 16.
    ///
    /// # Errors
    /// When no pty can be allocated or the link cannot be made.
    pub fn start(dir: &Path) -> io::Result<FakeBoard> {
        Self::start_with(dir, BoardTimings::default())
    }

    /// Creates a pty pair, the symlink `dir/cash` to its slave side, and
    /// powers the board up: it sends `READY:v2:<boot id>` at once, inhibited.
    /// Must be called inside a tokio runtime.
    ///
    /// While no one has the slave open, Linux keeps what the board writes
    /// in the pty's buffer and delivers it when the agent opens the port
    /// (so the agent may first read stale lines, e.g. this `READY`); once
    /// that buffer is full, each write gives up after 200 ms and the line
    /// is lost. A write given up part-way leaves half a line, which the
    /// next line is glued to, as on a real serial line. The board's state
    /// is never affected: credits stay unacknowledged and are re-sent, and
    /// `HELLO` gets the boot id and all of them again.
    ///
    /// # Errors
    /// `InvalidInput` when `timings.resend` is zero; otherwise when no pty
    /// can be allocated or the link cannot be made.
    pub fn start_with(dir: &Path, timings: BoardTimings) -> io::Result<FakeBoard> {
        check(&timings)?;
        let link = dir.join("cash");
        let master = pty::plug(&link)?;
        Ok(Self::power_on(Some(link), master, AtEof::Retry, timings))
    }

    /// The board on any byte stream instead of a pty, e.g. one end of a
    /// [`tokio::io::duplex`]: with `tokio::time::pause()` its timers run in
    /// virtual time, so tests of host logic are fast and exact. Sends
    /// `READY:v2:<boot id>` at once. [`FakeBoard::path`] is empty; `unplug`
    /// drops the stream (the other end reads EOF) and `replug` fails.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// `InvalidInput` when `timings.resend` is zero.
    pub fn on_stream<S>(stream: S, timings: BoardTimings) -> io::Result<FakeBoard>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        check(&timings)?;
        Ok(Self::power_on(None, stream, AtEof::Stop, timings))
    }

    fn power_on<S>(link: Option<PathBuf>, io: S, at_eof: AtEof, timings: BoardTimings) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                board: BoardState::new(timings),
                out: None,
            }),
            timer_wake: Notify::new(),
            changed: watch::Sender::new(()),
        });
        let port = attach(&shared, io, at_eof);
        shared.update(|b, _| b.power_up(new_boot_id(b.boot_id)));
        let timer = tokio::spawn(run_timers(shared.clone()));
        FakeBoard {
            link,
            shared,
            port: Some(port),
            timer,
        }
    }

    /// The port name to put in the agent's config: `dir/cash`, a symlink to
    /// the pty slave (the same name across replugs). Empty for a board made
    /// with [`FakeBoard::on_stream`].
    pub fn path(&self) -> &Path {
        self.link.as_deref().unwrap_or(Path::new(""))
    }

    /// The current boot id as on the wire: 8 lowercase hex digits.
    pub fn boot_id(&self) -> String {
        format!("{:08x}", self.shared.lock().board.boot_id)
    }

    /// A customer inserts a bill or coin worth `amount` minor units. If the
    /// board is accepting, it takes the money, gives it the next seq,
    /// queues `CREDIT:<seq>:<kind>:<amount>` for the port and returns true
    /// (and `ERR:full` after it when this credit filled the buffer);
    /// otherwise the validator refuses the money, nothing is sent, and it
    /// returns false.
    pub async fn insert(&self, kind: Money, amount: i64) -> bool {
        self.shared
            .update(|b, now| match b.insert(kind, amount, now) {
                Some(lines) => (true, lines),
                None => (false, Vec::new()),
            })
    }

    /// Whether an insert now would be taken: powered, enabled, leased
    /// (a host line within [`BoardTimings::lease`]) and not full.
    pub fn accepting(&self) -> bool {
        self.shared.lock().board.accepting(Instant::now())
    }

    /// Waits up to `timeout` until [`FakeBoard::accepting`] is `want`;
    /// returns whether it got there.
    pub async fn wait_accepting(&self, want: bool, timeout: Duration) -> bool {
        self.wait_for(timeout, |b, now| b.accepting(now) == want)
            .await
    }

    /// The credits not acknowledged yet, oldest first.
    pub fn unacked(&self) -> Vec<BoardCredit> {
        self.shared.lock().board.unacked()
    }

    /// Waits up to `timeout` until no credit is unacknowledged; returns
    /// whether that happened.
    pub async fn wait_all_acked(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |b, _| b.unacked.is_empty()).await
    }

    /// Every line received from the host, in order, trimmed; including
    /// ignored ACKs and unknown commands.
    pub fn host_lines(&self) -> Vec<String> {
        self.shared.lock().board.host_lines.clone()
    }

    /// Waits up to `timeout` until at least `count` host lines have been
    /// received in total; returns whether they were.
    pub async fn wait_host_lines(&self, count: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |b, _| b.host_lines.len() >= count)
            .await
    }

    /// The `ERR:` lines the board has sent, without the prefix, in order:
    /// `"lease"`, `"full"`, `"unknown command"`. Counted when produced,
    /// even if the port lost them.
    pub fn errors_sent(&self) -> Vec<String> {
        self.shared.lock().board.errors_sent.clone()
    }

    /// Test hook: while `ignore` is true, `ACK` lines are received (and
    /// recorded, and renew the lease) but dropped, as if lost on the wire.
    pub fn set_ignore_acks(&self, ignore: bool) {
        self.shared.update(|b, _| {
            b.ignore_acks = ignore;
            ((), Vec::new())
        });
    }

    /// A power cycle: a new boot id, seq back to 1, unacknowledged credits
    /// forgotten, inhibited; then `READY:v2:<new id>`. Returns the credits
    /// that were forgotten, oldest first. Does nothing and returns nothing
    /// while unplugged.
    pub async fn reset(&self) -> Vec<BoardCredit> {
        self.shared.update(|b, _| {
            if b.powered {
                b.power_up(new_boot_id(b.boot_id))
            } else {
                (Vec::new(), Vec::new())
            }
        })
    }

    /// Writes `bytes` to the port as they are (noise, v1 lines, half
    /// lines), after the board's lines already queued.
    ///
    /// # Errors
    /// `NotConnected` while unplugged; `TimedOut` when the port took no
    /// data for 200 ms (no one reading the pty); the write error.
    pub async fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let unplugged = || io::Error::new(io::ErrorKind::NotConnected, "unplugged");
        let out = self.shared.lock().out.clone().ok_or_else(unplugged)?;
        let (reply, result) = oneshot::channel();
        out.send(Out::Raw(bytes.to_vec(), reply))
            .await
            .map_err(|_| unplugged())?;
        result.await.map_err(|_| unplugged())?
    }

    /// Pulls the cable: the board loses power (nothing accepted, nothing
    /// sent, timers stop), the pty closes (the agent's reads fail) and the
    /// name disappears. [`FakeBoard::unacked`] still shows what was in RAM
    /// until [`FakeBoard::replug`] forgets it.
    pub fn unplug(&mut self) {
        self.port = None;
        {
            let mut inner = self.shared.lock();
            inner.out = None;
            inner.board.power_off();
        }
        self.shared.changed.send_replace(());
        self.shared.timer_wake.notify_one();
        if let Some(link) = &self.link {
            pty::unlink(link);
        }
    }

    /// Plugs a new pty in under the same name; the board powers up fresh
    /// as after [`FakeBoard::reset`]: new boot id, seq from 1, RAM lost,
    /// inhibited, `READY:v2:<new id>` sent.
    ///
    /// # Errors
    /// `Unsupported` for a board made with [`FakeBoard::on_stream`]
    /// (nothing changes); when no pty can be allocated or the link cannot
    /// be made (the board is left unplugged).
    pub fn replug(&mut self) -> io::Result<()> {
        let link = self.link.clone().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "a board on a stream cannot replug",
            )
        })?;
        self.unplug();
        let master = pty::plug(&link)?;
        self.port = Some(attach(&self.shared, master, AtEof::Retry));
        self.shared
            .update(|b, _| ((), b.power_up(new_boot_id(b.boot_id)).1));
        Ok(())
    }

    /// How long ago the board received the last host line; `None` before
    /// the first.
    pub fn last_host_line_age(&self) -> Option<Duration> {
        let last = self.shared.lock().board.last_host?;
        Some(Instant::now().saturating_duration_since(last))
    }

    /// When the board last inhibited itself because the lease ran out: how
    /// long after the last host line that was (the lease, plus however late
    /// the timer fired). `None` if it never did.
    pub fn inhibited_after(&self) -> Option<Duration> {
        self.shared.lock().board.inhibited_after
    }

    async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&BoardState, Instant) -> bool,
    ) -> bool {
        let mut changes = self.shared.changed.subscribe();
        let wait = async {
            loop {
                if done(&self.shared.lock().board, Instant::now()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl Drop for FakeBoard {
    fn drop(&mut self) {
        self.unplug();
        self.timer.abort();
    }
}

fn check(timings: &BoardTimings) -> io::Result<()> {
    if timings.resend.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "BoardTimings::resend must not be zero",
        ));
    }
    Ok(())
}
