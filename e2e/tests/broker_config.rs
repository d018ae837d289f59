//! `kiosk-gateway broker-config` against the real brokers: the files it
//! writes (through its library function, `broker_config::write`) configure
//! a real mosquitto and a real one-node nats-server (JetStream + MQTT), and
//! the cross-kiosk attacks of `security.rs` run against them with rumqttc:
//! a kiosk cannot read another's jobs nor publish its credits, a technician
//! reads everything under `kiosk/` but its publishes arrive nowhere, and
//! the gateway does its work. A control run against mosquitto with the
//! same users but no ACL shows that the checks see a leak when there is one.
//!
//! Then the real gateway and agent print a job through each broker
//! configured this way, logged in as their own users.
//!
//! mosquitto is required (`scripts/test.sh` installs it); nats-server is
//! skipped with a message when missing unless `KIOSK_REQUIRE_NATS=1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiosk_broker::Role;
use kiosk_broker::external::Format;
use kiosk_e2e::mosquitto::Mosquitto;
use kiosk_e2e::mqtt::Client;
use kiosk_e2e::nats::NatsServer;
use kiosk_e2e::{FleetOptions, TestFleet, count_with, text_job};
use kiosk_gateway::broker_config::{self, Request};
use kiosk_schemas::Secret;
use rumqttc::Publish;

/// Longest wait for something that must arrive.
const WAIT: Duration = Duration::from_secs(10);
/// How long to keep listening for something that must not arrive, after a
/// later message on the same path did.
const QUIET: Duration = Duration::from_millis(500);

/// A credentials file with two kiosks, the gateway and a technician (whose
/// password is chosen, so argon2id), and a `user:password` file of their
/// secrets.
struct Fleet {
    dir: tempfile::TempDir,
    credentials: PathBuf,
    secrets: PathBuf,
    passwords: Vec<(&'static str, String)>,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let mut passwords = Vec::new();
        for (user, role) in [
            ("kiosk-a", Role::Kiosk),
            ("kiosk-b", Role::Kiosk),
            ("gateway", Role::Gateway),
        ] {
            let secret = kiosk_broker::generate_secret();
            let hash = kiosk_broker::hash_generated_secret(&secret);
            kiosk_broker::set_password(&credentials, user, role, &hash).unwrap();
            passwords.push((user, secret.expose().to_owned()));
        }
        let chosen = Secret::new("a technician's own password");
        let hash = kiosk_broker::hash_chosen_password(&chosen).unwrap();
        kiosk_broker::set_password(&credentials, "technician", Role::Technician, &hash).unwrap();
        passwords.push(("technician", chosen.expose().to_owned()));
        let secrets = dir.path().join("secrets.txt");
        let lines: String = passwords
            .iter()
            .map(|(u, p)| format!("{u}:{p}\n"))
            .collect();
        std::fs::write(&secrets, lines).unwrap();
        Fleet {
            dir,
            credentials,
            secrets,
            passwords,
        }
    }

    fn password(&self, user: &str) -> &str {
        self.passwords
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, p)| p.as_str())
            .unwrap()
    }

    /// Runs broker-config for `format` with the built-in policy; the output
    /// directory.
    fn generate(&self, format: Format) -> PathBuf {
        self.generate_with(format, None)
    }

    /// Runs broker-config for `format` with the ACL file `acl`; the output
    /// directory.
    fn generate_with(&self, format: Format, acl: Option<PathBuf>) -> PathBuf {
        let out = self.dir.path().join(format.to_string());
        let written = broker_config::write(&Request {
            credentials: self.credentials.clone(),
            acl,
            format,
            out: out.clone(),
            secrets: vec![self.secrets.clone()],
            issue_missing: false,
        })
        .unwrap();
        assert_eq!(written.users, 4);
        out
    }

    async fn connect(&self, addr: SocketAddr, client_id: &str, user: &str) -> Client {
        Client::connect(addr, client_id, user, self.password(user))
            .await
            .unwrap_or_else(|e| panic!("{user} as {client_id}: {e}"))
    }
}

