//! The cash acceptor: credits from a serial bill/coin validator, recorded in
//! a durable outbox before anything else, sent to the cloud until it
//! acknowledges them (DESIGN.md, "Cash credits").
//!
//! - [`line`]: the serial protocol (v2: `READY:v2:<boot id>`,
//!   `CREDIT:<seq>:...`, `ACK:<seq>`, `HELLO`; v1: `BILL:`, `COIN:`,
//!   `READY`; both: `ENABLE`, `DISABLE`, `ERR:`).
//! - [`acceptance`]: which session the acceptor takes money for (pure).
//! - [`outbox`]: the sled outbox that numbers credits (`seq`) and stores the
//!   acceptance with them.
//! - [`Cash`]: the one place that changes the acceptance: a control from
//!   the cloud or a credit, each stored and flushed before the board hears
//!   of it, reported on `kiosk/<id>/cash/state`.
//! - [`Acceptor`]: owns the serial port (tokio-serial): reopens it when it
//!   disappears, records each credit (flushed) before acknowledging it to a
//!   v2 board, renews a v2 board's lease every second while enabled, and
//!   disables acceptance whenever credits cannot be recorded, so no money
//!   goes in unrecorded.
//! - [`Sender`]: publishes unacknowledged credits on `kiosk/<id>/cash`:
//!   new ones at once, all of them after every reconnect, and any still
//!   unacknowledged every `cash.resend_interval`; and the acceptance
//!   reports on `kiosk/<id>/cash/state`.

pub mod acceptance;
pub mod line;
pub mod outbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiosk_schemas::{
    CashAction, CashControl, CashDeviceStatus, CashState, CreditKind, Topic, wire,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::CashConfig;
use crate::connection::Publisher;
use crate::status::StatusBoard;
use acceptance::SessionState;
use line::{Line, Piece, Splitter};
use outbox::{BoardRef, Outbox, OutboxError, Recorded};

/// Longest time a command write to the port may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often `ENABLE` is repeated while enabled: a v2 board inhibits after
/// 3 s without a line from the host (its lease), so a dead agent cannot
/// leave the slot open.
pub const LEASE_RENEW: Duration = Duration::from_secs(1);

/// After `DISABLE` is written, how long a credit the board reports still
/// belongs to the session that was enabled: a coin already falling when the
/// slot closed, or a line already on the wire.
pub const DISABLE_GRACE: Duration = Duration::from_millis(500);

/// How long after a session's acceptance ends its end is reported on
/// `kiosk/<id>/cash/state`: time for the acceptor to write `DISABLE`, plus
/// [`DISABLE_GRACE`].
pub const CONFIRM_DELAY: Duration = Duration::from_millis(700);

/// Least time between two `HELLO`s to a board whose boot id is unknown.
const HELLO_EVERY: Duration = Duration::from_secs(1);

/// Acceptance reports queued for the [`Sender`]; beyond that they are
/// dropped (the cloud asks again with its next control).
const STATE_QUEUE: usize = 64;

/// Counters of the acceptor, for logs and tests.
#[derive(Debug, Default)]
pub struct CashStats {
    /// Credits recorded.
    pub credits: AtomicU64,
    /// Credits a v2 board reported again after they were recorded (their
    /// `ACK` was lost): acknowledged again, not recorded twice.
    pub duplicates: AtomicU64,
    /// Garbled lines ignored.
    pub malformed: AtomicU64,
    /// Credits read that could NOT be recorded (store failure).
    pub unrecorded: AtomicU64,
}

/// The acceptance in force and everything that changes it; cheap to clone.
///
/// Every change — a `cash/control` from the cloud, a credit that completes
/// the amount due — is stored in the outbox's transaction and flushed
/// before the board is commanded (the acceptor follows
/// [`Cash::subscribe`]) and before it is reported on `kiosk/<id>/cash/state`.
/// One lock orders the changes, so the board always ends in the state
/// stored last.
#[derive(Clone)]
pub struct Cash {
    outbox: Outbox,
    order: Arc<tokio::sync::Mutex<()>>,
    enabled: Arc<watch::Sender<Option<SessionState>>>,
    states: mpsc::Sender<CashState>,
}

impl Cash {
    /// Restores the acceptance stored in `outbox` (a restart keeps taking
    /// money for the session that was enabled); reports go to the returned
    /// receiver (give it to the [`Sender`]).
    ///
    /// # Errors
    /// [`OutboxError`] when the stored acceptance cannot be read.
    pub fn open(outbox: Outbox) -> Result<(Cash, mpsc::Receiver<CashState>), OutboxError> {
        let restored = outbox.acceptance()?.enabled().cloned();
        if let Some(s) = &restored {
            tracing::info!(session = %s.session_id, amount_due = s.amount_due, inserted = s.inserted,
                "cash acceptance restored: enabled for the session open before the restart");
        }
        let (tx, rx) = mpsc::channel(STATE_QUEUE);
        Ok((
            Cash {
                outbox,
                order: Arc::default(),
                enabled: Arc::new(watch::channel(restored).0),
                states: tx,
            },
            rx,
        ))
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Follows the enabled session (`None`: refuse money).
    pub fn subscribe(&self) -> watch::Receiver<Option<SessionState>> {
        self.enabled.subscribe()
    }

    /// Queues the report of `state`. The end of a session is reported
    /// [`CONFIRM_DELAY`] later, with the session as it is then: the board
    /// may take a coin until it has read `DISABLE`, and such a coin (and one
    /// within [`DISABLE_GRACE`] after it) is the session's, so the
    /// confirmation's `last_seq` should cover it.
    fn report(&self, state: Option<&SessionState>) {
        match state {
            Some(s) if !s.is_enabled() => {
                let cash = self.clone();
                let then = s.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(CONFIRM_DELAY).await;
                    match cash.outbox.acceptance() {
                        Ok(a) => {
                            cash.send_report(Some(a.session(&then.session_id).unwrap_or(&then)))
                        }
                        Err(e) => tracing::error!(error = %e, "cannot read the cash acceptance"),
                    }
                });
            }
            _ => self.send_report(state),
        }
    }

