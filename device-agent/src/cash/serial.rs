//! The [`Acceptor`] on the serial port: opens it (and reopens it when it
//! disappears), then one loop per open port that commands the board
//! (`ENABLE`/`DISABLE` as the acceptance wants, lease renewals, `HELLO`)
//! and hands each line it reads to `board.rs`.

use std::sync::Arc;
use std::time::Duration;

use kiosk_schemas::CashDeviceStatus;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::board::{Board, LineOutcome};
use super::line::{self, Splitter};
use super::{Cash, CashStats, DISABLE_GRACE, LEASE_RENEW};
use crate::config::CashConfig;
use crate::status::StatusBoard;

/// Longest time a command write to the port may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Least time between two `HELLO`s to a board whose boot id is unknown.
const HELLO_EVERY: Duration = Duration::from_secs(1);

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::cash::CONFIRM_DELAY;
    use crate::cash::outbox::Outbox;
    use kiosk_schemas::{CashAction, CashControl, CashState, Currency, V1};
    use tokio::sync::mpsc;

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

    /// The board says `ready`, the cloud enables `session` for `due`, and
    /// the board hears `ENABLE`.
    async fn ready_then_enable(
        arduino: &mut tokio::io::DuplexStream,
        cash: &Cash,
        ready: &[u8],
        session: &str,
        due: i64,
    ) {
        arduino.write_all(ready).await.unwrap();
        cash.control(&enable(session, due)).await.unwrap();
        read_until(arduino, b"ENABLE\n").await;
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
        ready_then_enable(&mut arduino, &cash, b"READY\n", "s1", 5000).await;
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
        ready_then_enable(&mut arduino, &cash, b"READY\n", "s1", 100_000).await;

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
        ready_then_enable(&mut arduino, &cash, b"READY:v2:0badcafe\n", "s1", 5000).await;
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