/// Publishes `payload` to `topic` with `publisher` until `subscriber` gets
/// it (its subscription may not be in place yet); everything `subscriber`
/// received meanwhile, then for [`QUIET`] more.
async fn until_received(
    publisher: &Client,
    subscriber: &mut Client,
    topic: &str,
    payload: &str,
) -> Vec<Publish> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    'outer: while tokio::time::Instant::now() < deadline {
        publisher.publish_bytes(topic, payload.into()).await;
        while let Some(p) = subscriber.recv(Duration::from_millis(300)).await {
            let hit = p.topic == topic && p.payload == payload.as_bytes();
            seen.push(p);
            if hit {
                break 'outer;
            }
        }
    }
    assert!(
        seen.iter()
            .any(|p| p.topic == topic && p.payload == payload.as_bytes()),
        "{payload} on {topic} never arrived"
    );
    while let Some(p) = subscriber.recv(QUIET).await {
        seen.push(p);
    }
    seen
}

fn has(seen: &[Publish], payload: &str) -> bool {
    seen.iter().any(|p| p.payload == payload.as_bytes())
}

/// What got through.
#[derive(Debug, Default, PartialEq, Eq)]
struct Leaks {
    /// Kiosk A received a job published for kiosk B.
    kiosk_read_other: bool,
    /// A credit kiosk A published on B's topic reached a gateway subscriber.
    forged_credit: bool,
    /// A job a technician published reached the kiosk.
    technician_publish: bool,
}

impl Leaks {
    /// Every attack got through: a broker that enforces nothing.
    const ALL: Leaks = Leaks {
        kiosk_read_other: true,
        forged_credit: true,
        technician_publish: true,
    };
}

/// The cross-kiosk attacks against the broker at `addr`; panics when the
/// allowed traffic (gateway jobs, kiosk credits, technician reads) fails.
async fn attacks(fleet: &Fleet, addr: SocketAddr) -> Leaks {
    let mut leaks = Leaks::default();
    let mut gateway = fleet.connect(addr, "kiosk-gateway", "gateway").await;
    let mut kiosk_a = fleet.connect(addr, "kiosk-a", "kiosk-a").await;
    // B's job topic, every kiosk's, everything, and NATS's delivery
    // subjects: each a SUBSCRIBE of its own, all to be denied.
    for filter in ["kiosk/kiosk-b/print", "kiosk/+/print", "#", "$MQTT/sub/#"] {
        kiosk_a.subscribe(filter).await;
    }
    kiosk_a.subscribe("kiosk/kiosk-a/print").await;
    // The gateway's job for A arrives: A is subscribed, the gateway may
    // publish jobs.
    until_received(&gateway, &mut kiosk_a, "kiosk/kiosk-a/print", "job-a-1").await;
    gateway
        .publish_bytes("kiosk/kiosk-b/print", "job-b".into())
        .await;
    let seen = until_received(&gateway, &mut kiosk_a, "kiosk/kiosk-a/print", "job-a-2").await;
    leaks.kiosk_read_other = has(&seen, "job-b");

    let mut technician = fleet.connect(addr, "technician-1", "technician").await;
    technician.subscribe("kiosk/+/#").await;
    gateway.subscribe("kiosk/+/cash").await;
    // A forged credit for B, on a connection of its own (a broker may
    // close it), then A's own credit, which the gateway must get.
    let forger = fleet.connect(addr, "kiosk-a-forger", "kiosk-a").await;
    forger
        .publish_bytes("kiosk/kiosk-b/cash", "forged".into())
        .await;
    let seen = until_received(&kiosk_a, &mut gateway, "kiosk/kiosk-a/cash", "credit-a").await;
    leaks.forged_credit = has(&seen, "forged");
    // The technician reads all kiosks' traffic.
    let mut tech_seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !has(&tech_seen, "credit-a") && tokio::time::Instant::now() < deadline {
        match technician.recv(Duration::from_millis(300)).await {
            Some(p) => tech_seen.push(p),
            None => {
                kiosk_a
                    .publish_bytes("kiosk/kiosk-a/cash", "credit-a".into())
                    .await
            }
        }
    }
    assert!(
        has(&tech_seen, "credit-a"),
        "the technician did not see A's credit"
    );

    technician
        .publish_bytes("kiosk/kiosk-a/print", "tech-job".into())
        .await;
    let seen = until_received(&gateway, &mut kiosk_a, "kiosk/kiosk-a/print", "job-a-3").await;
    leaks.technician_publish = has(&seen, "tech-job");
    leaks
}