    fn send_report(&self, state: Option<&SessionState>) {
        let msg = self.outbox.state_message(state);
        if let Err(e) = self.states.try_send(msg) {
            tracing::warn!(error = %e, "cash state report dropped; the cloud asks again");
        }
    }

    /// Applies a `cash/control` from the cloud: stores the new acceptance,
    /// flushes, then lets the acceptor follow and reports the states it
    /// changed (see [`acceptance::Acceptance::enable`] and `disable`).
    ///
    /// # Errors
    /// [`OutboxError`] when it cannot be stored: nothing changed.
    pub async fn control(&self, control: &CashControl) -> Result<(), OutboxError> {
        let _order = self.order.lock().await;
        let session = control.session_id.clone();
        let due = control.amount_due.unwrap_or(0);
        let (reports, acceptance) = self.outbox.control(|a| match control.action {
            CashAction::Enable => match &session {
                Some(id) => a.enable(id, due),
                None => {
                    tracing::warn!("cash enable without a session id ignored");
                    Vec::new()
                }
            },
            CashAction::Disable => a.disable(session.as_deref()).into_iter().collect(),
        })?;
        self.outbox.flush().await?;
        let enabled = acceptance.enabled().cloned();
        tracing::info!(action = ?control.action, session = ?control.session_id,
            enabled = ?enabled.as_ref().map(|s| s.session_id.as_str()), "cash control applied");
        self.enabled.send_replace(enabled);
        if reports.is_empty() {
            self.report(acceptance.latest());
        }
        for r in &reports {
            self.report(Some(r));
        }
        Ok(())
    }

    /// Records a credit (see [`Outbox::append`]; `grace`: the session the
    /// acceptor stopped for within [`DISABLE_GRACE`]) and flushes it. When
    /// it completed the session's amount due the acceptor is told to stop
    /// and the ended session is reported; a credit for an ended session
    /// reports that session again (its `last_seq` moved).
    ///
    /// # Errors
    /// [`OutboxError`] when it cannot be stored or flushed: the credit may
    /// not be on disk; the caller disables the acceptor and does not
    /// acknowledge it to the board.
    pub async fn record(
        &self,
        kind: CreditKind,
        amount: i64,
        currency: &kiosk_schemas::Currency,
        board: Option<&BoardRef>,
        grace: Option<&str>,
    ) -> Result<Recorded, OutboxError> {
        let _order = self.order.lock().await;
        let recorded = self.outbox.append(kind, amount, currency, board, grace)?;
        self.outbox.flush().await?;
        if let Recorded::New(a) = &recorded {
            if a.ended_now {
                if let Some(s) = &a.session {
                    tracing::info!(session = %s.session_id, inserted = s.inserted, amount_due = s.amount_due,
                        "amount due reached: the kiosk stops accepting for this session");
                }
                self.enabled.send_replace(None);
                self.report(a.session.as_ref());
            } else if let Some(s) = a.session.as_ref().filter(|s| !s.is_enabled()) {
                tracing::info!(session = %s.session_id, seq = a.event.seq,
                    "credit read just after the acceptor closed: it is the session's");
                self.report(Some(s));
            }
        }
        Ok(recorded)
    }

