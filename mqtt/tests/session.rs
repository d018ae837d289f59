//! The session against a real broker (the fleet's embedded kiosk-broker on
//! 127.0.0.1:0, replaced by a new one to lose every session), and its
//! reconnect delays against a fake broker in paused time.
//!
//! Logs are quiet unless `TEST_LOG` is set (e.g. `TEST_LOG=debug`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiosk_broker::{BrokerConfig, BrokerHandle, EmbeddedBroker, Role};
use kiosk_mqtt::{AckOutcome, Incoming, Publisher, Session, SessionHooks, SessionOptions};
use kiosk_schemas::{KioskId, Secret, Topic};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// Longest wait for anything on loopback; only reached when a test fails.
const WAIT: Duration = Duration::from_secs(10);

/// A relay on a fixed 127.0.0.1 address to the current broker: clients
/// keep one address while the broker behind it is replaced (rebinding the
/// old port could fail while another test's client holds it).
struct Relay {
    addr: SocketAddr,
    upstream: watch::Sender<SocketAddr>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (upstream, _) = watch::channel(upstream);
        let targets = upstream.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut target = targets.subscribe();
                let to = *target.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        // A new broker: every link to the old one goes.
                        _ = target.changed() => {}
                    }
                });
            }
        });
        Relay { addr, upstream }
    }
}

/// The embedded broker with a kiosk `k1` and a backend, behind a [`Relay`]
/// so that it can be replaced by a new one (without any session) on the
/// same address.
struct TestBroker {
    dir: tempfile::TempDir,
    handle: Option<BrokerHandle>,
    relay: Relay,
    addr: SocketAddr,
    k1: Secret,
    backend: Secret,
}

impl TestBroker {
    async fn start() -> TestBroker {
        kiosk_testkit::init_test_tracing();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let k1 = kiosk_broker::generate_secret();
        let backend = kiosk_broker::generate_secret();
        let hash = kiosk_broker::hash_generated_secret;
        kiosk_broker::set_password(&path, "k1", Role::Kiosk, &hash(&k1)).unwrap();
        kiosk_broker::set_password(&path, "backend", Role::Backend, &hash(&backend)).unwrap();
        let handle = Self::spawn(&path).await;
        let relay = Relay::start(handle.local_addr()).await;
        TestBroker {
            dir,
            addr: relay.addr,
            handle: Some(handle),
            relay,
            k1,
            backend,
        }
    }

    /// Retries a few times: rumqttd cannot report an ephemeral port, so the
    /// broker reserves its internal ports and binds them again, and a
    /// connection of a test running alongside can take one in between.
    async fn spawn(credentials: &std::path::Path) -> BrokerHandle {
        let mut config = BrokerConfig::new(credentials);
        config.listen = Some("127.0.0.1:0".parse().unwrap());
        let mut attempts = 0;
        loop {
            match EmbeddedBroker::start(config.clone()).await {
                Ok(handle) => return handle,
                Err(e) if attempts < 5 => {
                    attempts += 1;
                    tracing::debug!(error = %e, "broker did not start; retrying");
                }
                Err(e) => panic!("broker did not start: {e}"),
            }
        }
    }

    /// Stops the broker (every session and retained message is lost) and
    /// puts a new one behind the relay.
    async fn restart(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
        let handle = Self::spawn(&self.dir.path().join("credentials")).await;
        self.relay.upstream.send_replace(handle.local_addr());
        self.handle = Some(handle);
    }

    fn options(&self, client_id: &str, user: &str, password: &Secret) -> SessionOptions {
        let mut options =
            SessionOptions::new(client_id, self.addr.ip().to_string(), self.addr.port());
        options.credentials = Some((user.to_owned(), password.clone()));
        options.keep_alive = Duration::from_secs(30);
        options.backoff_min = Duration::from_millis(20);
        options.backoff_max = Duration::from_millis(200);
        options
    }