/// A wrong password and an anonymous client are refused.
async fn refuses_bad_logins(addr: SocketAddr) {
    assert!(
        Client::connect(addr, "kiosk-a", "kiosk-a", "wrong")
            .await
            .is_err()
    );
    let opts = rumqttc::MqttOptions::new("anon", addr.ip().to_string(), addr.port());
    assert!(Client::connect_with(opts).await.is_err());
}

fn auth_conf(out: &Path) -> String {
    std::fs::read_to_string(out.join("mosquitto.conf")).unwrap()
}

#[tokio::test]
async fn mosquitto_configured_by_broker_config_keeps_kiosks_apart() {
    let fleet = Fleet::new();
    let out = fleet.generate(Format::Mosquitto);
    let mosquitto = Mosquitto::start_with_auth(fleet.dir.path(), &auth_conf(&out)).await;
    refuses_bad_logins(mosquitto.addr).await;
    assert_eq!(attacks(&fleet, mosquitto.addr).await, Leaks::default());
}

/// On a listener with `use_username_as_clientid true` (the kiosks' own, as
/// the generated mosquitto.conf suggests), kiosk A connecting with B's
/// client id does not take B's session over: B stays connected and keeps
/// getting its jobs. Without it, mosquitto hands A the session and drops B.
#[tokio::test]
async fn a_kiosk_listener_with_username_as_client_id_stops_session_takeover() {
    for (bound, listener) in [(true, "use_username_as_clientid true"), (false, "")] {
        let fleet = Fleet::new();
        let out = fleet.generate(Format::Mosquitto);
        let mosquitto =
            Mosquitto::start_with_auth_listener(fleet.dir.path(), &auth_conf(&out), listener).await;
        let addr = mosquitto.addr;
        let gateway = fleet.connect(addr, "kiosk-gateway", "gateway").await;
        let mut kiosk_b = fleet.connect(addr, "kiosk-b", "kiosk-b").await;
        kiosk_b.subscribe("kiosk/kiosk-b/print").await;
        until_received(&gateway, &mut kiosk_b, "kiosk/kiosk-b/print", "job-1").await;
        let _kiosk_a = fleet.connect(addr, "kiosk-b", "kiosk-a").await;
        let deadline = tokio::time::Instant::now() + QUIET;
        while !kiosk_b.is_closed() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(kiosk_b.is_closed(), !bound, "bound: {bound}");
        if bound {
            until_received(&gateway, &mut kiosk_b, "kiosk/kiosk-b/print", "job-2").await;
        }
    }
}

/// A `deny` carved out of a `read` rule holds on mosquitto for a QoS 1
/// wildcard subscription (mosquitto checks every delivery); for NATS,
/// which does not filter QoS 1 deliveries, broker-config refuses it.
#[tokio::test]
async fn a_deny_inside_a_read_rule_holds_on_mosquitto_and_is_refused_for_nats() {
    let fleet = Fleet::new();
    let acl = fleet.dir.path().join("acl");
    std::fs::write(
        &acl,
        "role technician\ntopic read kiosk/#\ntopic deny kiosk/+/cash\nrole kiosk\npattern write kiosk/%u/cash\npattern write kiosk/%u/status\n",
    )
    .unwrap();
    let out = fleet.generate_with(Format::Mosquitto, Some(acl.clone()));
    let mosquitto = Mosquitto::start_with_auth(fleet.dir.path(), &auth_conf(&out)).await;
    let kiosk_a = fleet.connect(mosquitto.addr, "kiosk-a", "kiosk-a").await;
    let mut technician = fleet
        .connect(mosquitto.addr, "technician-1", "technician")
        .await;
    technician.subscribe("kiosk/#").await;
    kiosk_a
        .publish_bytes("kiosk/kiosk-a/cash", "credit".into())
        .await;
    let seen = until_received(&kiosk_a, &mut technician, "kiosk/kiosk-a/status", "online").await;
    assert!(!has(&seen, "credit"), "the technician read a denied credit");

    let err = broker_config::write(&Request {
        credentials: fleet.credentials.clone(),
        acl: Some(acl),
        format: Format::Nats,
        out: fleet.dir.path().join("nats-refused"),
        secrets: vec![fleet.secrets.clone()],
        issue_missing: false,
    })
    .unwrap_err();
    assert!(err.to_string().contains("QoS 1"), "{err}");
    assert!(!fleet.dir.path().join("nats-refused").exists());
}