    /// Queues a report of the acceptance in force now (after a reconnect).
    pub fn report_current(&self) {
        match self.outbox.acceptance() {
            Ok(a) => self.send_report(a.latest()),
            Err(e) => tracing::error!(error = %e, "cannot read the cash acceptance"),
        }
    }
}

/// What the board on the port speaks, as far as it has said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Board {
    /// Nothing heard yet on this port.
    Unknown,
    /// `READY`, `BILL:`, `COIN:`.
    V1,
    /// `READY:v2:<boot id>`.
    V2 { boot_id: String },
}

/// The serial side.
pub struct Acceptor {
    /// `[cash]` configuration.
    pub config: CashConfig,
    /// The acceptance and the outbox.
    pub cash: Cash,
    /// Where the acceptor's state is shown.
    pub board: StatusBoard,
    /// Woken after each recorded credit.
    pub recorded: Arc<Notify>,
    /// Counters.
    pub stats: Arc<CashStats>,
}

/// How a session with an open port ended.
enum Ended {
    Shutdown,
    PortGone(String),
}

impl Acceptor {
    fn show(&self, connected: bool, enabled: bool) {
        self.board.set_cash(CashDeviceStatus {
            connected,
            enabled,
            unacked: self.cash.outbox.len() as u64,
        });
    }

