//! The cash acceptor: credits from a serial bill/coin validator, recorded in
//! a durable outbox before anything else, sent to the cloud until it
//! acknowledges them (DESIGN.md, "Cash credits").
//!
//! - [`line`]: the serial protocol (`BILL:`, `COIN:`, `READY`; `ENABLE`,
//!   `DISABLE`).
//! - [`outbox`]: the sled outbox that numbers credits (`seq`).
//! - [`Acceptor`]: owns the serial port (tokio-serial): reopens it when it
//!   disappears, records each credit (flushed) and wakes the [`Sender`],
//!   and drives `ENABLE`/`DISABLE` from what the cloud asks
//!   ([`Acceptance`]) — but disables acceptance whenever credits cannot be
//!   recorded, so no money goes in unrecorded.
//! - [`Sender`]: publishes unacknowledged credits on `kiosk/<id>/cash`:
//!   new ones at once, all of them after every reconnect, and any still
//!   unacknowledged every `cash.resend_interval`.

pub mod line;
pub mod outbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kiosk_schemas::CashDeviceStatus;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::CashConfig;
use crate::connection::Publisher;
use crate::status::StatusBoard;
use line::{Line, Piece, Splitter};
use outbox::Outbox;

/// Longest time a command write to the port may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the cloud wants the acceptor to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Acceptance {
    /// Refuse money (the state at start and after `disable`).
    #[default]
    Disabled,
    /// Accept money for this payment session.
    Enabled {
        /// The session, reported with each credit (informative).
        session_id: Option<String>,
    },
}

/// Counters of the acceptor, for logs and tests.
#[derive(Debug, Default)]
pub struct CashStats {
    /// Credits recorded.
    pub credits: AtomicU64,
    /// Garbled lines ignored.
    pub malformed: AtomicU64,
    /// Credits read that could NOT be recorded (store failure).
    pub unrecorded: AtomicU64,
}

/// The serial side.
pub struct Acceptor {
    /// `[cash]` configuration.
    pub config: CashConfig,
    /// Where credits go.
    pub outbox: Outbox,
    /// Where the acceptor's state is shown.
    pub board: StatusBoard,
    /// What the cloud asks for.
    pub desired: watch::Receiver<Acceptance>,
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
            unacked: self.outbox.len() as u64,
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
        let mut enabled = false;
        let mut store_failed = false;
        self.show(true, false);