    /// The kiosk's session: persistent, manual acknowledgements, subscribed
    /// to `kiosk/k1/print`; its hooks record each CONNACK's
    /// `session_present`.
    fn kiosk(&self) -> (Publisher, Session<Record>, Arc<Mutex<Vec<bool>>>) {
        let mut options = self.options("k1", "k1", &self.k1);
        options.clean_session = false;
        options.manual_acks = true;
        options.subscriptions = vec![print_topic().to_string()];
        let record = Record::default();
        let present = record.0.clone();
        let (publisher, session) = Session::new(&options, record);
        (publisher, session, present)
    }

    /// A backend's publish-only session, connected.
    async fn backend(&self, shutdown: &CancellationToken) -> Publisher {
        static BACKENDS: AtomicUsize = AtomicUsize::new(0);
        let n = BACKENDS.fetch_add(1, Ordering::Relaxed);
        let options = self.options(&format!("backend-{n}"), "backend", &self.backend);
        let (publisher, session) = Session::new(&options, ());
        let mut connects = session.connects();
        tokio::spawn(session.run_publisher(shutdown.clone()));
        timeout(WAIT, connects.wait_for(|n| *n >= 1))
            .await
            .unwrap()
            .unwrap();
        publisher
    }
}

#[derive(Default)]
struct Record(Arc<Mutex<Vec<bool>>>);

impl SessionHooks for Record {
    fn connected(&mut self, session_present: bool, _: &Publisher) {
        self.0.lock().unwrap().push(session_present);
    }
}

fn print_topic() -> Topic {
    Topic::print(&KioskId::new("k1").unwrap())
}

/// Publishes `payload` retained, so it reaches the kiosk only through its
/// subscription, whether that is made before or after the publish.
async fn send(backend: &Publisher, payload: &str) {
    backend
        .publish(&print_topic(), true, payload.as_bytes().to_vec())
        .await
        .unwrap();
}

/// The next message with `payload`. rumqttd may deliver a retained
/// message twice (live and as retained on subscribe): the copies before it
/// are acknowledged on the way, so acknowledgements stay in order.
async fn receive(rx: &mut mpsc::Receiver<Incoming>, kiosk: &Publisher, payload: &str) -> Incoming {
    loop {
        let m = timeout(WAIT, rx.recv())
            .await
            .expect("a publish in time")
            .expect("session running");
        if m.publish.payload == payload.as_bytes() {
            return m;
        }
        let _ = kiosk.ack(&m).await;
    }
}