    /// Runs until `shutdown`: opens the port, serves it, and reopens it
    /// every `cash.reopen_interval` while it is missing.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut reported_missing = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let opened = tokio_serial::SerialStream::open(&tokio_serial::new(
                &self.config.port,
                self.config.baud,
            ));
            match opened {
                Ok(port) => {
                    reported_missing = false;
                    tracing::info!(port = %self.config.port, baud = self.config.baud, "cash acceptor connected");
                    match self.serve(port, &shutdown).await {
                        Ended::Shutdown => break,
                        Ended::PortGone(why) => {
                            tracing::warn!(port = %self.config.port, reason = why, "cash acceptor disconnected");
                        }
                    }
                }
                Err(e) => {
                    if !reported_missing {
                        tracing::warn!(port = %self.config.port, error = %e,
                            "cash acceptor port not available; retrying");
                        reported_missing = true;
                    }
                }
            }
            self.show(false, false);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.config.reopen_interval) => {}
            }
        }
        self.show(false, false);
    }

    /// Serves one open port until it fails or `shutdown`.
    async fn serve<P>(&mut self, port: P, shutdown: &CancellationToken) -> Ended
    where
        P: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut rd, mut wr) = tokio::io::split(port);
        let mut splitter = Splitter::default();
        let mut buf = [0u8; 256];
        // What the board was last told; `None` until the first command on
        // this port (a board left enabled by a dead agent must hear
        // DISABLE).
        let mut told: Option<bool> = None;
        let mut wanted = self.cash.subscribe();
        // Until told otherwise, a board that kept running while the agent
        // restarted is enabled for the session restored from the store.
        let mut enabled_for: Option<String> =
            wanted.borrow().as_ref().map(|s| s.session_id.clone());
        let mut closing: Option<(String, tokio::time::Instant)> = None;
        let mut store_failed = false;
        let mut board = Board::Unknown;
        let mut last_hello: Option<tokio::time::Instant> = None;
        self.show(true, false);

        // Opening the port resets an Arduino Uno: give it `settle` to say
        // READY before commanding it. Credits read meanwhile still count.
        let settle = tokio::time::sleep(self.config.settle);
        tokio::pin!(settle);
        let mut settled = false;
        let renew = tokio::time::sleep(LEASE_RENEW);
        tokio::pin!(renew);
        loop {
            let enabled = told == Some(true);
            if settled {
                let session = wanted.borrow().as_ref().map(|s| s.session_id.clone());
                let want = session.is_some() && !store_failed;
                if told != Some(want) {
                    if let Err(why) =
                        command(&mut wr, if want { line::ENABLE } else { line::DISABLE }).await
                    {
                        return Ended::PortGone(why);
                    }
                    let now = tokio::time::Instant::now();
                    renew.as_mut().reset(now + LEASE_RENEW);
                    if !want && let Some(s) = enabled_for.take() {
                        closing = Some((s, now + DISABLE_GRACE));
                    }
                    if want {
                        enabled_for = session;
                    }
                    told = Some(want);
                    tracing::info!(
                        enabled = want,
                        "cash acceptor {}",
                        if want { "enabled" } else { "disabled" }
                    );
                    self.show(true, want);
                    continue;
                }
                if want {
                    // Another session took over without the slot closing.
                    enabled_for = session;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Nobody records credits once we are gone.
                    let _ = command(&mut wr, line::DISABLE).await;
                    return Ended::Shutdown;
                }
                _ = &mut settle, if !settled => {
                    settled = true;
                    if board == Board::Unknown {
                        // A board that did not reset when the port opened
                        // (no DTR reset, or a restart of the agent alone)
                        // says who it is on HELLO.
                        if let Err(why) = command(&mut wr, line::HELLO).await {
                            return Ended::PortGone(why);
                        }
                        last_hello = Some(tokio::time::Instant::now());
                    }
                }
                _ = &mut renew, if enabled => {
                    if let Err(why) = command(&mut wr, line::ENABLE).await {
                        return Ended::PortGone(why);
                    }
                    renew.as_mut().reset(tokio::time::Instant::now() + LEASE_RENEW);
                }
                changed = wanted.changed() => {
                    if changed.is_err() {
                        let _ = command(&mut wr, line::DISABLE).await;
                        return Ended::Shutdown;
                    }
                    if store_failed && wanted.borrow().is_some() {
                        // Enable again only once the store takes writes.
                        store_failed = self.cash.outbox.flush().await.is_err();
                    }
                }
                read = rd.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => return Ended::PortGone("end of file".to_owned()),
                        Ok(n) => n,
                        Err(e) => return Ended::PortGone(e.to_string()),
                    };
                    for piece in splitter.feed(&buf[..n]) {
                        // Until the board hears DISABLE it takes money for
                        // the session it was enabled for (by us, or by the
                        // agent before a restart), even when that session
                        // just ended here (amount due reached by an earlier
                        // line, a cancel); and for DISABLE_GRACE after it, a
                        // coin already falling.
                        let grace = if told != Some(false) {
                            enabled_for.clone()
                        } else {
                            closing
                                .as_ref()
                                .filter(|(_, until)| tokio::time::Instant::now() < *until)
                                .map(|(s, _)| s.clone())
                        };
                        let outcome = self.line(piece, &mut board, grace.as_deref()).await;
                        let reply: Option<Vec<u8>> = match outcome {
                            LineOutcome::Ready => {
                                settled = true;
                                // The board (re)started inhibited: a reset
                                // mid-session needs `ENABLE` again.
                                if told == Some(true) {
                                    told = Some(false);
                                    self.show(true, false);
                                }
                                None
                            }
                            LineOutcome::Inhibited => {
                                if told == Some(true) {
                                    told = Some(false);
                                    self.show(true, false);
                                }
                                None
                            }
                            LineOutcome::Ack(seq) => Some(line::ack(seq)),
                            LineOutcome::WhoAreYou => {
                                let due = last_hello.is_none_or(|t| t.elapsed() >= HELLO_EVERY);
                                if due {
                                    last_hello = Some(tokio::time::Instant::now());
                                    Some(line::HELLO.to_vec())
                                } else {
                                    None
                                }
                            }
                            LineOutcome::Unrecorded => {
                                store_failed = true;
                                told = Some(false);
                                self.show(true, false);
                                Some(line::DISABLE.to_vec())
                            }
                            LineOutcome::Done => None,
                        };
                        if let Some(bytes) = reply {
                            if let Err(why) = command(&mut wr, &bytes).await {
                                return Ended::PortGone(why);
                            }
                            if told == Some(true) {
                                renew.as_mut().reset(tokio::time::Instant::now() + LEASE_RENEW);
                            }
                        }
                    }
                }
            }
        }
    }

    async fn line(&self, piece: Piece, board: &mut Board, grace: Option<&str>) -> LineOutcome {
        let raw = match piece {
            Piece::Line(raw) => raw,
            Piece::TooLong => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("cash acceptor sent an over-long line; ignored");
                return LineOutcome::Done;
            }
        };
        match line::parse(&raw, self.config.max_credit) {
            Ok(Line::Credit { kind, amount }) => {
                if *board == Board::Unknown {
                    *board = Board::V1;
                }
                self.record(kind, amount, None, grace).await
            }
            Ok(Line::BoardCredit { seq, kind, amount }) => match board {
                Board::V2 { boot_id } => {
                    let at = BoardRef {
                        boot_id: boot_id.clone(),
                        seq,
                    };
                    self.record(kind, amount, Some(&at), grace).await
                }
                // Its boot id scopes its seq: without it a credit of a board
                // that reset unseen could pass for a duplicate. It re-sends
                // until acknowledged, so nothing is lost by waiting.
                _ => {
                    tracing::debug!(
                        seq,
                        "credit from a board whose boot id is unknown; asking HELLO"
                    );
                    LineOutcome::WhoAreYou
                }
            },
            Ok(Line::Ready) => {
                tracing::info!(
                    "cash acceptor ready (protocol v1: at most once on the serial line)"
                );
                *board = Board::V1;
                LineOutcome::Ready
            }
            Ok(Line::ReadyV2 { boot_id }) => {
                let fresh = *board
                    != Board::V2 {
                        boot_id: boot_id.clone(),
                    };
                if fresh {
                    tracing::info!(boot_id, "cash acceptor ready (protocol v2)");
                    match self.cash.outbox.forget_boots_other_than(&boot_id) {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(
                            forgotten = n,
                            "credit ids of earlier board boots forgotten"
                        ),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not prune credit ids of earlier boots")
                        }
                    }
                }
                *board = Board::V2 { boot_id };
                LineOutcome::Ready
            }
            Ok(Line::Fault(text)) if text == "lease" => {
                tracing::warn!(
                    "cash acceptor inhibited itself: its lease ran out (the host was silent for 3 s)"
                );
                LineOutcome::Inhibited
            }
            Ok(Line::Fault(text)) if text == "full" => {
                tracing::warn!(
                    "cash acceptor inhibited itself: its buffer of unacknowledged credits is full"
                );
                LineOutcome::Done
            }
            Ok(Line::Fault(text)) => {
                tracing::error!(fault = text, "cash acceptor reports a fault");
                LineOutcome::Done
            }
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "garbled line from the cash acceptor ignored");
                LineOutcome::Done
            }
        }
    }

    async fn record(
        &self,
        kind: CreditKind,
        amount: i64,
        board: Option<&BoardRef>,
        grace: Option<&str>,
    ) -> LineOutcome {
        match self
            .cash
            .record(kind, amount, &self.config.currency, board, grace)
            .await
        {
            Ok(Recorded::New(a)) => {
                let event = &a.event;
                self.stats.credits.fetch_add(1, Ordering::Relaxed);
                tracing::info!(seq = event.seq, kind = ?kind, amount, currency = %event.currency,
                    session = event.session_id.as_deref().unwrap_or("none"),
                    board_seq = ?event.board_seq, "credit recorded");
                self.board.set_cash_unacked(self.cash.outbox.len() as u64);
                self.recorded.notify_one();
                match board {
                    Some(b) => LineOutcome::Ack(b.seq),
                    None => LineOutcome::Done,
                }
            }
            Ok(Recorded::Duplicate { seq }) => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(seq, board_seq = ?board.map(|b| b.seq), "credit reported again by the board; acknowledged again");
                match board {
                    Some(b) => LineOutcome::Ack(b.seq),
                    None => LineOutcome::Done,
                }
            }
            Err(e) => {
                self.stats.unrecorded.fetch_add(1, Ordering::Relaxed);
                // The money is in the machine but not in our books: say so
                // loudly, with what an operator needs to reconcile. A v2
                // board keeps it and reports it again once we recover.
                tracing::error!(error = %e, kind = ?kind, amount, currency = %self.config.currency,
                    board_seq = ?board.map(|b| b.seq),
                    "CREDIT NOT RECORDED: store failed; disabling the acceptor");
                LineOutcome::Unrecorded
            }
        }
    }
}