/// The same users without the generated ACL: every attack gets through, so
/// the checks above would see a leak.
#[tokio::test]
async fn mosquitto_without_the_generated_acl_lets_the_attacks_through() {
    let fleet = Fleet::new();
    let out = fleet.generate(Format::Mosquitto);
    let users_only: String = auth_conf(&out)
        .lines()
        .filter(|l| !l.starts_with("acl_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mosquitto = Mosquitto::start_with_auth(fleet.dir.path(), &users_only).await;
    let leaks = attacks(&fleet, mosquitto.addr).await;
    assert_eq!(leaks, Leaks::ALL);
}

#[tokio::test]
async fn nats_configured_by_broker_config_keeps_kiosks_apart() {
    let fleet = Fleet::new();
    let out = fleet.generate(Format::Nats);
    // NATS resolves `include` relative to the including file.
    let Some(nats) = NatsServer::start(fleet.dir.path(), "nats/authorization.conf").await else {
        return;
    };
    assert!(out.ends_with("nats"));
    refuses_bad_logins(nats.mqtt_addr).await;
    assert_eq!(attacks(&fleet, nats.mqtt_addr).await, Leaks::default());
}

/// NATS with the same users and no permissions: the attacks get through.
#[tokio::test]
async fn nats_without_the_generated_permissions_lets_the_attacks_through() {
    let fleet = Fleet::new();
    let users: String = fleet
        .passwords
        .iter()
        .map(|(u, p)| format!("    {{ user: \"{u}\", password: \"{p}\" }}\n"))
        .collect();
    let auth = format!("authorization {{\n  users: [\n{users}  ]\n}}\n");
    std::fs::write(fleet.dir.path().join("open.conf"), auth).unwrap();
    let Some(nats) = NatsServer::start(fleet.dir.path(), "open.conf").await else {
        return;
    };
    let leaks = attacks(&fleet, nats.mqtt_addr).await;
    assert_eq!(leaks, Leaks::ALL);
}

/// broker-config's files for a fleet with kiosk `k1`, written into `dir`;
/// the fleet's users.
fn fleet_config(dir: &Path, format: Format) -> (kiosk_e2e::FleetUsers, PathBuf) {
    let users = kiosk_e2e::fleet_users(dir, &["k1".to_owned()]);
    let secrets = dir.join("secrets.txt");
    let lines: String = users
        .secrets
        .iter()
        .map(|(u, p)| format!("{u}:{p}\n"))
        .collect();
    std::fs::write(&secrets, lines).unwrap();
    let out = dir.join(format.to_string());
    broker_config::write(&Request {
        credentials: users.credentials.clone(),
        acl: None,
        format,
        out: out.clone(),
        secrets: vec![secrets],
        issue_missing: false,
    })
    .unwrap();
    (users, out)
}

/// The gateway and an agent, each with its own login, print through the
/// broker at `addr`.
async fn prints_through(addr: SocketAddr, users: kiosk_e2e::FleetUsers) {
    let mut opts = FleetOptions::new(&["k1"]);
    opts.external_broker = Some(addr);
    opts.users = Some(users);
    let fleet = TestFleet::start_with(opts).await;
    let printer = kiosk_testkit::FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let job = fleet.create_job("k1", text_job("THROUGH-EXTERNAL\n")).await;
    fleet.wait_job(&job, "printed").await;
    assert_eq!(count_with(&printer.jobs(), "THROUGH-EXTERNAL"), 1);
    agent.shutdown().await;
}

#[tokio::test]
async fn the_fleet_prints_through_mosquitto_configured_by_broker_config() {
    let dir = tempfile::tempdir().unwrap();
    let (users, out) = fleet_config(dir.path(), Format::Mosquitto);
    let mosquitto = Mosquitto::start_with_auth(dir.path(), &auth_conf(&out)).await;
    prints_through(mosquitto.addr, users).await;
}

#[tokio::test]
async fn the_fleet_prints_through_nats_configured_by_broker_config() {
    let dir = tempfile::tempdir().unwrap();
    let (users, _) = fleet_config(dir.path(), Format::Nats);
    let Some(nats) = NatsServer::start(dir.path(), "nats/authorization.conf").await else {
        return;
    };
    prints_through(nats.mqtt_addr, users).await;
}
