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
//! The rules live in `BoardState`, which does no I/O; the tasks around it
//! read host lines, fire its timers and write its lines to the port.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::pty::{self, AtEof};

/// How long the board waits for one write to the port before giving it up.
/// A pty master blocks once no one reads the slave; a real board's USB
/// writes are just lost then, and so are these.
const WRITE_TIMEOUT: Duration = Duration::from_millis(200);

/// Lines waiting for the port beyond which further lines are dropped, so a
/// stuck port never holds up the board's logic.
const OUT_QUEUE: usize = 256;

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

/// An unacknowledged credit and when it last went out.
#[derive(Debug)]
struct Pending {
    credit: BoardCredit,
    last_sent: Instant,
}

/// The firmware's rules, without I/O: every change takes the time it
/// happens at and returns the lines the board sends because of it.
#[derive(Debug)]
struct BoardState {
    timings: BoardTimings,
    powered: bool,
    boot_id: u32,
    next_seq: u64,
    enabled: bool,
    /// Oldest first.
    unacked: Vec<Pending>,
    // Not cleared by a reset: only read together with `enabled`, which a
    // reset clears and only a host line sets.
    last_host: Option<Instant>,
    // Test records and hooks, outside the board's RAM.
    ignore_acks: bool,
    host_lines: Vec<String>,
    errors_sent: Vec<String>,
    inhibited_after: Option<Duration>,
}

impl BoardState {
    /// A board with no power yet: it sends nothing until [`Self::power_up`].
    fn new(timings: BoardTimings) -> Self {
        BoardState {
            timings,
            powered: false,
            boot_id: 0,
            next_seq: 1,
            enabled: false,
            unacked: Vec::new(),
            last_host: None,
            ignore_acks: false,
            host_lines: Vec::new(),
            errors_sent: Vec::new(),
            inhibited_after: None,
        }
    }

    fn ready_line(&self) -> String {
        format!("READY:v2:{:08x}", self.boot_id)
    }

    fn leased(&self, now: Instant) -> bool {
        self.last_host
            .is_some_and(|t| now.saturating_duration_since(t) < self.timings.lease)
    }

    fn accepting(&self, now: Instant) -> bool {
        self.powered
            && self.enabled
            && self.leased(now)
            && self.unacked.len() < self.timings.capacity
    }

    fn unacked(&self) -> Vec<BoardCredit> {
        self.unacked.iter().map(|p| p.credit.clone()).collect()
    }

    fn error(&mut self, what: &str) -> String {
        self.errors_sent.push(what.to_owned());
        format!("ERR:{what}")
    }

    /// Power-up or reset: RAM starts over under `boot_id`. Returns the
    /// credits that were in RAM.
    fn power_up(&mut self, boot_id: u32) -> (Vec<BoardCredit>, Vec<String>) {
        let lost = self.unacked();
        self.powered = true;
        self.boot_id = boot_id;
        self.next_seq = 1;
        self.enabled = false;
        self.unacked.clear();
        (lost, vec![self.ready_line()])
    }

    /// Power gone: nothing is accepted or sent; RAM stays readable for the
    /// test until the next power-up forgets it.
    fn power_off(&mut self) {
        self.powered = false;
    }

    fn host_line(&mut self, text: &str, now: Instant) -> Vec<String> {
        self.host_lines.push(text.to_owned());
        if !self.powered {
            return Vec::new();
        }
        self.last_host = Some(now);
        match text {
            "ENABLE" => self.enabled = true,
            "DISABLE" => self.enabled = false,
            "HELLO" => {
                let mut lines = vec![self.ready_line()];
                for p in &mut self.unacked {
                    p.last_sent = now;
                    lines.push(p.credit.line());
                }
                return lines;
            }
            // A host that says nothing else still keeps the lease alive.
            "" => {}
            _ => match text.strip_prefix("ACK:").map(str::parse::<u64>) {
                Some(Ok(seq)) => {
                    // An ACK for a credit the board no longer holds (a
                    // duplicate, or one from before a reset) changes nothing.
                    if !self.ignore_acks {
                        self.unacked.retain(|p| p.credit.seq != seq);
                    }
                }
                _ => return vec![self.error("unknown command")],
            },
        }
        Vec::new()
    }