enum LineOutcome {
    Done,
    Ready,
    /// The board inhibited itself (`ERR:lease`): enable it again if wanted.
    Inhibited,
    /// Answer `ACK:<seq>`.
    Ack(u64),
    /// A v2 credit before the board said its boot id: ask `HELLO`.
    WhoAreYou,
    Unrecorded,
}

async fn command<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        wr.write_all(bytes).await?;
        wr.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err("write timed out".to_owned()),
    }
}

/// Most credits published and not yet acknowledged at once. A kiosk that
/// buffered thousands of credits offline sends them in windows: a burst
/// larger than the broker's in-memory log for `kiosk/+/cash` (see
/// `kiosk_broker::BrokerConfig`) would lose its oldest messages there and
/// stall the drain until the next re-send.
pub const SEND_WINDOW: usize = 256;

/// Publishes the outbox's credits until the cloud acknowledges them, at most
/// [`SEND_WINDOW`] at a time, lowest `seq` first; and the acceptance
/// reports of [`Cash`] on `kiosk/<id>/cash/state`, plus the current one
/// after every reconnect.
pub struct Sender {
    /// The acceptance and outbox.
    pub cash: Cash,
    /// Reports from [`Cash::open`].
    pub states: mpsc::Receiver<CashState>,
    /// The MQTT session.
    pub publisher: Publisher,
    /// Woken after each recorded credit and each acknowledgement.
    pub recorded: Arc<Notify>,
    /// Changes after every CONNACK.
    pub connects: watch::Receiver<u64>,
    /// Re-send period for unacknowledged credits.
    pub resend_interval: Duration,
}

