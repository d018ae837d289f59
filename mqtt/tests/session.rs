//! The session against a real broker (the fleet's embedded kiosk-broker on
//! 127.0.0.1:0, restarted in place to lose every session), and its
//! reconnect delays against a fake broker in paused time.
//!
//! Logs are quiet unless `TEST_LOG` is set (e.g. `TEST_LOG=debug`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiosk_broker::{BrokerConfig, BrokerHandle, EmbeddedBroker, Role};
use kiosk_mqtt::{AckOutcome, Incoming, Publisher, Session, SessionHooks, SessionOptions};
use kiosk_schemas::{KioskId, Secret, Topic};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// Longest wait for anything on loopback; only reached when a test fails.
const WAIT: Duration = Duration::from_secs(10);

/// The embedded broker with a kiosk `k1` and a backend, restartable on the
/// same address.
struct TestBroker {
    dir: tempfile::TempDir,
    handle: Option<BrokerHandle>,
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
        let mut broker = TestBroker {
            dir,
            handle: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            k1,
            backend,
        };
        broker.spawn().await;
        broker
    }

    async fn spawn(&mut self) {
        let mut config = BrokerConfig::new(self.dir.path().join("credentials"));
        config.listen = Some(self.addr);
        let handle = EmbeddedBroker::start(config).await.unwrap();
        self.addr = handle.local_addr();
        self.handle = Some(handle);
    }

    /// Stops the broker (every session and retained message is lost) and
    /// starts a new one on the same address.
    async fn restart(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
        self.spawn().await;
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
        let options = self.options("backend-1", "backend", &self.backend);
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

async fn receive(rx: &mut mpsc::Receiver<Incoming>) -> Incoming {
    timeout(WAIT, rx.recv())
        .await
        .expect("a publish in time")
        .expect("session running")
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
    let first = receive(&mut rx).await;
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
    let second = receive(&mut rx).await;
    assert_eq!(
        (second.connection, &second.publish.payload[..]),
        (2, &b"two"[..])
    );
    shutdown.cancel();
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
    let old = receive(&mut rx).await;
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
        let m = receive(&mut rx).await;
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