#[tokio::test]
async fn resubscribes_after_the_broker_restarts_without_the_session() {
    let mut broker = TestBroker::start().await;
    let shutdown = CancellationToken::new();
    let (kiosk, session, present) = broker.kiosk();
    let mut connects = session.connects();
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(session.run(tx, shutdown.clone()));
    timeout(WAIT, connects.wait_for(|n| *n == 1))
        .await
        .unwrap()
        .unwrap();

    let backend = broker.backend(&shutdown).await;
    send(&backend, "one").await;
    let first = receive(&mut rx, &kiosk, "one").await;
    assert_eq!(
        (first.connection, &first.publish.payload[..]),
        (1, &b"one"[..])
    );
    assert_eq!(kiosk.ack(&first).await, AckOutcome::Queued);

    broker.restart().await;
    timeout(WAIT, connects.wait_for(|n| *n == 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        *present.lock().unwrap(),
        [false, false],
        "the new broker had no session"
    );
    let backend = broker.backend(&shutdown).await;
    send(&backend, "two").await;
    let second = receive(&mut rx, &kiosk, "two").await;
    assert_eq!(
        (second.connection, &second.publish.payload[..]),
        (2, &b"two"[..])
    );
    shutdown.cancel();
}

/// Failover (`alternates`): a session whose broker goes connects to the
/// next one of its list, and one whose first broker is down at start
/// begins on the next.
#[tokio::test]
async fn a_session_moves_to_the_next_broker_when_its_broker_goes() {
    let mut a = TestBroker::start().await;
    // A second broker with the same users: another node of the "cluster".
    let b = TestBroker::spawn(&a.dir.path().join("credentials")).await;
    let b_addr = b.local_addr();
    let shutdown = CancellationToken::new();
    let mut options = a.options("k1", "k1", &a.k1);
    options.alternates = vec![(b_addr.ip().to_string(), b_addr.port())];
    let (publisher, mut connects) = started(&options, &shutdown).await;
    assert_eq!(publisher.broker(), Some(a.addr.to_string()));
    // The first broker dies: the next connection is to the second.
    a.handle.take().unwrap().shutdown().await;
    timeout(WAIT, connects.wait_for(|n| *n == 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(publisher.broker(), Some(b_addr.to_string()));
    assert!(publisher.is_connected());
    // The kiosk's client id is its own: end this session first.
    shutdown.cancel();
    let shutdown = CancellationToken::new();

    // A list whose first broker is down from the start.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let mut options = a.options("k1", "k1", &a.k1);
    (options.host, options.port) = (dead_addr.ip().to_string(), dead_addr.port());
    options.alternates = vec![(b_addr.ip().to_string(), b_addr.port())];
    let (publisher, _) = started(&options, &shutdown).await;
    assert_eq!(publisher.broker(), Some(b_addr.to_string()));
    shutdown.cancel();
}

/// A publisher-only session on `options`, run until `shutdown`, once its
/// first connection is up; with its count of connections.
async fn started(
    options: &SessionOptions,
    shutdown: &CancellationToken,
) -> (Publisher, watch::Receiver<u64>) {
    let (publisher, session) = Session::new(options, ());
    let mut connects = session.connects();
    tokio::spawn(session.run_publisher(shutdown.clone()));
    timeout(WAIT, connects.wait_for(|n| *n == 1))
        .await
        .unwrap()
        .unwrap();
    (publisher, connects)
}

#[tokio::test]
async fn an_ack_from_an_earlier_connection_is_not_sent() {
    let mut broker = TestBroker::start().await;
    let shutdown = CancellationToken::new();
    let (kiosk, session, _) = broker.kiosk();
    let mut connects = session.connects();
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(session.run(tx, shutdown.clone()));
    timeout(WAIT, connects.wait_for(|n| *n == 1))
        .await
        .unwrap()
        .unwrap();
    let backend = broker.backend(&shutdown).await;
    send(&backend, "one").await;
    let old = receive(&mut rx, &kiosk, "one").await;
    assert_eq!(old.connection, 1);

    broker.restart().await;
    timeout(WAIT, connects.wait_for(|n| *n == 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kiosk.ack(&old).await, AckOutcome::EarlierConnection);

    // Connection 2 carries on: rumqttd would have dropped it for an
    // unsolicited PUBACK.
    let backend = broker.backend(&shutdown).await;
    for payload in ["two", "three"] {
        send(&backend, payload).await;
        let m = receive(&mut rx, &kiosk, payload).await;
        assert_eq!(
            (m.connection, &m.publish.payload[..]),
            (2, payload.as_bytes())
        );
        assert_eq!(kiosk.ack(&m).await, AckOutcome::Queued);
    }
    assert_eq!(*connects.borrow(), 2);
    assert!(kiosk.is_connected());
    shutdown.cancel();
}

/// A fake broker on 127.0.0.1:0 that reads each CONNECT and hangs up,
/// except on the attempts in `connack_on` (counted from 0), which it
/// answers with a CONNACK first (so the session is connected, then lost).
/// Sends the (tokio) time of each attempt.
async fn flaky_broker(
    connack_on: &'static [usize],
) -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for attempt in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let _ = tx.send(Instant::now());
            let mut connect = [0u8; 256];
            let _ = socket.read(&mut connect).await;
            if connack_on.contains(&attempt) {
                // CONNACK, session not present, accepted (MQTT 3.1.1 §3.2).
                let _ = socket.write_all(&[0x20, 0x02, 0x00, 0x00]).await;
            }
        }
    });
    (addr, rx)
}

