//! The security issue's acceptance tests, with real attackers:
//! `mosquitto_sub` / `mosquitto_pub` (installed by `scripts/test.sh`),
//! certificates made in the test with `rcgen`, ephemeral ports only.
//!
//! Waiting is done on observable effects (a counter in `/metrics`, a job
//! state, a client's exit), never on fixed sleeps; a few mosquitto clients
//! get a bounded `-W` window in which they must receive nothing.

use std::process::{Output, Stdio};

use kiosk_e2e::{FleetOptions, TestFleet, WAIT, count_with, text_job, wait_for};
use kiosk_testkit::FakePrinter;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A CashEvent as a kiosk would publish it (DESIGN.md, "Cash credits").
fn credit(kiosk: &str, seq: u64, amount: i64) -> String {
    credit_for(kiosk, seq, amount, "none")
}

/// A credit of `kiosk`'s outbox taken for session `session`.
fn credit_for(kiosk: &str, seq: u64, amount: i64, session: &str) -> String {
    format!(
        r#"{{"v":1,"outbox":"00000000000000ab","seq":{seq},"kind":"bill","amount":{amount},"currency":"EUR","at":"2026-11-21T12:00:00Z","session_id":"{session}","note":"{kiosk}"}}"#
    )
}

/// Arguments that point a mosquitto client at the fleet's plain listener
/// as `user`, with client id `client_id`.
fn login(fleet: &TestFleet, user: &str, client_id: &str) -> Vec<String> {
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        fleet.mqtt_addr.port().to_string(),
        "-i".into(),
        client_id.into(),
        "-u".into(),
        user.into(),
        "-P".into(),
        fleet.secrets[user].clone(),
    ]
}

/// Arguments for the TLS listener with `cafile`.
fn login_tls(
    fleet: &TestFleet,
    user: &str,
    client_id: &str,
    cafile: &std::path::Path,
) -> Vec<String> {
    let port = fleet.mqtts_addr.expect("TLS listener").port();
    vec![
        "-h".into(),
        "localhost".into(),
        "-p".into(),
        port.to_string(),
        "--cafile".into(),
        cafile.display().to_string(),
        "-i".into(),
        client_id.into(),
        "-u".into(),
        user.into(),
        "-P".into(),
        fleet.secrets[user].clone(),
    ]
}

async fn run(program: &str, args: &[String]) -> Output {
    tokio::time::timeout(
        WAIT,
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} did not finish"))
    .unwrap_or_else(|e| panic!("{program} is installed (scripts/test.sh): {e}"))
}

fn spawn(program: &str, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is installed (scripts/test.sh): {e}"))
}

