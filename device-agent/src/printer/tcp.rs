//! Printers on raw TCP (port 9100, "AppSocket"/"JetDirect"). Such a printer
//! serves one client at a time, so every call opens its own connection and
//! closes it when done: a status poll never blocks a job for long, and
//! another program can print in between.
//!
//! Status is read with the real-time requests `DLE EOT 1`, `2` and `4`
//! ([`super::realtime`]) on a connection of its own.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use kiosk_schemas::PrinterStatus;

use super::{PrinterDriver, PrinterError, Progress, not_ready, realtime, write_counted};

/// Port used when the address has none.
pub const DEFAULT_PORT: u16 = 9100;

/// Longest wait for the printer to close its side after a job; a printer
/// that keeps the connection open past this has all the bytes anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Send buffer of a job's connection, in bytes (Linux doubles it for its
/// bookkeeping). Small, so that a job is handed over when the printer took
/// nearly all of it rather than when the Pi's kernel queued megabytes, and
/// `bytes_written` overstates what the printer received by at most about
/// this much. Plenty for a printer on the LAN.
const JOB_SEND_BUFFER: usize = 64 * 1024;

/// Shortest timeout std accepts (zero is an error there).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Talks to one raw TCP printer.
#[derive(Debug)]
pub struct TcpDriver {
    /// `host:port`, the port defaulted.
    address: String,
    timeout: Duration,
    /// The connection of the job last handed over, write side shut down,
    /// until [`PrinterDriver::finish_job`] waits for its close.
    handed_over: Option<TcpStream>,
}

impl TcpDriver {
    /// A driver for `address` (`host:port`, `host`, `[v6]:port` or a bare
    /// IPv6 address; the port defaults to 9100), bounding connect, each
    /// write and each status answer by `timeout`. Nothing is resolved or
    /// connected yet.
    pub fn new(address: &str, timeout: Duration) -> Self {
        TcpDriver {
            address: with_default_port(address.trim()),
            timeout: timeout.max(MIN_TIMEOUT),
            handed_over: None,
        }
    }

