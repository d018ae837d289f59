//! The embedded broker against real MQTT clients (rumqttc) on 127.0.0.1:0.
//!
//! Logs are quiet unless `TEST_LOG` is set (e.g. `TEST_LOG=debug`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kiosk_broker::{
    BrokerConfig, BrokerError, BrokerHandle, EmbeddedBroker, Role, delete_user, generate_secret,
    hash_chosen_password, hash_generated_secret, set_password,
};
use kiosk_schemas::Secret;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet, Publish,
    QoS, StateError,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Longest wait for anything on loopback; only reached when a test fails.
const WAIT: Duration = Duration::from_secs(5);

/// A credentials file with two kiosks, a backend (generated secrets) and a
/// technician (chosen password, argon2).
struct Users {
    dir: tempfile::TempDir,
    demo1: Secret,
    demo2: Secret,
    backend: Secret,
    technician: Secret,
}

impl Users {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let users = Users {
            dir,
            demo1: generate_secret(),
            demo2: generate_secret(),
            backend: generate_secret(),
            technician: Secret::new("chosen by a person"),
        };
        let path = users.path();
        set_password(
            &path,
            "demo-1",
            Role::Kiosk,
            &hash_generated_secret(&users.demo1),
        )
        .unwrap();
        set_password(
            &path,
            "demo-2",
            Role::Kiosk,
            &hash_generated_secret(&users.demo2),
        )
        .unwrap();
        let backend = hash_generated_secret(&users.backend);
        set_password(&path, "backend", Role::Backend, &backend).unwrap();
        let technician = hash_chosen_password(&users.technician).unwrap();
        set_password(&path, "technician", Role::Technician, &technician).unwrap();
        users
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    fn config(&self) -> BrokerConfig {
        let mut config = BrokerConfig::new(self.path());
        config.listen = Some("127.0.0.1:0".parse().unwrap());
        config
    }
}

async fn start() -> (Users, BrokerHandle) {
    kiosk_testkit::init_test_tracing();
    let users = Users::new();
    let broker = EmbeddedBroker::start(users.config()).await.unwrap();
    (users, broker)
}

fn options(addr: SocketAddr, client_id: &str, login: Option<(&str, &Secret)>) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = login {
        options.set_credentials(user, password.expose());
    }
    options
}

/// One MQTT connection whose event loop runs in a task that forwards every
/// incoming packet, and stops at the first error (no reconnect).
struct Session {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Result<Packet, ConnectionError>>,
    task: JoinHandle<()>,
}

impl Session {
    /// Connects and waits for the CONNACK.
    async fn connect(options: MqttOptions) -> Result<Session, ConnectionError> {
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        loop {
            let event = timeout(WAIT, eventloop.poll())
                .await
                .expect("CONNACK or error in time")?;
            if let Event::Incoming(Packet::ConnAck(_)) = event {
                break;
            }
        }
        let (tx, incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        Ok(Session {
            client,
            incoming,
            task,
        })
    }

    /// Waits for the first incoming packet that `pick` accepts; panics on a
    /// connection error or after [`WAIT`].
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(Packet) -> Option<T>) -> T {
        let wait = async {
            loop {
                match self.incoming.recv().await {
                    Some(Ok(packet)) => {
                        if let Some(found) = pick(packet) {
                            return found;
                        }
                    }
                    Some(Err(e)) => panic!("connection error while waiting for {what}: {e}"),
                    None => panic!("event loop ended while waiting for {what}"),
                }
            }
        };
        timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
    }

