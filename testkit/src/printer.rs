//! A fake raw-TCP (port 9100) ESC/POS printer for tests and for running the
//! example configs on one machine.
//!
//! It answers every `DLE EOT n` real-time status request (n = 1, 2, 3, 4)
//! in the incoming stream at once, with the Epson status byte for the
//! current [`FakeStatus`], and records every other byte. Each connection
//! that sent anything besides status requests is one job, complete when the
//! connection closes.
//!
//! Fault knobs for tests: [`FakePrinter::set_hold_connections`] keeps the
//! connection open after the job's last byte (a printer that never closes
//! its side), [`FakePrinter::set_stall_after`] stops reading after a number
//! of bytes (a jammed printer: the client's write blocks mid-job).

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

const DLE: u8 = 0x10;
const EOT: u8 = 0x04;

/// Bits every real-time status byte has: `0xx1xx10` (bit 1 and bit 4 set).
const FIXED_BITS: u8 = 0b0001_0010;

/// Paper sensor state of the fake printer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FakePaper {
    /// Paper present, not near the end.
    #[default]
    Ok,
    /// Near-end sensor triggered; still prints.
    NearEnd,
    /// No paper.
    Out,
}

impl FromStr for FakePaper {
    type Err = String;

    /// `ok`, `near-end` or `out`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ok" => Ok(FakePaper::Ok),
            "near-end" => Ok(FakePaper::NearEnd),
            "out" => Ok(FakePaper::Out),
            other => Err(format!("paper must be ok, near-end or out, got {other:?}")),
        }
    }
}

/// What the fake printer reports. Each field maps to its own bits, nothing
/// is derived: a test sets exactly what it wants to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeStatus {
    /// `DLE EOT 1` bit 3 clear when true.
    pub online: bool,
    /// `DLE EOT 2` bit 2 set when true.
    pub cover_open: bool,
    /// `DLE EOT 4` bits 2 and 3 for near end; bits 2, 3, 5 and 6 plus
    /// `DLE EOT 2` bit 5 (stopped at paper end) for out.
    pub paper: FakePaper,
}

impl Default for FakeStatus {
    /// Online, cover closed, paper ok.
    fn default() -> Self {
        FakeStatus {
            online: true,
            cover_open: false,
            paper: FakePaper::Ok,
        }
    }
}

impl FakeStatus {
    /// The answer byte to `DLE EOT n` (Epson ESC/POS reference): `Some` for
    /// n = 1 (printer), 2 (offline cause), 3 (error cause: never an error)
    /// and 4 (roll paper sensor), `None` for other n.
    pub fn status_byte(&self, n: u8) -> Option<u8> {
        let bit = |set: bool, mask: u8| if set { mask } else { 0 };
        let paper_out = self.paper == FakePaper::Out;
        let near_end = self.paper != FakePaper::Ok;
        match n {
            1 => Some(FIXED_BITS | bit(!self.online, 0b0000_1000)),
            2 => Some(FIXED_BITS | bit(self.cover_open, 0b0000_0100) | bit(paper_out, 0b0010_0000)),
            3 => Some(FIXED_BITS),
            4 => Some(FIXED_BITS | bit(near_end, 0b0000_1100) | bit(paper_out, 0b0110_0000)),
            _ => None,
        }
    }

    /// The answer bytes to the requests `DLE EOT n` for each `n` of
    /// `queries`, in order ([`FakeStatus::status_byte`]; n without an
    /// answer is skipped).
    pub fn answers(&self, queries: &[u8]) -> Vec<u8> {
        queries
            .iter()
            .filter_map(|&q| self.status_byte(q))
            .collect()
    }
}

/// `wait_for_jobs` gave up.
#[derive(Debug, thiserror::Error)]
#[error("waited {} ms for {wanted} jobs, got {got}", waited.as_millis())]
pub struct JobsTimeout {
    /// Jobs asked for.
    pub wanted: usize,
    /// Jobs complete when the wait ended.
    pub got: usize,
    /// How long it waited.
    pub waited: Duration,
}