    fn insert(&mut self, kind: Money, amount: i64, now: Instant) -> Option<Vec<String>> {
        if !self.accepting(now) {
            return None;
        }
        let credit = BoardCredit {
            seq: self.next_seq,
            kind,
            amount,
        };
        self.next_seq += 1;
        let mut lines = vec![credit.line()];
        self.unacked.push(Pending {
            credit,
            last_sent: now,
        });
        // Only an insert adds a credit, and none is taken while full: this
        // is the one moment the buffer fills.
        if self.unacked.len() >= self.timings.capacity {
            lines.push(self.error("full"));
        }
        Some(lines)
    }

    fn lease_deadline(&self) -> Option<Instant> {
        if !self.powered || !self.enabled {
            return None;
        }
        self.last_host
            .and_then(|t| t.checked_add(self.timings.lease))
    }

    /// The next instant [`Self::tick`] has something to do, if any.
    fn next_deadline(&self) -> Option<Instant> {
        if !self.powered {
            return None;
        }
        let resend = self
            .unacked
            .iter()
            .filter_map(|p| p.last_sent.checked_add(self.timings.resend))
            .min();
        match (self.lease_deadline(), resend) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires whatever timers are due at `now`.
    fn tick(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.powered {
            return lines;
        }
        if let (Some(deadline), Some(last)) = (self.lease_deadline(), self.last_host)
            && now >= deadline
        {
            self.enabled = false;
            self.inhibited_after = Some(now.saturating_duration_since(last));
            lines.push(self.error("lease"));
        }
        let resend = self.timings.resend;
        for p in &mut self.unacked {
            if now.saturating_duration_since(p.last_sent) >= resend {
                p.last_sent = now;
                lines.push(p.credit.line());
            }
        }
        lines
    }
}

/// A message for the task that writes the port.
enum Out {
    /// A board line, without its newline; lost if the write fails.
    Line(String),
    /// Bytes from [`FakeBoard::send_raw`], with where to report the result.
    Raw(Vec<u8>, oneshot::Sender<io::Result<()>>),
}

struct Inner {
    board: BoardState,
    /// The current port's writer; `None` while unplugged.
    out: Option<mpsc::Sender<Out>>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the timer task to recompute its deadline.
    timer_wake: Notify,
    /// Bumped after every change, for the `wait_*` methods.
    changed: watch::Sender<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state at tokio's current time and queues the lines
    /// it returns, under one lock so lines go out in the order the state
    /// produced them.
    fn apply<T>(&self, f: impl FnOnce(&mut BoardState, Instant) -> (T, Vec<String>)) -> T {
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
    fn update<T>(&self, f: impl FnOnce(&mut BoardState, Instant) -> (T, Vec<String>)) -> T {
        let value = self.apply(f);
        self.timer_wake.notify_one();
        value
    }
}

async fn run_timers(shared: Arc<Shared>) {
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
struct Port {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Port {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

fn attach<S>(shared: &Arc<Shared>, io: S, at_eof: AtEof) -> Port
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream, Lines, ReadHalf, WriteHalf};

    const LONG: Duration = Duration::from_secs(60);

    /// The agent's end of the line, in memory.
    struct Host {
        lines: Lines<BufReader<ReadHalf<DuplexStream>>>,
        wr: WriteHalf<DuplexStream>,
    }

    impl Host {
        /// Sends `line` and waits until the board has read it.
        async fn send(&mut self, board: &FakeBoard, line: &str) {
            let count = board.host_lines().len() + 1;
            self.wr
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            assert!(
                board.wait_host_lines(count, LONG).await,
                "board read {line}"
            );
        }

        /// The next board line; panics after a minute of (virtual) silence.
        async fn line(&mut self) -> String {
            tokio::time::timeout(LONG, self.lines.next_line())
                .await
                .expect("a board line within a minute")
                .unwrap()
                .expect("the board hung up")
        }

        /// The next board line if one comes within `window`.
        async fn line_within(&mut self, window: Duration) -> Option<String> {
            tokio::time::timeout(window, self.lines.next_line())
                .await
                .ok()
                .map(|line| line.unwrap().expect("the board hung up"))
        }
    }

    fn board_with(timings: BoardTimings) -> (FakeBoard, Host) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let board = FakeBoard::on_stream(theirs, timings).unwrap();
        let (rd, wr) = tokio::io::split(ours);
        let host = Host {
            lines: BufReader::new(rd).lines(),
            wr,
        };
        (board, host)
    }

    /// A board on defaults whose READY line has been read.
    async fn board() -> (FakeBoard, Host) {
        let (board, mut host) = board_with(BoardTimings::default());
        assert_eq!(host.line().await, format!("READY:v2:{}", board.boot_id()));
        (board, host)
    }

    /// A board that was sent ENABLE.
    async fn enabled_board() -> (FakeBoard, Host) {
        let (board, mut host) = board().await;
        host.send(&board, "ENABLE").await;
        assert!(board.accepting());
        (board, host)
    }

    fn is_boot_id(id: &str) -> bool {
        id.len() == 8
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    fn seqs(credits: &[BoardCredit]) -> Vec<u64> {
        credits.iter().map(|c| c.seq).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn ready_v2_with_a_fresh_boot_id_per_boot() {
        let (board, mut host) = board_with(BoardTimings::default());
        let ready = host.line().await;
        let id = ready.strip_prefix("READY:v2:").expect(&ready).to_owned();
        assert!(is_boot_id(&id), "{id}");
        assert_eq!(board.boot_id(), id);
        let mut seen = vec![id];
        for _ in 0..5 {
            board.reset().await;
            let id = board.boot_id();
            assert!(is_boot_id(&id), "{id}");
            assert_eq!(host.line().await, format!("READY:v2:{id}"));
            assert!(!seen.contains(&id), "boot id {id} used twice");
            seen.push(id);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn inhibited_until_enable_and_after_disable() {
        let (board, mut host) = board().await;
        assert!(!board.accepting());
        assert!(!board.insert(Money::Bill, 500).await);
        // Other host lines renew the lease but do not enable.
        host.send(&board, "HELLO").await;
        assert_eq!(host.line().await, format!("READY:v2:{}", board.boot_id()));
        host.send(&board, "DISABLE").await;
        assert!(!board.insert(Money::Bill, 500).await);
        assert_eq!(host.line_within(Duration::from_millis(500)).await, None);

        host.send(&board, "ENABLE").await;
        assert!(board.wait_accepting(true, Duration::ZERO).await);
        assert!(board.insert(Money::Bill, 500).await);
        assert_eq!(host.line().await, "CREDIT:1:BILL:500");

        host.send(&board, "DISABLE").await;
        assert!(!board.accepting());
        assert!(!board.insert(Money::Coin, 100).await);
        assert_eq!(seqs(&board.unacked()), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn credits_are_numbered_from_one() {
        let (board, mut host) = enabled_board().await;
        assert!(board.insert(Money::Bill, 500).await);
        assert!(board.insert(Money::Coin, 100).await);
        assert_eq!(host.line().await, "CREDIT:1:BILL:500");
        assert_eq!(host.line().await, "CREDIT:2:COIN:100");
        assert_eq!(
            board.unacked(),
            [
                BoardCredit {
                    seq: 1,
                    kind: Money::Bill,
                    amount: 500
                },
                BoardCredit {
                    seq: 2,
                    kind: Money::Coin,
                    amount: 100
                },
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn credit_is_resent_every_second_until_acked() {
        let (board, mut host) = enabled_board().await;
        let t0 = Instant::now();
        assert!(board.insert(Money::Bill, 500).await);
        assert_eq!(host.line().await, "CREDIT:1:BILL:500");
        for n in 1..=2 {
            assert_eq!(host.line().await, "CREDIT:1:BILL:500");
            assert_eq!(t0.elapsed(), Duration::from_secs(n));
        }
        host.send(&board, "ACK:1").await;
        assert!(board.unacked().is_empty());
        // Nothing more until the lease (renewed by the ACK at 2 s) runs out.
        assert_eq!(host.line().await, "ERR:lease");
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn ack_forgets_exactly_that_seq() {
        let (board, mut host) = enabled_board().await;
        for amount in [100, 200, 300] {
            assert!(board.insert(Money::Coin, amount).await);
            host.line().await;
        }
        host.send(&board, "ACK:2").await;
        assert_eq!(seqs(&board.unacked()), [1, 3]);
        // Unknown and repeated ACKs change nothing.
        host.send(&board, "ACK:2").await;
        host.send(&board, "ACK:9").await;
        assert_eq!(seqs(&board.unacked()), [1, 3]);
        assert_eq!(host.line().await, "CREDIT:1:COIN:100");
        assert_eq!(host.line().await, "CREDIT:3:COIN:300");
        assert!(board.errors_sent().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn hello_reannounces_and_resends_without_reset() {
        let (board, mut host) = enabled_board().await;
        let id = board.boot_id();
        let t0 = Instant::now();
        assert!(board.insert(Money::Bill, 500).await);
        assert!(board.insert(Money::Coin, 50).await);
        host.line().await;
        host.line().await;

        tokio::time::sleep(Duration::from_millis(400)).await;
        host.send(&board, "HELLO").await;
        assert_eq!(host.line().await, format!("READY:v2:{id}"));
        assert_eq!(host.line().await, "CREDIT:1:BILL:500");
        assert_eq!(host.line().await, "CREDIT:2:COIN:50");
        assert_eq!(t0.elapsed(), Duration::from_millis(400));
        assert_eq!(board.boot_id(), id);
        assert!(board.accepting(), "HELLO keeps the board enabled");

        // The next re-send counts from the HELLO.
        assert_eq!(host.line().await, "CREDIT:1:BILL:500");
        assert_eq!(t0.elapsed(), Duration::from_millis(1400));
        assert_eq!(host.line().await, "CREDIT:2:COIN:50");
        assert!(board.insert(Money::Bill, 1000).await);
        assert_eq!(host.line().await, "CREDIT:3:BILL:1000");
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expires_three_seconds_after_the_last_host_line() {
        let (board, mut host) = enabled_board().await;
        let t0 = Instant::now();
        assert_eq!(host.line().await, "ERR:lease");
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        assert!(!board.accepting());
        assert!(!board.insert(Money::Bill, 500).await);
        assert_eq!(board.inhibited_after(), Some(Duration::from_secs(3)));
        assert_eq!(board.last_host_line_age(), Some(Duration::from_secs(3)));
        assert_eq!(board.errors_sent(), ["lease"]);

        // Once per expiry, not once per second.
        assert_eq!(host.line_within(Duration::from_secs(10)).await, None);
        // A host line renews the lease, but only ENABLE enables again.
        host.send(&board, "ACK:7").await;
        assert!(!board.accepting());
        host.send(&board, "ENABLE").await;
        assert!(board.accepting());
        assert!(board.insert(Money::Bill, 500).await);
        assert_eq!(host.line().await, "CREDIT:1:BILL:500");
        assert_eq!(board.errors_sent(), ["lease"]);
    }

    #[tokio::test(start_paused = true)]
    async fn any_host_line_renews_the_lease() {
        let (board, mut host) = enabled_board().await;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        host.send(&board, "BOGUS").await;
        assert_eq!(host.line().await, "ERR:unknown command");
        assert_eq!(host.line().await, "ERR:lease");
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        assert_eq!(board.inhibited_after(), Some(Duration::from_secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_every_second_keep_it_accepting() {
        let (board, mut host) = enabled_board().await;
        for second in 1..=10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(board.accepting(), "at {second} s");
            host.send(&board, "ENABLE").await;
        }
        assert!(board.insert(Money::Coin, 200).await);
        assert_eq!(host.line().await, "CREDIT:1:COIN:200");
        assert!(board.errors_sent().is_empty());
        assert_eq!(board.inhibited_after(), None);
        // Renewals stop: the lease runs out 3 s after the last one.
        host.send(&board, "ACK:1").await;
        let t0 = Instant::now();
        assert!(board.wait_accepting(false, LONG).await);
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        assert_eq!(host.line().await, "ERR:lease");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_buffer_inhibits_until_an_ack_frees_room() {
        let (board, mut host) = enabled_board().await;
        for seq in 1..=16 {
            assert!(board.insert(Money::Coin, 100).await, "credit {seq}");
            assert_eq!(host.line().await, format!("CREDIT:{seq}:COIN:100"));
        }
        assert_eq!(host.line().await, "ERR:full");
        assert_eq!(board.errors_sent(), ["full"]);
        assert!(!board.accepting());
        assert!(!board.insert(Money::Coin, 100).await);
        assert_eq!(board.unacked().len(), 16);

        host.send(&board, "ACK:5").await;
        assert!(board.accepting());
        assert!(board.insert(Money::Bill, 500).await);
        assert_eq!(host.line().await, "CREDIT:17:BILL:500");
        // Full again: reported again, once.
        assert_eq!(host.line().await, "ERR:full");
        assert_eq!(board.errors_sent(), ["full", "full"]);
        assert!(!board.insert(Money::Coin, 100).await);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_forgets_ram_and_restarts_seq() {
        let (board, mut host) = enabled_board().await;
        let old_id = board.boot_id();
        assert!(board.insert(Money::Bill, 500).await);
        assert!(board.insert(Money::Coin, 100).await);
        host.line().await;
        host.line().await;
        host.send(&board, "ACK:1").await;

        let lost = board.reset().await;
        assert_eq!(
            lost,
            [BoardCredit {
                seq: 2,
                kind: Money::Coin,
                amount: 100
            }]
        );
        let new_id = board.boot_id();
        assert_ne!(new_id, old_id);
        assert_eq!(host.line().await, format!("READY:v2:{new_id}"));
        assert!(board.unacked().is_empty());
        assert!(!board.accepting(), "inhibited after a reset");
        assert!(!board.insert(Money::Bill, 500).await);

        host.send(&board, "ENABLE").await;
        assert!(board.insert(Money::Bill, 2000).await);
        assert_eq!(host.line().await, "CREDIT:1:BILL:2000");
        // Only the new credit is re-sent.
        assert_eq!(host.line().await, "CREDIT:1:BILL:2000");
        assert_eq!(host.line().await, "CREDIT:1:BILL:2000");
    }

    #[tokio::test(start_paused = true)]
    async fn ignored_acks_keep_the_credit_resending() {
        let (board, mut host) = enabled_board().await;
        board.set_ignore_acks(true);
        assert!(board.insert(Money::Bill, 500).await);
        assert_eq!(host.line().await, "CREDIT:1:BILL:500");
        host.send(&board, "ACK:1").await;
        assert_eq!(board.host_lines().last().map(String::as_str), Some("ACK:1"));
        assert_eq!(seqs(&board.unacked()), [1]);
        assert_eq!(host.line().await, "CREDIT:1:BILL:500");
        assert!(!board.wait_all_acked(Duration::from_millis(500)).await);

        board.set_ignore_acks(false);
        host.send(&board, "ACK:1").await;
        assert!(board.wait_all_acked(Duration::ZERO).await);
    }

    #[tokio::test(start_paused = true)]
    async fn cr_before_newline_is_ignored_and_unknown_lines_answered() {
        let (board, mut host) = board().await;
        host.wr.write_all(b"ENABLE\r\n").await.unwrap();
        assert!(board.wait_accepting(true, LONG).await);
        host.send(&board, "ACK:x").await;
        assert_eq!(host.line().await, "ERR:unknown command");
        host.send(&board, "BILL:1000").await;
        assert_eq!(host.line().await, "ERR:unknown command");
        assert_eq!(board.host_lines(), ["ENABLE", "ACK:x", "BILL:1000"]);
        assert_eq!(board.errors_sent(), ["unknown command", "unknown command"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_port_loses_lines_but_not_credits() {
        // A tiny pipe the host does not read: writes block, time out and
        // are lost; the board's state carries on.
        let (ours, theirs) = tokio::io::duplex(8);
        let board = FakeBoard::on_stream(theirs, BoardTimings::default()).unwrap();
        let (rd, mut wr) = tokio::io::split(ours);
        wr.write_all(b"ENABLE\n").await.unwrap();
        assert!(board.wait_accepting(true, LONG).await);
        assert!(board.insert(Money::Bill, 500).await);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(seqs(&board.unacked()), [1]);
        assert!(board.accepting());
        let err = board.send_raw(b"noise\n").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // The host reads again and asks: the credit is still there. What
        // was stuck in the pipe comes first, and the line whose write timed
        // out part-way has the next line glued to it.
        let mut host = Host {
            lines: BufReader::new(rd).lines(),
            wr,
        };
        host.send(&board, "HELLO").await;
        let ready = format!("READY:v2:{}", board.boot_id());
        let mut stale = Vec::new();
        loop {
            let line = host.line().await;
            if line.ends_with(&ready) {
                break;
            }
            stale.push(line);
            assert!(stale.len() < 10, "no {ready} after {stale:?}");
        }
        assert_eq!(host.line().await, "CREDIT:1:BILL:500");
        assert_eq!(seqs(&board.unacked()), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn send_raw_writes_bytes_as_they_are() {
        let (board, mut host) = board().await;
        board.send_raw(b"BILL:1000\nhalf a").await.unwrap();
        board.send_raw(b" line\n").await.unwrap();
        assert_eq!(host.line().await, "BILL:1000");
        assert_eq!(host.line().await, "half a line");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_board_unplugs_by_hanging_up_and_cannot_replug() {
        let (mut board, mut host) = enabled_board().await;
        let err = board.replug().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert!(board.accepting(), "a failed replug changes nothing");

        assert!(board.insert(Money::Coin, 100).await);
        assert_eq!(host.line().await, "CREDIT:1:COIN:100");
        board.unplug();
        assert!(!board.accepting());
        assert!(!board.insert(Money::Coin, 100).await);
        let end = tokio::time::timeout(LONG, host.lines.next_line()).await;
        assert_eq!(end.unwrap().unwrap(), None, "the host reads EOF");
        let err = board.send_raw(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        // RAM is still there to look at: the power is off, not reset.
        assert_eq!(seqs(&board.unacked()), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_resend_is_refused() {
        let (_, theirs) = tokio::io::duplex(64);
        let timings = BoardTimings {
            resend: Duration::ZERO,
            ..BoardTimings::default()
        };
        let err = FakeBoard::on_stream(theirs, timings).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// Over a real pty, opened with tokio-serial the way the agent opens it.
    mod pty {
        use super::*;
        use tokio::io::AsyncBufReadExt;
        use tokio_serial::{SerialPortBuilderExt, SerialStream};

        const WAIT: Duration = Duration::from_secs(5);

        fn open(board: &FakeBoard) -> Lines<BufReader<SerialStream>> {
            let path = board.path().to_string_lossy().into_owned();
            let port = tokio_serial::new(path, 115_200)
                .open_native_async()
                .unwrap();
            BufReader::new(port).lines()
        }

        async fn send(port: &mut Lines<BufReader<SerialStream>>, line: &str) {
            let wr = port.get_mut().get_mut();
            wr.write_all(format!("{line}\n").as_bytes()).await.unwrap();
            wr.flush().await.unwrap();
        }

        /// Reads lines until `want`; panics after 5 s.
        async fn expect(port: &mut Lines<BufReader<SerialStream>>, want: &str) {
            let found = tokio::time::timeout(WAIT, async {
                while let Some(line) = port.next_line().await.unwrap() {
                    if line == want {
                        return;
                    }
                }
            })
            .await;
            assert!(found.is_ok(), "no {want} within 5 s");
        }

        #[tokio::test]
        async fn an_agent_on_the_pty_gets_credits_across_closes_and_replugs() {
            let dir = tempfile::tempdir().unwrap();
            let timings = BoardTimings {
                lease: Duration::from_secs(30),
                ..BoardTimings::default()
            };
            let mut board = FakeBoard::start_with(dir.path(), timings).unwrap();
            assert_eq!(board.path(), dir.path().join("cash"));

            let mut port = open(&board);
            send(&mut port, "HELLO").await;
            expect(&mut port, &format!("READY:v2:{}", board.boot_id())).await;
            send(&mut port, "ENABLE").await;
            assert!(board.wait_accepting(true, WAIT).await);
            assert!(board.insert(Money::Bill, 500).await);
            expect(&mut port, "CREDIT:1:BILL:500").await;
            send(&mut port, "ACK:1").await;
            assert!(board.wait_all_acked(WAIT).await);

            // The agent closes the port; the board's writes go nowhere
            // meanwhile, but it keeps the credit and re-sends it.
            assert!(board.insert(Money::Coin, 100).await);
            drop(port);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(seqs(&board.unacked()), [2]);
            let mut port = open(&board);
            send(&mut port, "HELLO").await;
            expect(&mut port, &format!("READY:v2:{}", board.boot_id())).await;
            expect(&mut port, "CREDIT:2:COIN:100").await;

            // Unplugged: the agent's port fails and the name goes away.
            let old_id = board.boot_id();
            board.unplug();
            assert!(!board.accepting());
            let ended = tokio::time::timeout(WAIT, async {
                loop {
                    match port.next_line().await {
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => return,
                    }
                }
            })
            .await;
            assert!(ended.is_ok(), "the agent's port still works after unplug");
            assert!(!board.path().exists());

            board.replug().unwrap();
            assert_ne!(board.boot_id(), old_id);
            assert!(board.unacked().is_empty());
            let mut port = open(&board);
            send(&mut port, "HELLO").await;
            expect(&mut port, &format!("READY:v2:{}", board.boot_id())).await;
            send(&mut port, "ENABLE").await;
            assert!(board.wait_accepting(true, WAIT).await);
            assert!(board.insert(Money::Bill, 1000).await);
            expect(&mut port, "CREDIT:1:BILL:1000").await;
        }
    }
}