impl Sender {
    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // When each credit of the window was last published on this
        // connection: tokio's clock, like the resend tick, so the two agree
        // under a paused clock in tests.
        let mut sent: HashMap<u64, tokio::time::Instant> = HashMap::new();
        let mut tick = tokio::time::interval(self.resend_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state_topic = Topic::cash_state(self.publisher.kiosk());
        loop {
            let resend_older_than = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.recorded.notified() => None,
                state = self.states.recv() => {
                    if let Some(state) = state
                        && let Err(e) = self.publisher.try_publish(&state_topic, false, wire::encode(&state))
                    {
                        tracing::warn!(error = %e, "publish not enqueued");
                    }
                    continue;
                }
                r = self.connects.changed() => {
                    if r.is_err() {
                        break;
                    }
                    // A new connection: whatever was in flight may be lost.
                    sent.clear();
                    self.cash.report_current();
                    None
                }
                _ = tick.tick() => Some(self.resend_interval),
            };
            // Acknowledgements delete a prefix of the outbox, so the credits
            // in flight are always the lowest ones left.
            let window = match self.cash.outbox.unacked_window(SEND_WINDOW) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the cash outbox");
                    continue;
                }
            };
            // Acknowledged credits left the window from below.
            let lowest = window.first().map_or(u64::MAX, |e| e.seq);
            sent.retain(|seq, _| *seq >= lowest);
            for event in window {
                let due = match (sent.get(&event.seq), resend_older_than) {
                    (None, _) => true,
                    (Some(t), Some(age)) => t.elapsed() >= age,
                    (Some(_), None) => false,
                };
                if due {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = self.publisher.publish_cash(&event) => if let Err(e) = r {
                            tracing::debug!(error = %e, "credit not enqueued: session ended");
                        }
                    }
                    sent.insert(event.seq, tokio::time::Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiosk_schemas::{Currency, V1};

    struct Rig {
        acc: Acceptor,
        cash: Cash,
        states: mpsc::Receiver<CashState>,
    }

    fn rig(dir: &std::path::Path) -> Rig {
        let db = sled::open(dir).unwrap();
        let outbox = Outbox::open(&db).unwrap();
        let (cash, states) = Cash::open(outbox).unwrap();
        let config = CashConfig {
            port: "/nonexistent".into(),
            baud: 9600,
            currency: Currency::new("EUR").unwrap(),
            settle: Duration::from_millis(50),
            reopen_interval: Duration::from_millis(50),
            resend_interval: Duration::from_secs(5),
            max_credit: 100_000,
        };
        let names: [String; 0] = [];
        let acc = Acceptor {
            config,
            cash: cash.clone(),
            board: StatusBoard::new(&names, std::time::Duration::from_secs(30)),
            recorded: Arc::new(Notify::new()),
            stats: Arc::default(),
        };
        Rig { acc, cash, states }
    }

    fn enable(session: &str, due: i64) -> CashControl {
        CashControl {
            v: V1,
            action: CashAction::Enable,
            session_id: Some(session.into()),
            amount_due: Some(due),
            currency: Some(Currency::new("EUR").unwrap()),
        }
    }

    fn disable(session: Option<&str>) -> CashControl {
        CashControl {
            v: V1,
            action: CashAction::Disable,
            session_id: session.map(Into::into),
            amount_due: None,
            currency: None,
        }
    }

    /// Serves `acc` on an in-memory "port": returns the board's end, the
    /// shutdown token and the serving task.
    fn serve(
        mut acc: Acceptor,
    ) -> (
        tokio::io::DuplexStream,
        CancellationToken,
        tokio::task::JoinHandle<Ended>,
    ) {
        let (board_side, arduino) = tokio::io::duplex(4096);
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { acc.serve(board_side, &token).await });
        (arduino, shutdown, task)
    }

    async fn read_until(arduino: &mut tokio::io::DuplexStream, want: &[u8]) -> Vec<u8> {
        // Byte by byte, so nothing after `want` is consumed.
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(want) {
            let n = arduino.read(&mut byte).await.unwrap();
            assert!(n > 0, "port closed");
            got.push(byte[0]);
        }
        got
    }

    async fn wait_unacked(outbox: &Outbox, n: usize) -> Vec<kiosk_schemas::CashEvent> {
        for _ in 0..1000 {
            let events = outbox.unacked().unwrap();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{n} credits not recorded");
    }

    /// The v1 acceptor logic against an in-memory duplex "port".
    #[tokio::test]
    async fn records_credits_ignores_garbage_and_follows_control() {
        let dir = tempfile::tempdir().unwrap();
        let Rig {
            acc,
            cash,
            mut states,
        } = rig(dir.path());
        let outbox = cash.outbox().clone();
        let stats = acc.stats.clone();
        let (mut arduino, shutdown, task) = serve(acc);

        arduino.write_all(b"READY\n").await.unwrap();
        cash.control(&enable("s1", 100_000)).await.unwrap();
        let st = states.recv().await.unwrap();
        assert_eq!((st.session_id.as_deref(), st.enabled), (Some("s1"), true));
        read_until(&mut arduino, b"ENABLE\n").await;
        arduino
            .write_all(b"BILL:1000\nBILL:abc\nFOO\n\xff\xfe\nCOIN:200\r\n")
            .await
            .unwrap();
        let events = wait_unacked(&outbox, 2).await;
        assert_eq!(
            events.iter().map(|e| e.amount).collect::<Vec<_>>(),
            [1000, 200]
        );
        assert_eq!(events[0].session_id.as_deref(), Some("s1"));
        assert_eq!(events[0].board_seq, None, "v1: no board seq");
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 3);

        cash.control(&disable(Some("s1"))).await.unwrap();
        let st = states.recv().await.unwrap();
        assert_eq!(
            (
                st.session_id.as_deref(),
                st.enabled,
                st.last_seq,
                st.inserted
            ),
            (Some("s1"), false, 2, 1200),
            "the disable is confirmed with the last seq of the session"
        );
        read_until(&mut arduino, b"DISABLE\n").await;
        // The port going away ends the session.
        drop(arduino);
        assert!(matches!(task.await.unwrap(), Ended::PortGone(_)));
        shutdown.cancel();
    }

    /// An acceptor that resets mid-session (READY again) starts inhibited:
    /// the agent enables it again.
    #[tokio::test]
    async fn a_board_reset_mid_session_is_enabled_again() {
        let dir = tempfile::tempdir().unwrap();
        let Rig { acc, cash, .. } = rig(dir.path());
        let (mut arduino, shutdown, task) = serve(acc);
        arduino.write_all(b"READY\n").await.unwrap();
        cash.control(&enable("s1", 5000)).await.unwrap();
        read_until(&mut arduino, b"ENABLE\n").await;
        arduino.write_all(b"READY\n").await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            read_until(&mut arduino, b"ENABLE\n"),
        )
        .await
        .expect("ENABLE again after the board's READY");
        shutdown.cancel();
        read_until(&mut arduino, b"DISABLE\n").await;
        assert!(matches!(task.await.unwrap(), Ended::Shutdown));
    }

    /// A credit that cannot be recorded disables the acceptor at once, and
    /// acceptance comes back only when asked again with a working store.
    #[tokio::test]
    async fn store_failure_disables_the_acceptor() {
        let dir = tempfile::tempdir().unwrap();
        let Rig { acc, cash, .. } = rig(dir.path());
        let outbox = cash.outbox().clone();
        let stats = acc.stats.clone();
        let (mut arduino, shutdown, task) = serve(acc);
        arduino.write_all(b"READY\n").await.unwrap();
        cash.control(&enable("s1", 100_000)).await.unwrap();
        read_until(&mut arduino, b"ENABLE\n").await;

        outbox.fail_appends(true);
        arduino.write_all(b"BILL:1000\n").await.unwrap();
        read_until(&mut arduino, b"DISABLE\n").await;
        assert_eq!(stats.unrecorded.load(Ordering::Relaxed), 1);
        assert!(outbox.is_empty());

        outbox.fail_appends(false);
        cash.control(&enable("s2", 100_000)).await.unwrap();
        read_until(&mut arduino, b"ENABLE\n").await;
        arduino.write_all(b"BILL:500\n").await.unwrap();
        let events = wait_unacked(&outbox, 1).await;
        assert_eq!(
            (events[0].amount, events[0].session_id.as_deref()),
            (500, Some("s2"))
        );
        shutdown.cancel();
        read_until(&mut arduino, b"DISABLE\n").await;
        assert!(matches!(task.await.unwrap(), Ended::Shutdown));
    }

    /// Protocol v2: a credit is acknowledged only once it is on disk, a
    /// re-sent one is acknowledged again without a second record, credits
    /// before the boot id is known wait for HELLO, and a new boot numbers
    /// from 1 again without being taken for duplicates.
    #[tokio::test]
    async fn v2_acks_after_flush_dedupes_and_asks_hello() {
        let dir = tempfile::tempdir().unwrap();
        let Rig { acc, cash, .. } = rig(dir.path());
        let outbox = cash.outbox().clone();
        let stats = acc.stats.clone();
        let (mut arduino, shutdown, task) = serve(acc);
        // A board that did not reset: credits before its boot id is known
        // are not recorded; the agent asks who it is.
        arduino.write_all(b"CREDIT:1:COIN:200\n").await.unwrap();
        read_until(&mut arduino, b"HELLO\n").await;
        assert!(outbox.is_empty());
        arduino
            .write_all(b"READY:v2:0badcafe\nCREDIT:1:COIN:200\n")
            .await
            .unwrap();
        read_until(&mut arduino, b"ACK:1\n").await;
        let events = outbox.unacked().unwrap();
        assert_eq!(events.len(), 1, "acknowledged once on disk");
        assert_eq!(
            (events[0].board_boot_id.as_deref(), events[0].board_seq),
            (Some("0badcafe"), Some(1))
        );
        // The ACK was lost: the board sends it again.
        arduino.write_all(b"CREDIT:1:COIN:200\n").await.unwrap();
        read_until(&mut arduino, b"ACK:1\n").await;
        assert_eq!(outbox.len(), 1, "not recorded twice");
        assert_eq!(stats.duplicates.load(Ordering::Relaxed), 1);
        // A reset: new boot id, seq from 1 again.
        arduino
            .write_all(b"READY:v2:12345678\nCREDIT:1:BILL:500\n")
            .await
            .unwrap();
        read_until(&mut arduino, b"ACK:1\n").await;
        assert_eq!(outbox.len(), 2, "a new boot's seq 1 is a new credit");
        shutdown.cancel();
        assert!(matches!(task.await.unwrap(), Ended::Shutdown));
    }

    /// While enabled the agent repeats ENABLE every second (the board's
    /// lease); after ERR:lease it enables again.
    #[tokio::test(start_paused = true)]
    async fn the_lease_is_renewed_every_second_while_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let Rig { acc, cash, .. } = rig(dir.path());
        let (mut arduino, shutdown, task) = serve(acc);
        arduino.write_all(b"READY:v2:0badcafe\n").await.unwrap();
        cash.control(&enable("s1", 5000)).await.unwrap();
        read_until(&mut arduino, b"ENABLE\n").await;
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            read_until(&mut arduino, b"ENABLE\n").await;
        }
        let took = start.elapsed();
        assert!(
            took >= 5 * LEASE_RENEW && took < 6 * LEASE_RENEW,
            "five renewals at one a second: {took:?}"
        );
        arduino.write_all(b"ERR:lease\n").await.unwrap();
        read_until(&mut arduino, b"ENABLE\n").await;
        cash.control(&disable(None)).await.unwrap();
        read_until(&mut arduino, b"DISABLE\n").await;
        // Disabled: no more renewals.
        let mut buf = [0u8; 64];
        assert!(
            tokio::time::timeout(3 * LEASE_RENEW, arduino.read(&mut buf))
                .await
                .is_err(),
            "silent while disabled"
        );
        shutdown.cancel();
        assert!(matches!(task.await.unwrap(), Ended::Shutdown));
    }

    /// The kiosk stops taking money by itself once the credits of the
    /// session reach the amount due (offline or not), and reports it.
    #[tokio::test]
    async fn the_amount_due_reached_disables_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let Rig {
            acc,
            cash,
            mut states,
        } = rig(dir.path());
        let outbox = cash.outbox().clone();
        let (mut arduino, shutdown, task) = serve(acc);
        arduino.write_all(b"READY:v2:0badcafe\n").await.unwrap();
        cash.control(&enable("s1", 2000)).await.unwrap();
        assert!(states.recv().await.unwrap().enabled);
        read_until(&mut arduino, b"ENABLE\n").await;
        // The third line is read with the second, before the board heard
        // DISABLE: the board took it for s1.
        arduino
            .write_all(b"CREDIT:1:BILL:1000\nCREDIT:2:BILL:2000\nCREDIT:3:COIN:50\n")
            .await
            .unwrap();
        let got = read_until(&mut arduino, b"DISABLE\n").await;
        assert!(
            String::from_utf8_lossy(&got).contains("ACK:2"),
            "{}",
            got.escape_ascii()
        );
        // The end is reported once the board has been told, with the coin
        // it took meanwhile.
        let st = states.recv().await.unwrap();
        assert_eq!(
            (
                st.session_id.as_deref(),
                st.enabled,
                st.last_seq,
                st.inserted
            ),
            (Some("s1"), false, 3, 3050)
        );
        // A stale enable of the same session does not reopen the slot.
        cash.control(&enable("s1", 1000)).await.unwrap();
        while let Ok(Some(st)) = tokio::time::timeout(2 * CONFIRM_DELAY, states.recv()).await {
            assert!(!st.enabled, "{st:?}");
        }
        let events = wait_unacked(&outbox, 3).await;
        assert!(
            events.iter().all(|e| e.session_id.as_deref() == Some("s1")),
            "{events:?}"
        );
        shutdown.cancel();
        assert!(matches!(task.await.unwrap(), Ended::Shutdown));
    }
}