/// The fake printer, listening until dropped.
pub struct FakePrinter {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    state: Mutex<State>,
    /// Count of complete jobs, for waiters.
    jobs_done: watch::Sender<usize>,
    /// See [`FakePrinter::set_hold_connections`].
    hold: watch::Sender<bool>,
    /// See [`FakePrinter::set_stall_after`].
    stall_after: watch::Sender<Option<usize>>,
    /// Connections stalled right now, for waiters.
    stalled: watch::Sender<usize>,
}

struct State {
    status: FakeStatus,
    reachable: bool,
    silent: bool,
    jobs: Vec<Vec<u8>>,
    status_queries: usize,
    connections: usize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the recorded jobs.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FakePrinter {
    /// Starts a fake printer on `127.0.0.1` with a port chosen by the OS.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start() -> std::io::Result<FakePrinter> {
        FakePrinter::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a fake printer on `addr` (port 0: chosen by the OS). Must be
    /// called inside a tokio runtime; the printer is a task on it.
    ///
    /// # Errors
    /// The bind error, e.g. the port is taken.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<FakePrinter> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                status: FakeStatus::default(),
                reachable: true,
                silent: false,
                jobs: Vec::new(),
                status_queries: 0,
                connections: 0,
            }),
            jobs_done: watch::Sender::new(0),
            hold: watch::Sender::new(false),
            stall_after: watch::Sender::new(None),
            stalled: watch::Sender::new(0),
        });
        let task = tokio::spawn(serve(listener, Arc::clone(&shared)));
        tracing::debug!(%addr, "fake printer listening");
        Ok(FakePrinter { addr, shared, task })
    }

    /// Where it listens; use as the printer's `address`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what the next status answers report.
    pub fn set_status(&self, status: FakeStatus) {
        self.shared.state().status = status;
    }

    /// What status answers currently report.
    pub fn status(&self) -> FakeStatus {
        self.shared.state().status
    }

    /// When false, every new connection is reset right after it is accepted
    /// (as if the printer were switched off); open connections carry on.
    /// Default true.
    pub fn set_reachable(&self, reachable: bool) {
        self.shared.state().reachable = reachable;
    }

    /// When true, status requests are counted but never answered, so a
    /// client waiting for a status byte times out (a hung printer). Jobs
    /// are still recorded. Default false.
    pub fn set_silent(&self, silent: bool) {
        self.shared.state().silent = silent;
    }

    /// When true, a connection whose client finished sending is recorded as
    /// a job but kept open (the printer does not close its side) until this
    /// is set back to false: a client that waits for the printer to close
    /// stays in the middle of its write, where a test can kill it. Default
    /// false.
    pub fn set_hold_connections(&self, hold: bool) {
        self.shared.hold.send_replace(hold);
    }

    /// `Some(n)`: every connection stops reading once it has received `n`
    /// bytes (job bytes and status requests alike), and stays open, until
    /// this is set to `None`; then it reads on. The client's writes fill the
    /// socket buffers and then block, as with a jammed printer: a test can
    /// kill the client mid-write, or let its write time out. The socket
    /// buffers take some bytes first (on loopback with Linux defaults about
    /// 3 MB; `kiosk-agent` sizes its send buffer to 64 KiB), so the job
    /// must be larger than that. A stalled
    /// connection's bytes are not a job yet. Applies to connections open
    /// now as well as new ones. Default `None`.
    pub fn set_stall_after(&self, bytes: Option<usize>) {
        self.shared.stall_after.send_replace(bytes);
    }

    /// Waits until at least `n` connections are stalled by
    /// [`FakePrinter::set_stall_after`]; false after `timeout`.
    pub async fn wait_for_stalled(&self, n: usize, timeout: Duration) -> bool {
        let mut stalled = self.shared.stalled.subscribe();
        tokio::time::timeout(timeout, stalled.wait_for(|&count| count >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Every complete job so far, in the order their data ended.
    pub fn jobs(&self) -> Vec<Vec<u8>> {
        self.shared.state().jobs.clone()
    }

    /// How many `DLE EOT n` requests arrived, answered or not.
    pub fn status_queries(&self) -> usize {
        self.shared.state().status_queries
    }

    /// How many connections were accepted, including reset ones.
    pub fn connections(&self) -> usize {
        self.shared.state().connections
    }

    /// Waits until at least `n` jobs are complete (their data ended)
    /// and returns all jobs.
    ///
    /// # Errors
    /// [`JobsTimeout`] when fewer than `n` are complete after `timeout`.
    pub async fn wait_for_jobs(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>, JobsTimeout> {
        let mut done = self.shared.jobs_done.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            done.wait_for(|&count| count >= n).await.map(drop)
        })
        .await;
        match reached {
            Ok(Ok(())) => Ok(self.jobs()),
            _ => Err(JobsTimeout {
                wanted: n,
                got: self.shared.state().jobs.len(),
                waited: timeout,
            }),
        }
    }
}

impl Drop for FakePrinter {
    /// Stops listening and drops open connections.
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here so that aborting this task aborts every connection too.
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pass, don't spin.
                tracing::warn!(error = %e, "fake printer: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let reachable = {
            let mut state = shared.state();
            state.connections += 1;
            state.reachable
        };
        if !reachable {
            tracing::debug!(%peer, "fake printer unreachable: resetting connection");
            // A reset rather than a clean close: the client sees an error,
            // not a printer that took the job.
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        }
        connections.spawn(connection(stream, peer, Arc::clone(&shared)));
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut scanner = Scanner::default();
    let mut job = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut received = 0usize;
    let mut stall = shared.stall_after.subscribe();
    loop {
        let limit = stall
            .borrow_and_update()
            .map(|n| n.saturating_sub(received));
        if limit == Some(0) {
            tracing::debug!(%peer, bytes = received, "fake printer: stalled");
            shared.stalled.send_modify(|n| *n += 1);
            let _ = stall.wait_for(|s| s.is_none_or(|n| n > received)).await;
            shared.stalled.send_modify(|n| *n -= 1);
            continue;
        }
        let want = limit.map_or(buf.len(), |l| l.min(buf.len()));
        let n = match stream.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        received += n;
        let queries = scanner.feed(&buf[..n], &mut job);
        if queries.is_empty() {
            continue;
        }
        let answers: Vec<u8> = {
            let mut state = shared.state();
            state.status_queries += queries.len();
            if state.silent {
                Vec::new()
            } else {
                state.status.answers(&queries)
            }
        };
        if !answers.is_empty() && stream.write_all(&answers).await.is_err() {
            break;
        }
    }
    scanner.finish(&mut job);
    if job.is_empty() {
        return;
    }
    tracing::debug!(%peer, bytes = job.len(), "fake printer: job complete");
    {
        let mut state = shared.state();
        state.jobs.push(job);
        // Under the lock, so waiters see counts in order.
        shared.jobs_done.send_replace(state.jobs.len());
    }
    let mut hold = shared.hold.subscribe();
    let _ = hold.wait_for(|held| !held).await;
}

/// Where the scanner is inside a possible `DLE EOT n`; requests may arrive
/// split across reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ScanState {
    #[default]
    Data,
    Dle,
    DleEot,
    /// Just answered a request; escpos 0.20 sends `DLE EOT n 0x00` (a
    /// parameter byte only n = 7, 8, 18 take), so one NUL here is part of
    /// the request. Printers ignore a stray NUL.
    AfterQuery,
}