    async fn expect_publish(&mut self, topic: &str) -> Publish {
        self.expect(&format!("PUBLISH on {topic}"), |p| match p {
            Packet::Publish(publish) if publish.topic == topic => Some(publish),
            _ => None,
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.expect("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
            .await;
    }

    /// Publishes with QoS 1 and waits for the PUBACK.
    async fn publish(&mut self, topic: &str, payload: &str, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
            .await
            .unwrap();
        self.expect("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
            .await;
    }

    /// Waits until the connection fails and returns the error.
    async fn expect_error(&mut self) -> ConnectionError {
        let wait = async {
            loop {
                match self.incoming.recv().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e,
                    None => panic!("event loop ended without error"),
                }
            }
        };
        timeout(WAIT, wait).await.expect("connection error in time")
    }
}

async fn kiosk(addr: SocketAddr, id: &str, secret: &Secret) -> Session {
    Session::connect(options(addr, id, Some((id, secret))))
        .await
        .unwrap()
}

async fn backend(addr: SocketAddr, users: &Users) -> Session {
    Session::connect(options(
        addr,
        "backend-main",
        Some(("backend", &users.backend)),
    ))
    .await
    .unwrap()
}

/// The front door refuses a login with a CONNACK return code, which
/// rumqttc reports as `ConnectionRefused(code)`.
async fn assert_refused(options: MqttOptions, code: ConnectReturnCode) {
    let err = match Session::connect(options).await {
        Ok(_) => panic!("login accepted"),
        Err(e) => e,
    };
    assert!(
        matches!(err, ConnectionError::ConnectionRefused(c) if c == code),
        "expected {code:?}, got {err:?}"
    );
}

fn is_connection_lost(err: &ConnectionError) -> bool {
    matches!(
        err,
        ConnectionError::MqttState(StateError::ConnectionAborted | StateError::Io(_))
            | ConnectionError::Io(_)
    )
}

#[tokio::test]
async fn qos1_round_trip_on_a_topic_nobody_subscribed_before() {
    let (users, broker) = start().await;
    let addr = broker.local_addr();
    assert_ne!(addr.port(), 0);

    let mut kiosk = kiosk(addr, "demo-1", &users.demo1).await;
    // Nobody subscribed yet: with rumqttd's default this disconnects the
    // publisher; with dynamic filters it is acknowledged.
    kiosk
        .publish("kiosk/demo-1/print/result", "early", false)
        .await;

    let mut backend = backend(addr, &users).await;
    backend.subscribe("kiosk/+/print/result").await;
    kiosk
        .publish("kiosk/demo-1/print/result", "{\"v\":1}", false)
        .await;
    let publish = backend.expect_publish("kiosk/demo-1/print/result").await;
    assert_eq!(&publish.payload[..], b"{\"v\":1}");
    assert_eq!(publish.qos, QoS::AtLeastOnce);

    // And down: backend to kiosk.
    kiosk.subscribe("kiosk/demo-1/print").await;
    backend.publish("kiosk/demo-1/print", "job", false).await;
    let publish = kiosk.expect_publish("kiosk/demo-1/print").await;
    assert_eq!(&publish.payload[..], b"job");

    broker.shutdown().await;
}

#[tokio::test]
async fn wrong_password_unknown_user_and_anonymous_are_refused() {
    let (users, broker) = start().await;
    let addr = broker.local_addr();

    let bad = ConnectReturnCode::BadUserNamePassword;
    assert_refused(options(addr, "demo-1", Some(("demo-1", &users.demo2))), bad).await;
    assert_refused(options(addr, "demo-9", Some(("demo-9", &users.demo1))), bad).await;
    assert_refused(
        options(addr, "demo-1", None),
        ConnectReturnCode::NotAuthorized,
    )
    .await;
    assert_refused(
        options(addr, "x", Some(("technician", &Secret::new("guess")))),
        bad,
    )
    .await;
    // Refusals do not hurt the broker: the right login still works.
    kiosk(addr, "demo-1", &users.demo1).await;

    broker.shutdown().await;
}

#[tokio::test]
async fn client_ids_are_bound_to_identities() {
    let (users, broker) = start().await;
    let addr = broker.local_addr();

    let rejected = ConnectReturnCode::BadClientId;
    let demo1 = Some(("demo-1", &users.demo1));
    let technician = Some(("technician", &users.technician));
    let backend = Some(("backend", &users.backend));
    for (client_id, login) in [
        ("demo-2", demo1),
        ("anything", demo1),
        // A role user may not pick a kiosk's client id...
        ("demo-1", technician),
        ("demo-2", backend),
        // ...nor the gateway's...
        ("kiosk-gateway", technician),
        ("kiosk-gateway-pub", backend),
        // ...nor one outside its own name.
        ("mosqsub|4242-vps", technician),
        ("technicianx", technician),
    ] {
        assert_refused(options(addr, client_id, login), rejected).await;
    }
    let stats = broker.metrics().snapshot();
    assert_eq!(stats.refused(kiosk_broker::Refusal::ClientId), 8);

    // Its own name, <name>-<suffix>, or none at all (the broker assigns one).
    for client_id in ["technician", "technician-vps-1", ""] {
        let mut session = Session::connect(options(addr, client_id, technician))
            .await
            .unwrap();
        session.subscribe("kiosk/#").await;
    }

    broker.shutdown().await;
}

#[tokio::test]
async fn keep_alive_zero_connects_and_idles_out_after_idle_timeout() {
    kiosk_testkit::init_test_tracing();
    let users = Users::new();
    let mut config = users.config();
    config.idle_timeout = Duration::from_secs(3);
    let broker = EmbeddedBroker::start(config).await.unwrap();
    let addr = broker.local_addr();

    // MQTT-3.1.2-10: keep alive 0 turns the keep alive mechanism off; the
    // connection works like any other.
    let mut options = options(addr, "demo-1", Some(("demo-1", &users.demo1)));
    options.set_keep_alive(Duration::ZERO);
    let mut kiosk = Session::connect(options).await.unwrap();
    kiosk.subscribe("kiosk/demo-1/print").await;
    let mut backend = backend(addr, &users).await;
    backend.publish("kiosk/demo-1/print", "job", false).await;
    let publish = kiosk.expect_publish("kiosk/demo-1/print").await;
    assert_eq!(&publish.payload[..], b"job");

    // Silent past idle_timeout (3 s), the broker closes it.
    let closed = timeout(Duration::from_secs(30), async {
        loop {
            match kiosk.incoming.recv().await {
                Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a silent keep-alive-0 client is closed");

    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_drops_live_connections_and_frees_the_port() {
    let (users, broker) = start().await;
    let addr = broker.local_addr();
    let mut kiosk = kiosk(addr, "demo-1", &users.demo1).await;
    kiosk.subscribe("kiosk/demo-1/print").await;

    broker.shutdown().await;
    let err = kiosk.expect_error().await;
    assert!(is_connection_lost(&err), "{err:?}");

    // Same port, new broker, state forgotten but logins work.
    let mut config = users.config();
    config.listen = Some(addr);
    let broker = EmbeddedBroker::start(config).await.unwrap();
    assert_eq!(broker.local_addr(), addr);
    let mut kiosk = self::kiosk(addr, "demo-1", &users.demo1).await;
    kiosk.publish("kiosk/demo-1/status", "online", true).await;

    // Dropping the handle stops the broker as well.
    drop(broker);
    let err = kiosk.expect_error().await;
    assert!(is_connection_lost(&err), "{err:?}");
}

#[tokio::test]
async fn retained_message_reaches_a_later_subscriber() {
    let (users, broker) = start().await;
    let addr = broker.local_addr();

    let mut kiosk = kiosk(addr, "demo-1", &users.demo1).await;
    kiosk
        .publish("kiosk/demo-1/status", "{\"state\":\"online\"}", true)
        .await;

    let mut backend = backend(addr, &users).await;
    backend.subscribe("kiosk/+/status").await;
    let publish = backend.expect_publish("kiosk/demo-1/status").await;
    assert_eq!(&publish.payload[..], b"{\"state\":\"online\"}");
    assert!(publish.retain);

    broker.shutdown().await;
}

#[tokio::test]
async fn last_will_is_published_when_the_connection_drops() {
    let (users, broker) = start().await;
    let addr = broker.local_addr();

    let mut backend = backend(addr, &users).await;
    backend.subscribe("kiosk/+/status").await;

    let mut will_options = options(addr, "demo-2", Some(("demo-2", &users.demo2)));
    will_options.set_last_will(LastWill::new(
        "kiosk/demo-2/status",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let mut kiosk = Session::connect(will_options).await.unwrap();
    kiosk.publish("kiosk/demo-2/status", "online", true).await;
    assert_eq!(
        &backend.expect_publish("kiosk/demo-2/status").await.payload[..],
        b"online"
    );

    // Dropping the event loop closes the socket without DISCONNECT, as a
    // kiosk losing power or network would.
    kiosk.task.abort();
    let publish = backend.expect_publish("kiosk/demo-2/status").await;
    assert_eq!(&publish.payload[..], b"offline");

    broker.shutdown().await;
}

#[tokio::test]
async fn credential_changes_apply_to_the_next_login() {
    let (users, broker) = start().await;
    let addr = broker.local_addr();
    let path = users.path();

    let secret = generate_secret();
    set_password(
        &path,
        "demo-3",
        Role::Kiosk,
        &hash_generated_secret(&secret),
    )
    .unwrap();
    kiosk(addr, "demo-3", &secret).await;
    assert!(broker.credentials().role("demo-3") == Some(Role::Kiosk));

    assert!(delete_user(&path, "demo-3").unwrap());
    assert_refused(
        options(addr, "demo-3", Some(("demo-3", &secret))),
        ConnectReturnCode::BadUserNamePassword,
    )
    .await;

    broker.shutdown().await;
}

#[tokio::test]
async fn start_errors_name_their_cause() {
    kiosk_testkit::init_test_tracing();
    let users = Users::new();

    let mut config = users.config();
    config.credentials = users.dir.path().join("missing");
    let err = EmbeddedBroker::start(config).await.unwrap_err();
    assert!(matches!(err, BrokerError::Credentials(_)), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    std::fs::write(users.dir.path().join("bad"), "demo-1:kiosk\n").unwrap();
    let mut config = users.config();
    config.credentials = users.dir.path().join("bad");
    let err = EmbeddedBroker::start(config).await.unwrap_err().to_string();
    assert!(
        err.ends_with("bad:1: expected <user>:<role>:<hash>"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = users.config();
    config.listen = Some(taken.local_addr().unwrap());
    let err = EmbeddedBroker::start(config).await.unwrap_err();
    assert!(matches!(err, BrokerError::Bind { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");

    let mut config = users.config();
    config.max_segment_size = 10;
    let err = EmbeddedBroker::start(config).await.unwrap_err();
    assert!(
        matches!(
            err,
            BrokerError::Config {
                key: "max_segment_size",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn denied_subscribes_get_0x80_and_denied_publishes_close() {
    let (users, broker) = start().await;
    let addr = broker.local_addr();
    let metrics = broker.metrics();

    // Own topics: fine.
    let mut own = kiosk(addr, "demo-1", &users.demo1).await;
    own.subscribe("kiosk/demo-1/print").await;
    own.publish("kiosk/demo-1/status", "online", true).await;

    // Another kiosk's topic, a wildcard, everything, $SYS, and one allowed
    // filter in the same SUBSCRIBE: a SUBACK with one code per filter
    // (MQTT-3.9.3), 0x80 for the denied ones; the connection stays.
    let mut nosy = kiosk(addr, "demo-1", &users.demo1).await;
    let filters = [
        "kiosk/demo-2/print",
        "kiosk/+/print",
        "#",
        "$SYS/#",
        "kiosk/demo-1/cmd",
    ];
    nosy.client
        .subscribe_many(
            filters
                .iter()
                .map(|f| rumqttc::SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce)),
        )
        .await
        .unwrap();
    let codes = nosy
        .expect("SUBACK", |p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes),
            _ => None,
        })
        .await;
    use rumqttc::SubscribeReasonCode as Code;
    assert_eq!(
        codes,
        [
            Code::Failure,
            Code::Failure,
            Code::Failure,
            Code::Failure,
            Code::Success(QoS::AtLeastOnce)
        ]
    );
    // Still connected, and the granted filter works.
    let mut backend = backend(addr, &users).await;
    backend.publish("kiosk/demo-1/cmd", "ping", false).await;
    backend
        .publish("kiosk/demo-2/print", "not yours", false)
        .await;
    let publish = nosy.expect_publish("kiosk/demo-1/cmd").await;
    assert_eq!(&publish.payload[..], b"ping");
    nosy.publish("kiosk/demo-1/status", "online", true).await;

    // A denied PUBLISH closes the connection (MQTT-3.3.5-2).
    let mut forger = kiosk(addr, "demo-1", &users.demo1).await;
    forger
        .client
        .publish("kiosk/demo-2/cash", QoS::AtLeastOnce, false, b"{}".to_vec())
        .await
        .unwrap();
    let err = forger.expect_error().await;
    assert!(is_connection_lost(&err), "{err:?}");
    let stats = metrics.snapshot();
    assert_eq!(stats.acl_denied(kiosk_broker::AclAction::Subscribe), 4);
    assert_eq!(stats.acl_denied(kiosk_broker::AclAction::Publish), 1);

    // A last will on another kiosk's topic: CONNACK 0x05.
    let mut will = options(addr, "demo-1", Some(("demo-1", &users.demo1)));
    will.set_last_will(LastWill::new(
        "kiosk/demo-2/status",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    assert_refused(will, ConnectReturnCode::NotAuthorized).await;
    broker.shutdown().await;
}

/// MQTT-4.7.2-1: a filter starting with a wildcard never matches a topic
/// starting with `$`, even for a user whose ACL allows both.
#[tokio::test]
async fn dollar_topics_never_match_leading_wildcards() {
    kiosk_testkit::init_test_tracing();
    let users = Users::new();
    let acl = users.dir.path().join("acl");
    std::fs::write(
        &acl,
        "user backend\ntopic readwrite #\ntopic readwrite $test/#\n",
    )
    .unwrap();
    let mut config = users.config();
    config.acl = Some(acl);
    let broker = EmbeddedBroker::start(config).await.unwrap();
    let addr = broker.local_addr();
    let mut watcher = backend(addr, &users).await;
    watcher.subscribe("#").await;
    watcher.subscribe("+/x").await;
    let mut publisher = Session::connect(options(
        addr,
        "backend-pub",
        Some(("backend", &users.backend)),
    ))
    .await
    .unwrap();
    publisher.publish("$test/x", "dollar", false).await;
    publisher.publish("$test/x", "dollar-retained", true).await;
    publisher.publish("a/x", "plain", false).await;
    // Everything published before `a/x` has been routed when it arrives.
    let mut seen = Vec::new();
    let first = watcher
        .expect("PUBLISH", |p| match p {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
    seen.push(first.topic.clone());
    assert_eq!(first.topic, "a/x", "no $-topic before a/x: {seen:?}");
    // A new `#` subscriber gets no retained $-topic either.
    let mut late = Session::connect(options(
        addr,
        "backend-late",
        Some(("backend", &users.backend)),
    ))
    .await
    .unwrap();
    late.subscribe("#").await;
    publisher.publish("a/y", "marker", false).await;
    let next = late
        .expect("PUBLISH", |p| match p {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
    assert_eq!(next.topic, "a/y");
    broker.shutdown().await;
}

/// The standalone `kiosk-broker` binary runs the same broker: its ACL
/// (here from a file) refuses a kiosk's subscription to `#` (SUBACK 0x80),
/// and the log says why.
#[tokio::test]
async fn standalone_binary_enforces_the_acl_file() {
    use tokio::io::AsyncBufReadExt;
    kiosk_testkit::init_test_tracing();
    let users = Users::new();
    let acl = users.dir.path().join("acl");
    std::fs::write(&acl, kiosk_broker::DEFAULT_ACL).unwrap();
    let config = users.dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ncredentials = \"{}\"\nacl = \"{}\"\n",
            users.path().display(),
            acl.display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kiosk-broker"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info,rumqttd=off")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = timeout(WAIT, async {
        loop {
            let line = log.next_line().await.unwrap().expect("broker log");
            if let Some(rest) = line.split_once("plain=Some(").map(|(_, r)| r) {
                let end = rest.find(')').unwrap();
                return rest[..end].parse().unwrap();
            }
        }
    })
    .await
    .expect("broker listening");

    let mut attacker = kiosk(addr, "demo-1", &users.demo1).await;
    attacker
        .client
        .subscribe("#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let codes = attacker
        .expect("SUBACK", |p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes),
            _ => None,
        })
        .await;
    assert_eq!(codes, [rumqttc::SubscribeReasonCode::Failure]);
    let logged = timeout(WAIT, async {
        while let Ok(Some(line)) = log.next_line().await {
            if line.contains("ACL denied") && line.contains("\"demo-1\"") && line.contains("\"#\"")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(logged, Ok(true), "the denial is logged with user and topic");
    let _ = child.kill().await;
}