    /// The address connected to, `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> PrinterError {
        match source.kind() {
            // A socket timeout is WouldBlock on Unix, TimedOut elsewhere.
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => PrinterError::Timeout {
                action,
                target: self.describe(),
                timeout: self.timeout,
            },
            _ => PrinterError::Io {
                action,
                target: self.describe(),
                source,
            },
        }
    }

    /// Resolves the address (again on every call: DHCP and mDNS names move)
    /// and connects to the first address that answers.
    fn connect(&self) -> Result<TcpStream, PrinterError> {
        let resolve_error = |source| PrinterError::Resolve {
            address: self.address.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = self
            .address
            .to_socket_addrs()
            .map_err(resolve_error)?
            .collect();
        let mut last_error = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(stream) => {
                    let setup = |s: &TcpStream| {
                        s.set_read_timeout(Some(self.timeout))?;
                        s.set_write_timeout(Some(self.timeout))?;
                        // Status requests are 4 bytes; don't let Nagle hold them.
                        s.set_nodelay(true)
                    };
                    setup(&stream).map_err(|e| self.io_error("connect to", e))?;
                    return Ok(stream);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(match last_error {
            Some(e) => self.io_error("connect to", e),
            None => resolve_error(io::Error::new(io::ErrorKind::NotFound, "no addresses")),
        })
    }

    fn query_status(&self) -> Result<PrinterStatus, PrinterError> {
        let mut stream = self.connect()?;
        let status = realtime::query(&mut stream, &self.describe(), |action, e| {
            self.io_error(action, e)
        });
        // Nothing more to say; the printer sees the end of the connection.
        let _ = stream.shutdown(Shutdown::Both);
        status
    }

    /// After the job's last byte: waits (briefly) for the printer to close
    /// its side, so the job's end is not a reset that could drop bytes still
    /// in flight, and a printer that reset the connection is reported.
    fn wait_for_close(&self, stream: &mut TcpStream) -> Result<(), PrinterError> {
        let wait = self.timeout.min(CLOSE_WAIT);
        let deadline = Instant::now() + wait;
        stream
            .set_read_timeout(Some(wait))
            .map_err(|e| self.io_error("finish writing to", e))?;
        let mut sink = [0u8; 64];
        while Instant::now() < deadline {
            match stream.read(&mut sink) {
                Ok(0) => return Ok(()),
                // Automatic status bytes, if the printer sends them: not ours.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(self.io_error("finish writing to", e)),
            }
        }
        tracing::debug!(printer = %self.describe(), "printer kept the connection open after the job; closing");
        Ok(())
    }
}

/// Adds `:9100` when `address` has no port, keeping IPv6 literals intact.
fn with_default_port(address: &str) -> String {
    if address.parse::<SocketAddr>().is_ok() {
        return address.to_owned();
    }
    if address.starts_with('[') {
        return if address.ends_with(']') {
            format!("{address}:{DEFAULT_PORT}")
        } else {
            address.to_owned()
        };
    }
    match address.matches(':').count() {
        0 => format!("{address}:{DEFAULT_PORT}"),
        1 => address.to_owned(),
        _ => format!("[{address}]:{DEFAULT_PORT}"),
    }
}

impl PrinterDriver for TcpDriver {
    fn describe(&self) -> String {
        format!("tcp {}", self.address)
    }

    /// One connection with three requests; any failure (refused, timeout,
    /// no or invalid answer) is reported as offline with the reason.
    fn status(&mut self) -> PrinterStatus {
        match self.query_status() {
            Ok(status) => status,
            Err(e) => not_ready(e.to_string()),
        }
    }

    /// Connects (with a send buffer of 64 KiB), writes every byte, then
    /// shuts down the write side: the printer has the whole job, bar what
    /// is still in flight, and its end. The connection stays open for
    /// [`PrinterDriver::finish_job`].
    fn hand_over(&mut self, bytes: &[u8], progress: &Progress) -> Result<(), PrinterError> {
        // A job not finished (its worker stopped in between): close it.
        self.handed_over = None;
        let mut stream = self.connect()?;
        if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(JOB_SEND_BUFFER) {
            // Only the bound on `bytes_written` gets looser.
            tracing::debug!(printer = %self.describe(), error = %e, "cannot size the send buffer");
        }
        write_counted(&mut stream, bytes, progress)
            .and_then(|()| stream.flush())
            .map_err(|e| self.io_error("write to", e))?;
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| self.io_error("finish writing to", e))?;
        tracing::debug!(printer = %self.describe(), bytes = bytes.len(), "job handed over");
        self.handed_over = Some(stream);
        Ok(())
    }

    /// Waits up to 2 s (at most the timeout) for the printer to close the
    /// job's connection, then closes it.
    fn finish_job(&mut self) -> Result<(), PrinterError> {
        match self.handed_over.take() {
            Some(mut stream) => self.wait_for_close(&mut stream),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use escpos::utils::RealTimeStatusRequest;
    use kiosk_schemas::PaperStatus;

    use super::*;
    use crate::render::capture::capture;

    const TIMEOUT: Duration = Duration::from_secs(2);

    /// Answers for: EOT1 online, EOT2 nothing wrong, EOT4 paper adequate.
    const ALL_GOOD: [u8; 3] = [0x12, 0x12, 0x12];

    /// A one-connection printer on a thread: answers each 4-byte status
    /// request with the next byte of `answers`, then returns everything else
    /// it received until the client closed.
    fn peer(answers: Vec<u8>) -> (String, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut answers = answers.into_iter();
            let mut received = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
                while received.len() >= 4 && received[..2] == [0x10, 0x04] {
                    received.drain(..4);
                    if let Some(answer) = answers.next() {
                        stream.write_all(&[answer]).unwrap();
                    }
                }
            }
            received
        });
        (address, handle)
    }

    fn status_with(answers: [u8; 3]) -> PrinterStatus {
        let (address, _peer) = peer(answers.to_vec());
        TcpDriver::new(&address, TIMEOUT).status()
    }

    #[test]
    fn default_port_is_added() {
        assert_eq!(with_default_port("10.0.0.5"), "10.0.0.5:9100");
        assert_eq!(with_default_port("printer.local"), "printer.local:9100");
        assert_eq!(
            with_default_port("printer.local:9101"),
            "printer.local:9101"
        );
        assert_eq!(with_default_port("[::1]:9101"), "[::1]:9101");
        assert_eq!(with_default_port("[::1]"), "[::1]:9100");
        assert_eq!(with_default_port("fe80::1"), "[fe80::1]:9100");
        assert_eq!(
            TcpDriver::new(" 10.0.0.5 ", TIMEOUT).describe(),
            "tcp 10.0.0.5:9100"
        );
    }

    #[test]
    fn all_good_is_ready() {
        let status = status_with(ALL_GOOD);
        assert_eq!(
            status,
            PrinterStatus {
                ready: true,
                online: true,
                paper: PaperStatus::Ok,
                cover_open: false,
                error: None,
            }
        );
    }

    #[test]
    fn offline_cover_and_paper_bits_are_read() {
        let offline = status_with([0x1a, 0x12, 0x12]);
        assert!(!offline.ready && !offline.online);
        assert_eq!(offline.error.as_deref(), Some("offline"));

        let cover = status_with([0x12, 0x16, 0x12]);
        assert!(!cover.ready && cover.online && cover.cover_open);
        assert_eq!(cover.error.as_deref(), Some("cover open"));

        let near_end = status_with([0x12, 0x12, 0x1e]);
        assert!(near_end.ready);
        assert_eq!(near_end.paper, PaperStatus::NearEnd);

        let out = status_with([0x12, 0x12, 0x7e]);
        assert!(!out.ready);
        assert_eq!(out.paper, PaperStatus::Out);
        assert_eq!(out.error.as_deref(), Some("paper out"));

        let stopped = status_with([0x12, 0x32, 0x12]);
        assert_eq!(stopped.paper, PaperStatus::Out);
    }

    #[test]
    fn sends_dle_eot_1_2_4_built_by_escpos() {
        let (address, peer) = peer(ALL_GOOD.to_vec());
        TcpDriver::new(&address, TIMEOUT).status();
        // The peer strips the three requests; nothing else was sent.
        assert_eq!(peer.join().unwrap(), b"");
        let eot1 = capture(None, 48, |p| {
            p.real_time_status(RealTimeStatusRequest::Printer).map(drop)
        })
        .unwrap();
        assert_eq!(&eot1[..3], [0x10, 0x04, 0x01]);
    }

    #[test]
    fn no_answer_is_offline_with_a_timeout() {
        let (address, _peer) = peer(Vec::new());
        let status = TcpDriver::new(&address, Duration::from_millis(200)).status();
        assert!(!status.ready && !status.online);
        assert_eq!(status.paper, PaperStatus::Unknown);
        let error = status.error.unwrap();
        assert!(
            error.contains("timed out after 200 ms") && error.contains(&address),
            "{error}"
        );
    }

    #[test]
    fn invalid_answer_is_offline() {
        let status = status_with([0xff, 0x12, 0x12]);
        assert!(!status.online);
        assert!(status.error.unwrap().contains("no valid status"));
    }

    #[test]
    fn refused_connection_is_offline_and_fails_jobs() {
        let address = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let mut driver = TcpDriver::new(&address, TIMEOUT);
        let status = driver.status();
        assert!(!status.ready && !status.online);
        assert!(status.error.unwrap().contains("cannot connect to tcp"));
        let progress = Progress::default();
        let err = driver.hand_over(b"x", &progress).unwrap_err();
        assert!(err.nothing_written(), "{err}");
        assert!(err.to_string().contains(&address), "{err}");
        assert_eq!(progress.get(), 0);
    }

    #[test]
    fn hand_over_sends_every_byte_on_its_own_connection() {
        let job: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .filter(|&b| b != 0x10)
            .collect();
        let (address, peer) = peer(Vec::new());
        let mut driver = TcpDriver::new(&address, TIMEOUT);
        let progress = Progress::default();
        driver.hand_over(&job, &progress).unwrap();
        assert_eq!(progress.get(), job.len() as u64);
        // The peer has the end of the job before anyone waits for it.
        assert_eq!(peer.join().unwrap(), job);
        driver.finish_job().unwrap();
        driver.finish_job().unwrap();
    }

    #[test]
    fn unresolvable_address_is_reported() {
        let status = TcpDriver::new("127.0.0.1:lp", TIMEOUT).status();
        assert!(!status.ready);
        assert!(status.error.unwrap().contains("cannot resolve"));
    }

    mod against_fake_printer {
        use kiosk_schemas::{Document, TextDocument};
        use kiosk_testkit::{FakePaper, FakePrinter, FakeStatus};

        use super::*;
        use crate::render::{RenderOptions, render};

        /// Runs a blocking driver call the way the agent does.
        async fn blocking<T: Send + 'static>(
            mut driver: TcpDriver,
            call: impl FnOnce(&mut TcpDriver) -> T + Send + 'static,
        ) -> T {
            tokio::task::spawn_blocking(move || call(&mut driver))
                .await
                .unwrap()
        }

        fn driver(fake: &FakePrinter) -> TcpDriver {
            TcpDriver::new(&fake.addr().to_string(), Duration::from_millis(500))
        }

        /// Hands `bytes` over and finishes the job, as the worker does.
        fn print(d: &mut TcpDriver, bytes: &[u8]) -> Result<u64, PrinterError> {
            let progress = Progress::default();
            d.hand_over(bytes, &progress)?;
            d.finish_job()?;
            Ok(progress.get())
        }

        #[tokio::test]
        async fn status_follows_the_fake() {
            let fake = FakePrinter::start().await.unwrap();
            let cases = [
                (FakeStatus::default(), true, PaperStatus::Ok),
                (
                    FakeStatus {
                        online: false,
                        ..FakeStatus::default()
                    },
                    false,
                    PaperStatus::Ok,
                ),
                (
                    FakeStatus {
                        cover_open: true,
                        ..FakeStatus::default()
                    },
                    false,
                    PaperStatus::Ok,
                ),
                (
                    FakeStatus {
                        paper: FakePaper::NearEnd,
                        ..FakeStatus::default()
                    },
                    true,
                    PaperStatus::NearEnd,
                ),
                (
                    FakeStatus {
                        paper: FakePaper::Out,
                        ..FakeStatus::default()
                    },
                    false,
                    PaperStatus::Out,
                ),
            ];
            for (fake_status, ready, paper) in cases {
                fake.set_status(fake_status);
                let status = blocking(driver(&fake), |d| d.status()).await;
                assert_eq!(
                    (status.ready, status.online, status.cover_open, status.paper),
                    (ready, fake_status.online, fake_status.cover_open, paper),
                    "{fake_status:?}: {status:?}"
                );
            }
            assert_eq!(fake.status_queries(), 3 * cases.len());
            // Status connections are not jobs.
            assert!(fake.jobs().is_empty());
        }

        #[tokio::test]
        async fn a_rendered_job_arrives_byte_for_byte() {
            let fake = FakePrinter::start().await.unwrap();
            let doc = Document::Text(TextDocument {
                text: "Table 4\n1 x Soup".into(),
                cut: true,
            });
            let rendered = render(&doc, &RenderOptions::default()).unwrap();
            let bytes = rendered.bytes.clone();
            blocking(driver(&fake), move |d| print(d, &bytes))
                .await
                .unwrap();
            blocking(driver(&fake), move |d| print(d, b"second"))
                .await
                .unwrap();
            let jobs = fake.wait_for_jobs(2, Duration::from_secs(5)).await.unwrap();
            assert_eq!(jobs, [rendered.bytes, b"second".to_vec()]);
        }

        #[tokio::test]
        async fn hand_over_returns_before_the_printer_closes() {
            let fake = FakePrinter::start().await.unwrap();
            // The printer keeps the connection open after the job.
            fake.set_hold_connections(true);
            let mut d = TcpDriver::new(&fake.addr().to_string(), Duration::from_secs(5));
            let started = Instant::now();
            let (d, handed) = tokio::task::spawn_blocking(move || {
                let r = d.hand_over(b"held job", &Progress::default());
                (d, r)
            })
            .await
            .unwrap();
            handed.unwrap();
            assert!(started.elapsed() < CLOSE_WAIT, "{:?}", started.elapsed());
            assert_eq!(
                fake.wait_for_jobs(1, Duration::from_secs(5)).await.unwrap(),
                [b"held job".to_vec()]
            );
            // The wait for the close is the separate, later step.
            let started = Instant::now();
            blocking(d, |d| d.finish_job()).await.unwrap();
            assert!(started.elapsed() >= CLOSE_WAIT, "{:?}", started.elapsed());
        }

        #[tokio::test]
        async fn a_stalled_printer_times_out_mid_job_with_the_bytes_counted() {
            let fake = FakePrinter::start().await.unwrap();
            fake.set_stall_after(Some(1000));
            let job = vec![b'x'; 8 * 1024 * 1024];
            let progress = Progress::default();
            let counted = progress.clone();
            let err = blocking(driver(&fake), move |d| d.hand_over(&job, &counted))
                .await
                .unwrap_err();
            assert!(!err.nothing_written(), "{err}");
            assert!(err.to_string().contains("timed out"), "{err}");
            let written = progress.get();
            assert!((1000..8 * 1024 * 1024).contains(&written), "{written}");
        }

        #[tokio::test]
        async fn unreachable_and_silent_printers_are_not_ready() {
            let fake = FakePrinter::start().await.unwrap();
            fake.set_reachable(false);
            let status = blocking(driver(&fake), |d| d.status()).await;
            assert!(!status.ready && !status.online, "{status:?}");
            let written = blocking(driver(&fake), |d| print(d, &[b'x'; 100_000])).await;
            assert!(written.is_err(), "a reset connection must fail the job");

            fake.set_reachable(true);
            fake.set_silent(true);
            let status = blocking(driver(&fake), |d| d.status()).await;
            assert!(!status.online);
            assert!(status.error.unwrap().contains("timed out"));
            assert!(fake.jobs().is_empty());
        }
    }
}