        // Opening the port resets an Arduino Uno: give it `settle` to say
        // READY before commanding it. Credits read meanwhile still count.
        let settle = tokio::time::sleep(self.config.settle);
        tokio::pin!(settle);
        let mut settled = false;
        loop {
            if settled {
                let want =
                    matches!(*self.desired.borrow(), Acceptance::Enabled { .. }) && !store_failed;
                if want != enabled {
                    if let Err(why) = command(&mut wr, want).await {
                        return Ended::PortGone(why);
                    }
                    enabled = want;
                    tracing::info!(
                        enabled,
                        "cash acceptor {}",
                        if want { "enabled" } else { "disabled" }
                    );
                    self.show(true, enabled);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Nobody records credits once we are gone.
                    let _ = command(&mut wr, false).await;
                    return Ended::Shutdown;
                }
                _ = &mut settle, if !settled => {
                    settled = true;
                }
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        let _ = command(&mut wr, false).await;
                        return Ended::Shutdown;
                    }
                    if store_failed && matches!(*self.desired.borrow(), Acceptance::Enabled { .. }) {
                        // Enable again only once the store takes writes.
                        store_failed = self.outbox.flush().await.is_err();
                    }
                }
                read = rd.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => return Ended::PortGone("end of file".to_owned()),
                        Ok(n) => n,
                        Err(e) => return Ended::PortGone(e.to_string()),
                    };
                    for piece in splitter.feed(&buf[..n]) {
                        match self.line(piece).await {
                            LineOutcome::Ready => {
                                settled = true;
                                // The board (re)started inhibited: a reset
                                // mid-session needs `ENABLE` again.
                                if enabled {
                                    enabled = false;
                                    self.show(true, false);
                                }
                            }
                            LineOutcome::Unrecorded => {
                                store_failed = true;
                                if let Err(why) = command(&mut wr, false).await {
                                    return Ended::PortGone(why);
                                }
                                enabled = false;
                                self.show(true, false);
                            }
                            LineOutcome::Done => {}
                        }
                    }
                }
            }
        }
    }

    async fn line(&self, piece: Piece) -> LineOutcome {
        let raw = match piece {
            Piece::Line(raw) => raw,
            Piece::TooLong => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("cash acceptor sent an over-long line; ignored");
                return LineOutcome::Done;
            }
        };
        match line::parse(&raw, self.config.max_credit) {
            Ok(Line::Credit { kind, amount }) => self.record(kind, amount).await,
            Ok(Line::Ready) => {
                tracing::info!("cash acceptor ready");
                LineOutcome::Ready
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

    async fn record(&self, kind: kiosk_schemas::CreditKind, amount: i64) -> LineOutcome {
        let session = match &*self.desired.borrow() {
            Acceptance::Enabled { session_id } => session_id.clone(),
            Acceptance::Disabled => None,
        };
        let appended = self
            .outbox
            .append(kind, amount, &self.config.currency, session);
        let stored = match appended {
            Ok(event) => self.outbox.flush().await.map(|()| event),
            Err(e) => Err(e),
        };
        match stored {
            Ok(event) => {
                self.stats.credits.fetch_add(1, Ordering::Relaxed);
                tracing::info!(seq = event.seq, kind = ?kind, amount, currency = %event.currency, "credit recorded");
                self.board.set_cash_unacked(self.outbox.len() as u64);
                self.recorded.notify_one();
                LineOutcome::Done
            }
            Err(e) => {
                self.stats.unrecorded.fetch_add(1, Ordering::Relaxed);
                // The money is in the machine but not in our books: say so
                // loudly, with what an operator needs to reconcile.
                tracing::error!(error = %e, kind = ?kind, amount, currency = %self.config.currency,
                    "CREDIT NOT RECORDED: store failed; disabling the acceptor");
                LineOutcome::Unrecorded
            }
        }
    }
}

enum LineOutcome {
    Done,
    Ready,
    Unrecorded,
}

async fn command<W: AsyncWrite + Unpin>(wr: &mut W, enable: bool) -> Result<(), String> {
    let bytes = if enable { line::ENABLE } else { line::DISABLE };
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
/// [`SEND_WINDOW`] at a time, lowest `seq` first.
pub struct Sender {
    /// The outbox.
    pub outbox: Outbox,
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
        // connection.
        let mut sent: HashMap<u64, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(self.resend_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let resend_older_than = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.recorded.notified() => None,
                r = self.connects.changed() => {
                    if r.is_err() {
                        break;
                    }
                    // A new connection: whatever was in flight may be lost.
                    sent.clear();
                    None
                }
                _ = tick.tick() => Some(self.resend_interval),
            };
            // Acknowledgements delete a prefix of the outbox, so the credits
            // in flight are always the lowest ones left.
            let window = match self.outbox.unacked_window(SEND_WINDOW) {
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
                        () = self.publisher.publish_cash(&event) => {}
                    }
                    sent.insert(event.seq, Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiosk_schemas::Currency;

    fn acceptor(dir: &std::path::Path) -> (Acceptor, watch::Sender<Acceptance>, Arc<Notify>) {
        let db = sled::open(dir).unwrap();
        let (tx, rx) = watch::channel(Acceptance::Disabled);
        let recorded = Arc::new(Notify::new());
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
            outbox: Outbox::open(&db).unwrap(),
            board: StatusBoard::new(&names),
            desired: rx,
            recorded: recorded.clone(),
            stats: Arc::default(),
        };
        (acc, tx, recorded)
    }

    /// The acceptor logic against an in-memory duplex "port".
    #[tokio::test]
    async fn records_credits_ignores_garbage_and_follows_control() {
        let dir = tempfile::tempdir().unwrap();
        let (mut acc, desired, _recorded) = acceptor(dir.path());
        let outbox = acc.outbox.clone();
        let stats = acc.stats.clone();
        let (board_side, mut arduino) = tokio::io::duplex(1024);
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { acc.serve(board_side, &token).await });

        arduino.write_all(b"READY\n").await.unwrap();
        desired.send_replace(Acceptance::Enabled {
            session_id: Some("s1".into()),
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"ENABLE\n") {
            let n = arduino.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        arduino
            .write_all(b"BILL:1000\nBILL:abc\nFOO\n\xff\xfe\nCOIN:200\r\n")
            .await
            .unwrap();
        while outbox.unacked().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let events = outbox.unacked().unwrap();
        assert_eq!(
            events.iter().map(|e| e.amount).collect::<Vec<_>>(),
            [1000, 200]
        );
        assert_eq!(events[0].session_id.as_deref(), Some("s1"));
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 3);

        desired.send_replace(Acceptance::Disabled);
        got.clear();
        while !got.ends_with(b"DISABLE\n") {
            let n = arduino.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
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
        let (mut acc, desired, _recorded) = acceptor(dir.path());
        let (board_side, mut arduino) = tokio::io::duplex(1024);
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { acc.serve(board_side, &token).await });
        arduino.write_all(b"READY\n").await.unwrap();
        desired.send_replace(Acceptance::Enabled { session_id: None });
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

    async fn read_until(arduino: &mut tokio::io::DuplexStream, want: &[u8]) {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(want) {
            let n = arduino.read(&mut buf).await.unwrap();
            assert!(n > 0, "port closed");
            got.extend_from_slice(&buf[..n]);
        }
    }

    /// A credit that cannot be recorded disables the acceptor at once, and
    /// acceptance comes back only when asked again with a working store.
    #[tokio::test]
    async fn store_failure_disables_the_acceptor() {
        let dir = tempfile::tempdir().unwrap();
        let (mut acc, desired, _recorded) = acceptor(dir.path());
        let outbox = acc.outbox.clone();
        let stats = acc.stats.clone();
        let (board_side, mut arduino) = tokio::io::duplex(1024);
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { acc.serve(board_side, &token).await });
        arduino.write_all(b"READY\n").await.unwrap();
        desired.send_replace(Acceptance::Enabled { session_id: None });
        read_until(&mut arduino, b"ENABLE\n").await;

        outbox.fail_appends(true);
        arduino.write_all(b"BILL:1000\n").await.unwrap();
        read_until(&mut arduino, b"DISABLE\n").await;
        assert_eq!(stats.unrecorded.load(Ordering::Relaxed), 1);
        assert!(outbox.is_empty());

        outbox.fail_appends(false);
        desired.send_replace(Acceptance::Enabled {
            session_id: Some("s2".into()),
        });
        read_until(&mut arduino, b"ENABLE\n").await;
        arduino.write_all(b"BILL:500\n").await.unwrap();
        while outbox.unacked().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(outbox.unacked().unwrap()[0].amount, 500);
        shutdown.cancel();
        read_until(&mut arduino, b"DISABLE\n").await;
        assert!(matches!(task.await.unwrap(), Ended::Shutdown));
    }
}