/// Separates status requests from job bytes.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    state: ScanState,
}

impl Scanner {
    /// Appends job bytes to `job` and returns the `n` of every complete
    /// `DLE EOT n` (n = 1 to 4) in `bytes`, in order.
    pub(crate) fn feed(&mut self, bytes: &[u8], job: &mut Vec<u8>) -> Vec<u8> {
        use ScanState::*;
        let mut queries = Vec::new();
        for &b in bytes {
            self.state = match (self.state, b) {
                (AfterQuery, 0x00) => Data,
                (Data | AfterQuery, DLE) => Dle,
                (Data | AfterQuery, b) => {
                    job.push(b);
                    Data
                }
                (Dle, EOT) => DleEot,
                (Dle, DLE) => {
                    job.push(DLE);
                    Dle
                }
                (Dle, b) => {
                    job.extend([DLE, b]);
                    Data
                }
                (DleEot, n @ 1..=4) => {
                    queries.push(n);
                    AfterQuery
                }
                (DleEot, DLE) => {
                    job.extend([DLE, EOT]);
                    Dle
                }
                (DleEot, b) => {
                    job.extend([DLE, EOT, b]);
                    Data
                }
            };
        }
        queries
    }

    /// At the end of the connection: a partial request was job data.
    fn finish(&mut self, job: &mut Vec<u8>) {
        match self.state {
            ScanState::Dle => job.push(DLE),
            ScanState::DleEot => job.extend([DLE, EOT]),
            ScanState::Data | ScanState::AfterQuery => {}
        }
        self.state = ScanState::Data;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn status_bytes_follow_the_epson_layout() {
        let all_good = FakeStatus::default();
        assert_eq!(
            [1, 2, 3, 4].map(|n| all_good.status_byte(n)),
            [Some(0x12), Some(0x12), Some(0x12), Some(0x12)]
        );
        assert_eq!(all_good.status_byte(7), None);

        let offline = FakeStatus {
            online: false,
            ..FakeStatus::default()
        };
        assert_eq!(offline.status_byte(1), Some(0x1a));

        let cover = FakeStatus {
            cover_open: true,
            ..FakeStatus::default()
        };
        assert_eq!(cover.status_byte(2), Some(0x16));
        assert_eq!(cover.status_byte(1), Some(0x12));

        let near_end = FakeStatus {
            paper: FakePaper::NearEnd,
            ..FakeStatus::default()
        };
        assert_eq!(near_end.status_byte(4), Some(0x1e));
        assert_eq!(near_end.status_byte(2), Some(0x12));

        let out = FakeStatus {
            paper: FakePaper::Out,
            ..FakeStatus::default()
        };
        assert_eq!(out.status_byte(4), Some(0x7e));
        assert_eq!(out.status_byte(2), Some(0x32));

        for status in [all_good, offline, cover, near_end, out] {
            for n in 1..=4 {
                let byte = status.status_byte(n).unwrap();
                assert_eq!(
                    byte & 0b1001_0011,
                    FIXED_BITS,
                    "{status:?} n={n}: {byte:08b}"
                );
            }
        }
    }

    #[test]
    fn scanner_separates_requests_from_job_bytes() {
        let mut scanner = Scanner::default();
        let mut job = Vec::new();
        let queries = scanner.feed(
            b"\x1b@\x10\x04\x01\x00hi\x10\x04\x04\x10\x05\x10\x04\x07\x01",
            &mut job,
        );
        assert_eq!(queries, [1, 4]);
        assert_eq!(job, b"\x1b@hi\x10\x05\x10\x04\x07\x01");
    }

    #[test]
    fn scanner_handles_requests_split_across_reads() {
        let mut scanner = Scanner::default();
        let mut job = Vec::new();
        let stream = b"ab\x10\x04\x02\x00cd\x10\x10\x04\x04";
        let mut queries = Vec::new();
        for byte in stream {
            queries.extend(scanner.feed(&[*byte], &mut job));
        }
        assert_eq!(queries, [2, 4]);
        assert_eq!(job, b"abcd\x10");

        // A request cut off by the end of the connection is data.
        let mut job = Vec::new();
        assert!(scanner.feed(b"x\x10\x04", &mut job).is_empty());
        scanner.finish(&mut job);
        assert_eq!(job, b"x\x10\x04");
    }

    async fn ask(stream: &mut TcpStream, n: u8) -> u8 {
        stream.write_all(&[DLE, EOT, n, 0]).await.unwrap();
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.unwrap();
        answer[0]
    }

    #[tokio::test]
    async fn answers_status_with_the_current_state() {
        let printer = FakePrinter::start().await.unwrap();
        let mut stream = TcpStream::connect(printer.addr()).await.unwrap();
        assert_eq!(ask(&mut stream, 1).await, 0x12);
        printer.set_status(FakeStatus {
            online: false,
            cover_open: true,
            paper: FakePaper::Out,
        });
        assert_eq!(ask(&mut stream, 1).await, 0x1a);
        assert_eq!(ask(&mut stream, 2).await, 0x36);
        assert_eq!(ask(&mut stream, 4).await, 0x7e);
        drop(stream);
        assert_eq!(printer.status_queries(), 4);
        // Only status requests: not a job.
        assert!(
            printer
                .wait_for_jobs(1, Duration::from_millis(200))
                .await
                .is_err()
        );
        assert!(printer.jobs().is_empty());
    }

    #[tokio::test]
    async fn each_connection_is_one_job() {
        let printer = FakePrinter::start().await.unwrap();
        for job in [&b"\x1b@first\n"[..], b"\x1b@second\n"] {
            let mut stream = TcpStream::connect(printer.addr()).await.unwrap();
            // A status request in the middle is answered and left out.
            stream.write_all(&job[..3]).await.unwrap();
            assert_eq!(ask(&mut stream, 4).await, 0x12);
            stream.write_all(&job[3..]).await.unwrap();
            stream.shutdown().await.unwrap();
            // The fake closes after the client's end of stream.
            assert_eq!(stream.read(&mut [0u8; 1]).await.unwrap(), 0);
        }
        let jobs = printer.wait_for_jobs(2, WAIT).await.unwrap();
        assert_eq!(jobs, [b"\x1b@first\n".to_vec(), b"\x1b@second\n".to_vec()]);
        assert_eq!(printer.connections(), 2);
    }

    #[tokio::test]
    async fn unreachable_resets_new_connections() {
        let printer = FakePrinter::start().await.unwrap();
        printer.set_reachable(false);
        let mut stream = TcpStream::connect(printer.addr()).await.unwrap();
        let _ = stream.write_all(b"lost").await;
        let mut buf = [0u8; 1];
        assert!(matches!(stream.read(&mut buf).await, Ok(0) | Err(_)));
        printer.set_reachable(true);
        let mut stream = TcpStream::connect(printer.addr()).await.unwrap();
        assert_eq!(ask(&mut stream, 1).await, 0x12);
        assert!(printer.jobs().is_empty());
    }

    #[tokio::test]
    async fn silent_never_answers() {
        let printer = FakePrinter::start().await.unwrap();
        printer.set_silent(true);
        let mut stream = TcpStream::connect(printer.addr()).await.unwrap();
        stream.write_all(&[DLE, EOT, 1, 0]).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        assert!(read.is_err(), "expected no answer");
        assert!(
            crate::wait_until(WAIT, Duration::from_millis(5), || printer.status_queries()
                == 1)
            .await
        );
    }

    #[tokio::test]
    async fn stall_stops_reading_mid_job_until_released() {
        let printer = FakePrinter::start().await.unwrap();
        printer.set_stall_after(Some(1000));
        let job: Vec<u8> = (0..8 * 1024 * 1024u32)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let mut stream = TcpStream::connect(printer.addr()).await.unwrap();
        // The buffers take a few MB, then the write blocks.
        let blocked =
            tokio::time::timeout(Duration::from_millis(500), stream.write_all(&job)).await;
        assert!(
            blocked.is_err(),
            "an 8 MB write must block on a stalled printer"
        );
        assert!(printer.wait_for_stalled(1, WAIT).await);
        assert!(printer.jobs().is_empty());

        // Released: it reads on, and the job is whole. (The write above
        // was cancelled part-way, so start a new connection.)
        printer.set_stall_after(None);
        drop(stream);
        let jobs = printer.wait_for_jobs(1, WAIT).await.unwrap();
        assert!(!jobs[0].is_empty() && jobs[0].len() < job.len());
        let mut stream = TcpStream::connect(printer.addr()).await.unwrap();
        stream.write_all(&job).await.unwrap();
        stream.shutdown().await.unwrap();
        let jobs = printer.wait_for_jobs(2, WAIT).await.unwrap();
        assert_eq!(jobs[1], job);
    }

    #[test]
    fn paper_parses_from_cli_words() {
        assert_eq!("near-end".parse::<FakePaper>(), Ok(FakePaper::NearEnd));
        assert_eq!("out".parse::<FakePaper>(), Ok(FakePaper::Out));
        assert!("empty".parse::<FakePaper>().is_err());
    }
}