/// The value of one line of `/metrics` (0 when absent).
async fn metric(fleet: &TestFleet, series: &str) -> u64 {
    let text = fleet
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the metric reaches `at_least`.
async fn wait_metric(fleet: &TestFleet, series: &str, at_least: u64) {
    let reached = wait_for(WAIT, || async { metric(fleet, series).await >= at_least }).await;
    assert!(
        reached,
        "{series} never reached {at_least} (now {})",
        metric(fleet, series).await
    );
}

const ACL_SUBSCRIBE: &str = "kiosk_broker_acl_denied_total{action=\"subscribe\"}";
const ACL_PUBLISH: &str = "kiosk_broker_acl_denied_total{action=\"publish\"}";

/// A `mosquitto_sub` that prints `topic payload` lines (`-v`), started and
/// known to be subscribed (its debug output shows the SUBACK).
struct Subscriber {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Subscriber {
    async fn start(args: Vec<String>) -> Subscriber {
        // Line-buffered stdout (coreutils stdbuf): mosquitto_sub only
        // flushes when a message arrives, and we wait for its SUBACK line.
        let mut all: Vec<String> = vec!["-oL".into(), "mosquitto_sub".into()];
        all.extend(args);
        all.extend(["-d".into(), "-v".into(), "-q".into(), "1".into()]);
        let mut child = spawn("stdbuf", &all);
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // -d prints protocol traffic on stdout too; wait for the SUBACK.
        let subscribed = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("received SUBACK") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(subscribed, Ok(true), "mosquitto_sub did not subscribe");
        Subscriber { child, lines }
    }

    /// The next `topic payload` line (debug lines skipped).
    async fn next_message(&mut self) -> Option<String> {
        tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                if !line.starts_with("Client ") && !line.starts_with("Subscribed ") {
                    return Some(line);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}

/// Test 1: a kiosk subscribing to another kiosk's print topic, to every
/// kiosk's, or to everything, is refused (SUBACK 0x80; `mosquitto_sub`
/// exits when all its filters are denied) and receives nothing.
#[tokio::test]
async fn kiosk_subscribing_to_other_kiosks_topics_is_refused_and_receives_nothing() {
    let fleet = TestFleet::start(&["kiosk-a", "kiosk-b"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent_b = fleet.start_agent("kiosk-b", printer.addr()).await;
    fleet.wait_kiosk("kiosk-b", "online").await;

    for (i, filter) in ["kiosk/kiosk-b/print", "kiosk/+/print", "#"]
        .into_iter()
        .enumerate()
    {
        let before = metric(&fleet, ACL_SUBSCRIBE).await;
        let mut args = login(&fleet, "kiosk-a", "kiosk-a");
        args.extend([
            "-v".into(),
            "-q".into(),
            "1".into(),
            "-t".into(),
            filter.into(),
        ]);
        let mut attacker = spawn("mosquitto_sub", &args);
        // The broker denies the filter (SUBACK 0x80).
        wait_metric(&fleet, ACL_SUBSCRIBE, before + 1).await;
        // kiosk-b gets a job (and its retained status sits on
        // kiosk/kiosk-b/status): traffic the attacker would see.
        let job = fleet
            .create_job("kiosk-b", text_job(&format!("SECRET-{i}\n")))
            .await;
        fleet.wait_job(&job, "printed").await;
        let _ = attacker.kill().await;
        let out = attacker.wait_with_output().await.unwrap();
        assert!(
            out.stdout.is_empty(),
            "{filter}: the attacker received {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // kiosk-a's own topics are fine.
    let mut args = login(&fleet, "kiosk-a", "kiosk-a");
    args.extend(["-t".into(), "kiosk/kiosk-a/print".into()]);
    let _own = Subscriber::start(args).await;
    assert_eq!(count_with(&printer.jobs(), "SECRET"), 3);
    agent_b.shutdown().await;
}

/// Test 2: a kiosk publishing a credit on another kiosk's cash topic is
/// disconnected, and the forged credit reaches nobody.
///
/// A technician subscribed to `kiosk/kiosk-b/cash` sees kiosk-b's own
/// credit as the first message, never the forged one, and kiosk-b's open
/// cash session holds exactly kiosk-b's own credit.
#[tokio::test]
async fn kiosk_publishing_another_kiosks_credit_is_disconnected_and_nothing_is_delivered() {
    let fleet = TestFleet::start(&["kiosk-a", "kiosk-b"]).await;
    let session = fleet.open_session("kiosk-b", 200_000).await;
    let sid = session["session_id"].as_str().unwrap().to_owned();
    let mut args = login(&fleet, "technician", "technician-watch");
    args.extend(["-t".into(), "kiosk/kiosk-b/cash".into()]);
    let mut watcher = Subscriber::start(args).await;

    let before = metric(&fleet, ACL_PUBLISH).await;
    let mut forged = login(&fleet, "kiosk-a", "kiosk-a");
    forged.extend([
        "-q".into(),
        "1".into(),
        "-t".into(),
        "kiosk/kiosk-b/cash".into(),
        "-m".into(),
        credit_for("kiosk-b", 1, 100_000, &sid),
    ]);
    let mut attacker = spawn("mosquitto_pub", &forged);
    wait_metric(&fleet, ACL_PUBLISH, before + 1).await;
    let _ = attacker.kill().await;

    // kiosk-b's real credit: the first (and only) message the watcher sees.
    let mut real = login(&fleet, "kiosk-b", "kiosk-b");
    real.extend([
        "-q".into(),
        "1".into(),
        "-t".into(),
        "kiosk/kiosk-b/cash".into(),
        "-m".into(),
        credit_for("kiosk-b", 1, 500, &sid),
    ]);
    let out = run("mosquitto_pub", &real).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = watcher.next_message().await.expect("kiosk-b's credit");
    assert_eq!(
        first,
        format!("kiosk/kiosk-b/cash {}", credit_for("kiosk-b", 1, 500, &sid))
    );
    // The gateway recorded kiosk-b's own credit only.
    let s = fleet
        .wait_session(&sid, |s| s["amount_inserted"] == 500)
        .await;
    assert_eq!(s["credits"].as_array().map(Vec::len), Some(1), "{s}");
    let (_, unassigned) = fleet.get("/v1/kiosks/kiosk-b/unassigned-credits").await;
    assert_eq!(unassigned["credits"], serde_json::json!([]));
    let _ = watcher.child.kill().await;
}

/// Test 3: a technician reads all kiosk traffic and cannot publish
/// anything.
#[tokio::test]
async fn technician_reads_all_kiosk_traffic_and_cannot_publish() {
    let fleet = TestFleet::start(&["k1", "k2"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;

    let mut args = login(&fleet, "technician", "technician-1");
    args.extend(["-t".into(), "kiosk/#".into()]);
    let mut tech = Subscriber::start(args).await;
    let job = fleet.create_job("k1", text_job("SEEN-BY-TECH\n")).await;
    fleet.wait_job(&job, "printed").await;
    let (mut saw_job, mut saw_result) = (false, false);
    while !(saw_job && saw_result) {
        let line = tech
            .next_message()
            .await
            .expect("traffic for the technician");
        saw_job |= line.starts_with("kiosk/k1/print {") && line.contains(&job);
        saw_result |= line.starts_with("kiosk/k1/print/result ") && line.contains(&job);
    }

    for (i, topic) in [
        "kiosk/k1/print",
        "kiosk/k2/status",
        "kiosk/k1/cash/ack",
        "other/topic",
    ]
    .into_iter()
    .enumerate()
    {
        let before = metric(&fleet, ACL_PUBLISH).await;
        let mut args = login(&fleet, "technician", "technician-2");
        let body = format!(
            r#"{{"v":1,"job_id":"tech-job-{i}","printer":"receipt","document":{{"kind":"text","text":"TECH\n"}}}}"#
        );
        args.extend([
            "-q".into(),
            "1".into(),
            "-t".into(),
            topic.into(),
            "-m".into(),
            body,
        ]);
        let mut publisher = spawn("mosquitto_pub", &args);
        wait_metric(&fleet, ACL_PUBLISH, before + 1).await;
        let _ = publisher.kill().await;
    }
    // Nothing the technician sent arrived anywhere.
    let (status, _) = fleet.get("/v1/print-jobs/tech-job-0").await;
    assert_eq!(status, 404);
    assert_eq!(count_with(&printer.jobs(), "TECH\n"), 0);
    let _ = tech.child.kill().await;
    agent.shutdown().await;
}

/// Test 4: the print path over TLS with a private CA; `mosquitto_sub
/// --cafile` reads over TLS; clients trusting another CA cannot connect.
/// The cash path over TLS: a kiosk's credit reaches a TLS subscriber, and
/// an agent with a cash acceptor, connected over `mqtts://`, pays a session.
#[tokio::test]
async fn print_and_cash_topics_over_tls_with_a_private_ca() {
    let mut opts = FleetOptions::new(&["k1", "k2", "k3"]);
    opts.tls = true;
    let fleet = TestFleet::start_with(opts).await;
    let pki = fleet.pki.as_ref().expect("pki");
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    assert!(
        fleet
            .agent_broker_url()
            .starts_with("url = \"mqtts://localhost:")
    );
    fleet.wait_kiosk("k1", "online").await;

    let mut args = login_tls(&fleet, "technician", "technician-tls", &pki.ca_cert);
    args.extend(["-t".into(), "kiosk/#".into()]);
    let mut tech = Subscriber::start(args).await;

    let job = fleet
        .create_job("k1", kiosk_e2e::receipt_job(&[(1, "TLS soup", 550)]))
        .await;
    fleet.wait_job(&job, "printed").await;
    assert_eq!(count_with(&printer.jobs(), "TLS soup"), 1);
    let mut saw_job = false;
    while !saw_job {
        let line = tech.next_message().await.expect("job over TLS");
        saw_job = line.starts_with("kiosk/k1/print {") && line.contains(&job);
    }

    // A credit published by kiosk k2 over TLS reaches the TLS subscriber.
    let mut args = login_tls(&fleet, "k2", "k2", &pki.ca_cert);
    args.extend([
        "-q".into(),
        "1".into(),
        "-t".into(),
        "kiosk/k2/cash".into(),
        "-m".into(),
        credit("k2", 1, 200),
    ]);
    let out = run("mosquitto_pub", &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    loop {
        let line = tech.next_message().await.expect("credit over TLS");
        if line.starts_with("kiosk/k2/cash ") {
            assert!(line.ends_with(&credit("k2", 1, 200)), "{line}");
            break;
        }
    }

    // The whole cash path over TLS: an agent with an acceptor pays a session.
    let cash_dir = tempfile::tempdir().unwrap();
    let acceptor = kiosk_testkit::FakeAcceptor::start(cash_dir.path()).unwrap();
    let cash_agent = fleet
        .start_agent_with(fleet.cash_agent_config("k3", printer.addr(), acceptor.path(), None))
        .await;
    fleet.wait_cash_connected("k3", true).await;
    let session = fleet.open_session("k3", 1000).await;
    let sid = session["session_id"].as_str().unwrap().to_owned();
    assert!(acceptor.wait_last_command("ENABLE", kiosk_e2e::WAIT).await);
    acceptor.send("BILL:1000").await.unwrap();
    let paid = fleet.wait_session(&sid, |s| s["state"] == "paid").await;
    assert_eq!(paid["change_due"], 0);
    assert!(acceptor.wait_last_command("DISABLE", kiosk_e2e::WAIT).await);
    cash_agent.shutdown().await;

    // Clients that trust another CA refuse the server: mosquitto_sub...
    let other = kiosk_e2e::pki::TestPki::generate(fleet.dir.path(), "other");
    let mut args = login_tls(&fleet, "technician", "technician-wrong-ca", &other.ca_cert);
    args.extend([
        "-t".into(),
        "kiosk/#".into(),
        "-C".into(),
        "1".into(),
        "-W".into(),
        "5".into(),
    ]);
    let out = run("mosquitto_sub", &args).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    // ...and the agent (rumqttc + rustls): k2 never comes online.
    let handshakes = "kiosk_broker_refused_total{reason=\"tls_handshake\"}";
    let before = metric(&fleet, handshakes).await;
    let mut config = fleet.agent_config("k2", printer.addr());
    config.broker.client.ca_file = Some(other.ca_cert.clone());
    let wrong = fleet.start_agent_with(config).await;
    wait_metric(&fleet, handshakes, before + 1).await;
    let (_, k2) = fleet.get("/v1/kiosks/k2").await;
    assert_ne!(k2["status"], "online", "{k2}");
    // A plain MQTT client on the TLS port gets nowhere either.
    let mut args = login(&fleet, "technician", "technician-plain");
    args[3] = fleet.mqtts_addr.expect("tls").port().to_string();
    args.extend([
        "-t".into(),
        "kiosk/#".into(),
        "-C".into(),
        "1".into(),
        "-W".into(),
        "3".into(),
    ]);
    let out = run("mosquitto_sub", &args).await;
    assert!(!out.status.success() && out.stdout.is_empty());

    wrong.shutdown().await;
    let _ = tech.child.kill().await;
    agent.shutdown().await;
}

/// Test 4: the agent refuses a server whose certificate is from its CA
/// but for another name.
#[tokio::test]
async fn agent_refuses_a_certificate_for_another_name() {
    let mut opts = FleetOptions::new(&["k1"]);
    opts.tls = true;
    let mut fleet = TestFleet::start_with(opts).await;
    let (cert, key) = fleet
        .pki
        .as_ref()
        .expect("pki")
        .server_cert_for(&["elsewhere.example"]);
    fleet.stop_gateway().await;
    fleet.gateway_config.broker.embedded_mut().unwrap().tls_cert = Some(cert);
    fleet.gateway_config.broker.embedded_mut().unwrap().tls_key = Some(key);
    fleet.start_gateway().await;
    let handshakes = "kiosk_broker_refused_total{reason=\"tls_handshake\"}";
    let printer = FakePrinter::start().await.unwrap();
    // The agent connects to `localhost`, which the certificate does not name.
    let agent = fleet.start_agent("k1", printer.addr()).await;
    wait_metric(&fleet, handshakes, 1).await;
    let (_, k1) = fleet.get("/v1/kiosks/k1").await;
    assert_ne!(k1["status"], "online", "{k1}");
    agent.shutdown().await;
}

/// Optional client-certificate verification (`tls_client_ca`): an agent
/// without a certificate from that CA cannot connect, one with it can.
#[tokio::test]
async fn client_certificates_are_required_when_configured() {
    let mut opts = FleetOptions::new(&["k1", "k2"]);
    opts.tls = true;
    let mut fleet = TestFleet::start_with(opts).await;
    let (ca, (cert, key)) = {
        let pki = fleet.pki.as_ref().expect("pki");
        (pki.ca_cert.clone(), pki.client_cert("k2"))
    };
    fleet.stop_gateway().await;
    fleet
        .gateway_config
        .broker
        .embedded_mut()
        .unwrap()
        .tls_client_ca = Some(ca);
    fleet.start_gateway().await;
    let printer = FakePrinter::start().await.unwrap();

    let handshakes = "kiosk_broker_refused_total{reason=\"tls_handshake\"}";
    let without = fleet.start_agent("k1", printer.addr()).await;
    wait_metric(&fleet, handshakes, 1).await;
    let mut config = fleet.agent_config("k2", printer.addr());
    config.broker.client.client_cert = Some(cert);
    config.broker.client.client_key = Some(key);
    let with = fleet.start_agent_with(config).await;
    fleet.wait_kiosk("k2", "online").await;
    let job = fleet.create_job("k2", text_job("MTLS\n")).await;
    fleet.wait_job(&job, "printed").await;
    let (_, k1) = fleet.get("/v1/kiosks/k1").await;
    assert_ne!(k1["status"], "online", "{k1}");
    without.shutdown().await;
    with.shutdown().await;
}

/// Test 4 (HTTP side): the API serves HTTPS from `http.tls_cert`/`tls_key`,
/// and curl with the private CA talks to it.
#[tokio::test]
async fn http_api_serves_https_from_config() {
    let mut opts = FleetOptions::new(&["k1"]);
    opts.tls = true;
    let mut fleet = TestFleet::start_with(opts).await;
    let (cert, key, ca) = {
        let pki = fleet.pki.as_ref().expect("pki");
        (
            pki.server_cert.clone(),
            pki.server_key.clone(),
            pki.ca_cert.clone(),
        )
    };
    fleet.stop_gateway().await;
    let mut config = fleet.gateway_config.clone();
    config.http.tls_cert = Some(cert);
    config.http.tls_key = Some(key);
    let gateway = kiosk_gateway::Gateway::start(config)
        .await
        .expect("HTTPS gateway");
    let url = format!(
        "https://localhost:{}/v1/kiosks/k1",
        gateway.http_addr().port()
    );
    let out = run(
        "curl",
        &[
            "-sS".into(),
            "--cacert".into(),
            ca.display().to_string(),
            "-H".into(),
            format!("Authorization: Bearer {}", fleet.api_key),
            url.clone(),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(body["kiosk_id"], "k1");
    // Without the CA, curl refuses the certificate.
    let out = run("curl", &["-sS".into(), url]).await;
    assert!(!out.status.success());
    gateway.shutdown().await;
}

/// Test 5: a removed kiosk cannot reconnect and its open connection is
/// dropped; a rotated kiosk's old secret stops working the same way.
#[tokio::test]
async fn removed_kiosk_is_dropped_and_cannot_reconnect() {
    let mut opts = FleetOptions::new(&["k1", "k2"]);
    // The removed agent keeps retrying from 127.0.0.1 like every client
    // here; the login throttle must not get in the way of this test.
    opts.broker_extra = "failed_logins_per_minute = 1000\n".into();
    let fleet = TestFleet::start_with(opts).await;
    let creds = fleet.dir.path().join("credentials");
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let mut args = login(&fleet, "k2", "k2");
    args.extend(["-t".into(), "kiosk/k2/cmd".into()]);
    let mut k2 = Subscriber::start(args).await;

    // `kiosk-gateway kiosk remove k1`, as the CLI does it.
    let k1 = kiosk_schemas::KioskId::new("k1").unwrap();
    kiosk_gateway::admin::remove(&creds, &k1).unwrap();
    wait_metric(&fleet, "kiosk_broker_sessions_revoked_total", 1).await;
    // Its last will tells the cloud it is gone; it stays gone.
    fleet.wait_kiosk("k1", "offline").await;
    agent.shutdown().await;
    let mut again = login(&fleet, "k1", "k1");
    again.extend([
        "-t".into(),
        "kiosk/k1/print".into(),
        "-C".into(),
        "1".into(),
    ]);
    let out = run("mosquitto_sub", &again).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad user name or password"), "{stderr}");

    // `kiosk rotate k2`: the live session with the old secret is dropped
    // (mosquitto_sub exits once its reconnects are refused), the new
    // secret from the provisioning file works.
    let k2_id = kiosk_schemas::KioskId::new("k2").unwrap();
    let provisioning = fleet.dir.path().join("k2.json");
    kiosk_gateway::admin::rotate(&creds, &k2_id, &provisioning).unwrap();
    wait_metric(&fleet, "kiosk_broker_sessions_revoked_total", 2).await;
    let exited = tokio::time::timeout(WAIT, k2.child.wait()).await;
    assert!(
        matches!(exited, Ok(Ok(status)) if !status.success()),
        "{exited:?}"
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&provisioning).unwrap()).unwrap();
    let mut fresh = login(&fleet, "k2", "k2");
    fresh[9] = file["password"].as_str().unwrap().to_owned();
    fresh.extend([
        "-q".into(),
        "1".into(),
        "-t".into(),
        "kiosk/k2/status".into(),
        "-m".into(),
        "{\"v\":1,\"state\":\"online\"}".into(),
    ]);
    let out = run("mosquitto_pub", &fresh).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Test 6: oversized payloads, too many connections, a connection flood
/// and a burst of failed logins are refused as configured, while a
/// connected kiosk keeps printing.
#[tokio::test]
async fn limits_refuse_abuse_while_legitimate_kiosks_keep_working() {
    let mut opts = FleetOptions::new(&["k1"]);
    opts.broker_extra = "max_payload_bytes = 65536\nmax_connections = 4\nfailed_logins_per_minute = 3\nconnections_per_second = 1000\n".into();
    let fleet = TestFleet::start_with(opts).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let still_prints = |marker: &'static str| {
        let fleet = &fleet;
        let printer = &printer;
        async move {
            let job = fleet
                .create_job("k1", text_job(&format!("{marker}\n")))
                .await;
            fleet.wait_job(&job, "printed").await;
            assert_eq!(count_with(&printer.jobs(), marker), 1);
        }
    };

    // Oversized payload: the publisher is dropped, counted.
    let oversized = "kiosk_broker_refused_total{reason=\"payload_too_large\"}";
    let mut args = login(&fleet, "backend", "backend-big");
    args.extend([
        "-q".into(),
        "1".into(),
        "-t".into(),
        "kiosk/k1/print".into(),
        "-m".into(),
        "x".repeat(100_000),
    ]);
    let mut big = spawn("mosquitto_pub", &args);
    wait_metric(&fleet, oversized, 1).await;
    let _ = big.kill().await;
    still_prints("AFTER-OVERSIZED").await;
    let settled = wait_for(WAIT, || async {
        metric(&fleet, "kiosk_broker_connections").await <= 1
    })
    .await;
    assert!(
        settled,
        "the oversized publisher's connection is still counted"
    );

    // Too many connections: the agent holds one, three subscribers fill
    // max_connections = 4, the fifth is closed at once.
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let mut args = login(&fleet, "technician", &format!("technician-{i}"));
        args.extend(["-t".into(), "kiosk/#".into()]);
        subscribers.push(Subscriber::start(args).await);
    }
    let mut args = login(&fleet, "technician", "technician-over");
    args.extend([
        "-t".into(),
        "kiosk/#".into(),
        "-C".into(),
        "1".into(),
        "-W".into(),
        "5".into(),
    ]);
    let mut over = spawn("mosquitto_sub", &args);
    wait_metric(
        &fleet,
        "kiosk_broker_refused_total{reason=\"max_connections\"}",
        1,
    )
    .await;
    let _ = over.kill().await;
    still_prints("AFTER-MAX-CONNECTIONS").await;
    for mut s in subscribers {
        let _ = s.child.kill().await;
        let _ = s.child.wait().await;
    }
    wait_for(WAIT, || async {
        metric(&fleet, "kiosk_broker_connections").await <= 1
    })
    .await;

    // A burst of failed logins from 127.0.0.1: three are checked and
    // refused (0x04), then the address is throttled (0x05), even with the
    // right password.
    for _ in 0..3 {
        let stderr = technician_login(&fleet, "technician-guesser", Some("guess")).await;
        assert!(stderr.contains("bad user name or password"), "{stderr}");
    }
    let stderr = technician_login(&fleet, "technician-guesser", None).await;
    assert!(stderr.contains("not authori"), "{stderr}");
    assert_eq!(
        metric(
            &fleet,
            "kiosk_broker_refused_total{reason=\"login_throttled\"}"
        )
        .await,
        1
    );
    assert_eq!(
        metric(
            &fleet,
            "kiosk_broker_refused_total{reason=\"login_failed\"}"
        )
        .await,
        3
    );
    still_prints("AFTER-FAILED-LOGINS").await;
    agent.shutdown().await;
}

/// Test 6 (connection rate): a flood of connections beyond
/// `connections_per_second` for longer than `connect_timeout` is closed at
/// once, and a connected kiosk keeps printing.
#[tokio::test]
async fn connection_flood_is_rate_limited() {
    let mut opts = FleetOptions::new(&["k1"]);
    opts.broker_extra = "connections_per_second = 2\n".into();
    let fleet = TestFleet::start_with(opts).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;

    // 40 sockets at once: 2 pass, about 10 queue (5 s at 2/s), the rest
    // are closed right after accept.
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(
            tokio::net::TcpStream::connect(fleet.mqtt_addr)
                .await
                .unwrap(),
        );
    }
    wait_metric(
        &fleet,
        "kiosk_broker_refused_total{reason=\"rate_limited\"}",
        20,
    )
    .await;
    let job = fleet.create_job("k1", text_job("DURING-FLOOD\n")).await;
    fleet.wait_job(&job, "printed").await;
    drop(flood);
    agent.shutdown().await;
    assert_eq!(count_with(&printer.jobs(), "DURING-FLOOD"), 1);
}

/// `Debug` of configurations and errors never shows secrets.
/// One `mosquitto_sub` login as the technician with `client_id`, with
/// `password` instead of the right one if given, waiting for one message;
/// returns what it printed on stderr (why it was refused).
async fn technician_login(fleet: &TestFleet, client_id: &str, password: Option<&str>) -> String {
    let mut args = login(fleet, "technician", client_id);
    if let Some(password) = password {
        args[9] = password.into();
    }
    args.extend(["-t".into(), "kiosk/#".into(), "-C".into(), "1".into()]);
    let out = run("mosquitto_sub", &args).await;
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `mosquitto_pub` as backend: a `ping` command to `kiosk`, which a
/// backend may send; panics when refused.
async fn backend_pings(fleet: &TestFleet, kiosk: &str) {
    let mut args = login(fleet, "backend", "backend-cmd");
    args.extend([
        "-q".into(),
        "1".into(),
        "-t".into(),
        format!("kiosk/{kiosk}/cmd"),
        "-m".into(),
        r#"{"v":1,"kind":"ping"}"#.into(),
    ]);
    let out = run("mosquitto_pub", &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const REFUSED_CLIENT_ID: &str = "kiosk_broker_refused_total{reason=\"client_id\"}";

/// Issue 10, finding 1: a technician or backend login choosing a kiosk's
/// or the gateway's client id would take that session over (MQTT-3.1.4-2)
/// and inherit its jobs. Refused with CONNACK 0x02; the kiosk never drops
/// and keeps printing; a takeover within one identity is counted.
#[tokio::test]
async fn takeover_by_client_id_is_refused_and_the_kiosk_keeps_printing() {
    let fleet = TestFleet::start(&["kiosk-b"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("kiosk-b", printer.addr()).await;
    fleet.wait_kiosk("kiosk-b", "online").await;

    let attempts = [
        ("technician", "kiosk-b"),
        ("backend", "kiosk-b"),
        ("technician", "kiosk-gateway"),
        ("backend", "kiosk-gateway-pub"),
    ];
    for (user, client_id) in attempts {
        let mut args = login(&fleet, user, client_id);
        args.extend(["-t".into(), "kiosk/#".into(), "-C".into(), "1".into()]);
        let out = run("mosquitto_sub", &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{user} as {client_id} got in");
        assert!(
            stderr.contains("identifier rejected"),
            "{user} as {client_id}: {stderr}"
        );
    }
    assert_eq!(metric(&fleet, REFUSED_CLIENT_ID).await, 4);
    // The kiosk's and the gateway's sessions were never touched.
    assert_eq!(
        metric(&fleet, "kiosk_broker_sessions_taken_over_total").await,
        0
    );
    let job = fleet.create_job("kiosk-b", text_job("STILL-MINE\n")).await;
    fleet.wait_job(&job, "printed").await;
    assert_eq!(count_with(&printer.jobs(), "STILL-MINE"), 1);
    let kiosk = fleet.wait_kiosk("kiosk-b", "online").await;
    assert_eq!(kiosk["status"], "online");

    // The same identity twice (one credential on two machines): allowed,
    // the older connection goes, and it is counted (and logged at WARN
    // with both addresses).
    let mut args = login(&fleet, "technician", "technician-desk");
    args.extend(["-t".into(), "kiosk/#".into()]);
    let mut first = Subscriber::start(args.clone()).await;
    let _second = Subscriber::start(args).await;
    wait_metric(&fleet, "kiosk_broker_sessions_taken_over_total", 1).await;
    let _ = first.child.kill().await;
    agent.shutdown().await;
}

/// Issue 10, finding 2: `cash/ack` makes a kiosk delete credits, and
/// `cash/control` opens or closes its acceptor; only the gateway, from its
/// durable store, may publish them. A backend's are denied and never reach
/// the kiosk.
#[tokio::test]
async fn backend_cannot_acknowledge_credits_or_control_the_acceptor() {
    let fleet = TestFleet::start(&["k1"]).await;
    let mut args = login(&fleet, "k1", "k1");
    for topic in ["kiosk/k1/cash/ack", "kiosk/k1/cash/control", "kiosk/k1/cmd"] {
        args.extend(["-t".into(), topic.into()]);
    }
    let mut kiosk = Subscriber::start(args).await;
    let forged = [
        (
            "kiosk/k1/cash/ack",
            r#"{"v":1,"outbox":"00000000000000ab","up_to_seq":999999}"#,
        ),
        (
            "kiosk/k1/cash/control",
            r#"{"v":1,"action":"enable","session_id":"s-forged","amount_due":100,"currency":"EUR"}"#,
        ),
    ];
    for (i, (topic, body)) in forged.into_iter().enumerate() {
        let before = metric(&fleet, ACL_PUBLISH).await;
        let mut args = login(&fleet, "backend", &format!("backend-{i}"));
        args.extend([
            "-q".into(),
            "1".into(),
            "-t".into(),
            topic.into(),
            "-m".into(),
            body.into(),
        ]);
        let mut publisher = spawn("mosquitto_pub", &args);
        wait_metric(&fleet, ACL_PUBLISH, before + 1).await;
        let _ = publisher.kill().await;
    }
    // A command the backend may send arrives, and it is the first thing
    // the kiosk sees: the forged ack and control never came.
    backend_pings(&fleet, "k1").await;
    let first = kiosk.next_message().await.expect("the command");
    assert!(first.starts_with("kiosk/k1/cmd "), "{first}");
    let _ = kiosk.child.kill().await;
}

/// Issue 10, finding 5: failed logins are throttled per (address, user):
/// a guest guessing the technician's password on the restaurant's Wi-Fi
/// locks out only that user at that address, never the kiosk or a backend
/// behind the same public address.
#[tokio::test]
async fn a_guesser_at_one_address_does_not_lock_out_another_user_there() {
    let mut opts = FleetOptions::new(&["k1"]);
    opts.broker_extra = "failed_logins_per_minute = 3\n".into();
    let fleet = TestFleet::start_with(opts).await;
    for _ in 0..3 {
        let stderr = technician_login(&fleet, "technician-guest", Some("guess")).await;
        assert!(stderr.contains("bad user name or password"), "{stderr}");
    }
    // The technician at 127.0.0.1 is throttled now, even with the right
    // password...
    let stderr = technician_login(&fleet, "technician-guest", None).await;
    assert!(stderr.contains("not authori"), "{stderr}");
    // ...the kiosk and the backend at the same address are not.
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let mut args = login(&fleet, "backend", "backend-pos");
    args.extend([
        "-t".into(),
        "kiosk/k1/status".into(),
        "-C".into(),
        "1".into(),
    ]);
    let out = run("mosquitto_sub", &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = fleet.create_job("k1", text_job("NOT-LOCKED-OUT\n")).await;
    fleet.wait_job(&job, "printed").await;
    agent.shutdown().await;
}

/// Issue 10, finding 6: rumqttd's loopback listener is no side door. A
/// kiosk's (or the gateway's) own password does not log in there, so every
/// client goes through the front door, whose revocation covers it.
#[tokio::test]
async fn the_internal_listener_refuses_outside_logins() {
    let fleet = TestFleet::start(&["k1"]).await;
    let internal = fleet.internal_mqtt_addr().expect("embedded broker");
    // Each asks for a filter its ACL allows, so only the login can fail;
    // `-d` shows whether a CONNACK 0 came back.
    for (user, client_id, filter) in [
        ("k1", "k1", "kiosk/k1/cmd"),
        ("gateway", "gateway-side", "kiosk/#"),
        ("technician", "technician", "kiosk/#"),
    ] {
        let args: Vec<String> = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            internal.port().to_string(),
            "-i".into(),
            client_id.into(),
            "-u".into(),
            user.into(),
            "-P".into(),
            fleet.secrets[user].clone(),
            "-t".into(),
            filter.into(),
            "-d".into(),
            "-C".into(),
            "1".into(),
            "-W".into(),
            "3".into(),
        ];
        let out = run("mosquitto_sub", &args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && !stdout.contains("received CONNACK (0)"),
            "{user} logged in on rumqttd's listener: {stdout}"
        );
    }
    // Through the front door the kiosk works, and rotating its secret drops
    // that session (the one door every client uses).
    let mut args = login(&fleet, "k1", "k1");
    args.extend(["-t".into(), "kiosk/k1/cmd".into()]);
    let mut k1 = Subscriber::start(args).await;
    let creds = fleet.dir.path().join("credentials");
    let k1_id = kiosk_schemas::KioskId::new("k1").unwrap();
    kiosk_gateway::admin::rotate(&creds, &k1_id, &fleet.dir.path().join("k1.json")).unwrap();
    wait_metric(&fleet, "kiosk_broker_sessions_revoked_total", 1).await;
    let exited = tokio::time::timeout(WAIT, k1.child.wait()).await;
    assert!(
        matches!(exited, Ok(Ok(status)) if !status.success()),
        "{exited:?}"
    );
}

/// Issue 10, finding 7: MQTT 3.1.1 at the front door. Keep alive 0 is
/// allowed (MQTT-3.1.2-10); a denied filter gets 0x80 in the SUBACK and the
/// connection keeps working with its other filters (MQTT-3.9.3).
#[tokio::test]
async fn keep_alive_zero_connects_and_a_denied_filter_leaves_the_connection_open() {
    let fleet = TestFleet::start(&["kiosk-a", "kiosk-b"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("kiosk-b", printer.addr()).await;
    fleet.wait_kiosk("kiosk-b", "online").await;

    // mosquitto_sub insists on a keep alive of 5 s or more; rumqttc sends 0.
    let mut opts = rumqttc::MqttOptions::new("technician-k0", "127.0.0.1", fleet.mqtt_addr.port());
    opts.set_keep_alive(std::time::Duration::ZERO);
    opts.set_credentials("technician", &fleet.secrets["technician"]);
    let mut k0 = kiosk_e2e::mqtt::Client::connect_with(opts)
        .await
        .expect("keep alive 0 is accepted");
    k0.subscribe("kiosk/kiosk-b/status").await;
    let status = k0.recv(WAIT).await.expect("the retained status");
    assert!(String::from_utf8_lossy(&status.payload).contains("online"));

    let before = metric(&fleet, ACL_SUBSCRIBE).await;
    let mut args = login(&fleet, "kiosk-a", "kiosk-a");
    args.extend([
        "-t".into(),
        "kiosk/kiosk-b/print".into(),
        "-t".into(),
        "kiosk/kiosk-a/cmd".into(),
    ]);
    let mut nosy = Subscriber::start(args).await;
    assert_eq!(metric(&fleet, ACL_SUBSCRIBE).await, before + 1);
    let job = fleet.create_job("kiosk-b", text_job("NOT-FOR-A\n")).await;
    fleet.wait_job(&job, "printed").await;
    backend_pings(&fleet, "kiosk-a").await;
    let first = nosy.next_message().await.expect("its own command");
    assert!(first.starts_with("kiosk/kiosk-a/cmd "), "{first}");
    let _ = nosy.child.kill().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn secrets_stay_out_of_debug_output() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent_config = fleet.agent_config("k1", printer.addr());
    let shown = format!("{:?} {:?}", fleet.gateway_config, agent_config);
    for (user, secret) in &fleet.secrets {
        assert!(
            !shown.contains(secret.as_str()),
            "{user}'s secret in Debug output"
        );
    }
}
