//! Real outside peers: mosquitto as the external broker, `mosquitto_sub` as
//! a technician, Python paho-mqtt as a backend. `scripts/test.sh` installs
//! them; without them these tests fail (they never skip).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kiosk_e2e::mosquitto::Mosquitto;
use kiosk_e2e::{FleetOptions, TestFleet, WAIT, count_with, text_job};
use kiosk_testkit::FakePrinter;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn external_mosquitto_happy_path_and_restart_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut mosquitto = Mosquitto::start(dir.path()).await;
    let mut opts = FleetOptions::new(&["k1"]);
    opts.external_broker = Some(mosquitto.addr);
    let fleet = TestFleet::start_with(opts).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;

    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            fleet
                .create_job("k1", text_job(&format!("EXT-{i:02}\n")))
                .await,
        );
    }
    fleet.wait_job(&ids[0], "printed").await;
    // Kill the broker mid-run: sessions and queued messages are gone.
    mosquitto.restart().await;
    for i in 10..20 {
        ids.push(
            fleet
                .create_job("k1", text_job(&format!("EXT-{i:02}\n")))
                .await,
        );
    }
    for id in &ids {
        fleet.wait_job(id, "printed").await;
    }
    let jobs = printer.jobs();
    for i in 0..20 {
        assert_eq!(count_with(&jobs, &format!("EXT-{i:02}")), 1, "EXT-{i:02}");
    }
    agent.shutdown().await;
}

/// The gateway's own sessions to an external broker over `mqtts://`,
/// trusting only the private CA of `broker.ca_file`.
#[tokio::test]
async fn external_mosquitto_over_tls_with_a_pinned_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = kiosk_e2e::pki::TestPki::generate(dir.path(), "ext");
    let mosquitto = Mosquitto::start_with_tls(dir.path(), &pki.server_cert, &pki.server_key).await;
    let mut opts = FleetOptions::new(&["k1"]);
    opts.external_broker = Some(mosquitto.addr);
    opts.external_tls = Some((mosquitto.tls_addr.expect("tls"), pki.ca_cert.clone()));
    let fleet = TestFleet::start_with(opts).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let job = fleet.create_job("k1", text_job("EXT-TLS\n")).await;
    fleet.wait_job(&job, "printed").await;
    assert_eq!(count_with(&printer.jobs(), "EXT-TLS"), 1);
    agent.shutdown().await;
}

#[tokio::test]
async fn mosquitto_sub_as_technician_sees_jobs_and_results() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;

    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &fleet.mqtt_addr.port().to_string()])
        .args(["-u", "technician", "-P", &fleet.secrets["technician"]])
        .args(["-I", "technician-", "-q", "1", "-v", "-t", "kiosk/+/#"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub is installed (scripts/test.sh)");
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    // The retained status arrives first: mosquitto_sub is subscribed.
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.starts_with("kiosk/k1/status {"), "{first}");

    let job_id = fleet
        .create_job("k1", kiosk_e2e::receipt_job(&[(1, "Soup", 550)]))
        .await;
    fleet.wait_job(&job_id, "printed").await;
    let (mut saw_job, mut saw_printed) = (false, false);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(saw_job && saw_printed) && tokio::time::Instant::now() < deadline {
        let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await
        else {
            continue;
        };
        let Some((topic, payload)) = line.split_once(' ') else {
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
        if topic == "kiosk/k1/print" && json["job_id"] == job_id.as_str() {
            assert_eq!(json["document"]["items"][0]["name"], "Soup");
            saw_job = true;
        }
        if topic == "kiosk/k1/print/result"
            && json["job_id"] == job_id.as_str()
            && json["state"] == "printed"
        {
            saw_printed = true;
        }
    }
    assert!(saw_job, "mosquitto_sub did not show the job");
    assert!(saw_printed, "mosquitto_sub did not show the printed result");
    let _ = sub.kill().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn python_paho_backend_publishes_a_job_straight_to_the_topic() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/publish_job.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["127.0.0.1", &fleet.mqtt_addr.port().to_string()])
        .args([
            "backend",
            &fleet.secrets["backend"],
            "k1",
            "py-job-1",
            "FROM-PYTHON",
        ])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "paho script failed (is paho-mqtt installed? scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = fleet.wait_job("py-job-1", "printed").await;
    assert_eq!(job["origin"], "mqtt");
    assert_eq!(job["document"]["text"], "FROM-PYTHON\n");
    assert_eq!(count_with(&printer.jobs(), "FROM-PYTHON"), 1);
    agent.shutdown().await;
}