#[tokio::test(start_paused = true)]
async fn reconnect_delays_grow_to_the_ceiling_and_reset_after_a_connack() {
    let (addr, mut attempts) = flaky_broker(&[4]).await;
    let mut options = SessionOptions::new("k1", addr.ip().to_string(), addr.port());
    options.backoff_min = Duration::from_millis(100);
    options.backoff_max = Duration::from_millis(500);
    let (publisher, mut session) = Session::new(&options, ());
    // The top of each jitter range: the delay is the ceiling.
    session.set_jitter(|| 1.0);
    let shutdown = CancellationToken::new();
    let (tx, _rx) = mpsc::channel(1);
    tokio::spawn(session.run(tx, shutdown.clone()));

    let mut times = Vec::new();
    for _ in 0..8 {
        times.push(timeout(WAIT, attempts.recv()).await.unwrap().unwrap());
    }
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // Doubling up to the 500 ms cap; attempt 4 got a CONNACK, so the delay
    // after losing that connection starts over.
    assert_eq!(gaps, [100, 200, 400, 500, 100, 200, 400]);
    assert_eq!(publisher.connection(), 1);
    shutdown.cancel();
}

/// Reads one MQTT packet: its first byte and its body.
async fn read_packet(socket: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    let first = socket.read_u8().await.ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = socket.read_u8().await.ok()?;
        len |= usize::from(b & 0x7F) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body).await.ok()?;
    Some((first, body))
}

/// A broker that accepts the connection, refuses the second filter of
/// the first SUBSCRIBE (return code 0x80, MQTT 3.1.1 §3.9.3) and grants
/// every later one; reports when each SUBSCRIBE arrived.
async fn refusing_broker() -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut subscribes = 0;
        while let Some((first, body)) = read_packet(&mut socket).await {
            match first >> 4 {
                1 => socket.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap(),
                8 => {
                    let _ = tx.send(Instant::now());
                    // Packet id, then (length, filter, QoS) per filter.
                    let (mut at, mut filters) = (2, 0);
                    while at + 2 <= body.len() {
                        at += 2 + usize::from(u16::from_be_bytes([body[at], body[at + 1]])) + 1;
                        filters += 1;
                    }
                    let mut suback = vec![0x90, 2 + filters as u8, body[0], body[1]];
                    suback.extend((0..filters).map(|i| {
                        if subscribes == 0 && i == 1 {
                            0x80
                        } else {
                            0x01
                        }
                    }));
                    subscribes += 1;
                    socket.write_all(&suback).await.unwrap();
                }
                12 => socket.write_all(&[0xD0, 0x00]).await.unwrap(),
                _ => {}
            }
        }
    });
    (addr, rx)
}

/// A SUBACK that refuses a filter makes the session subscribe again after
/// the reconnect delay; one that grants everything ends the retries.
#[tokio::test(start_paused = true)]
async fn a_refused_subscription_is_tried_again() {
    let (addr, mut subscribes) = refusing_broker().await;
    let mut options = SessionOptions::new("k1", addr.ip().to_string(), addr.port());
    options.backoff_min = Duration::from_millis(100);
    options.backoff_max = Duration::from_millis(500);
    options.subscriptions = vec!["kiosk/k1/print".into(), "kiosk/k1/cmd".into()];
    let (_publisher, mut session) = Session::new(&options, ());
    session.set_jitter(|| 1.0);
    let shutdown = CancellationToken::new();
    let (tx, _rx) = mpsc::channel(1);
    tokio::spawn(session.run(tx, shutdown.clone()));
    let first = timeout(WAIT, subscribes.recv()).await.unwrap().unwrap();
    let second = timeout(WAIT, subscribes.recv()).await.unwrap().unwrap();
    assert_eq!((second - first).as_millis(), 100);
    // Granted: no third.
    assert!(
        timeout(Duration::from_secs(5), subscribes.recv())
            .await
            .is_err()
    );
    shutdown.cancel();
}
