use super::*;
use tokio::io::{
    AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines, ReadHalf, WriteHalf,
};

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
