//! Presence (issue 10, finding 3): the gateway's view of a kiosk stays true
//! through reconnects that race the old connection, and a kiosk whose will
//! is never published still goes offline after three heartbeats of silence.

use std::time::Duration;

use kiosk_e2e::mosquitto::Mosquitto;
use kiosk_e2e::{FleetOptions, TestFleet, WAIT, text_job, wait_for};
use kiosk_testkit::{CutProxy, FakePrinter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_stays_online_when_a_reconnect_races_the_old_link() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let proxy = CutProxy::start(fleet.mqtt_addr).await.unwrap();
    let mut config = fleet.agent_config("k1", printer.addr());
    config.broker.url = Some(format!("mqtt://{}", proxy.addr()).parse().unwrap());
    let agent = fleet.start_agent_with(config).await;
    fleet.wait_kiosk("k1", "online").await;

    for round in 0..3 {
        let before = proxy.accepted();
        proxy.rebind();
        assert!(
            wait_for(WAIT, || async { proxy.accepted() > before }).await,
            "the agent never reconnected"
        );
        // The broker holds the old link until its keep alive (5 s × 1.5)
        // runs out; watch through that and a margin.
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < until {
            let (_, k) = fleet.get("/v1/kiosks/k1").await;
            if k["status"] != "online" {
                // Give the kiosk a moment: only a lasting lie counts.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let (_, again) = fleet.get("/v1/kiosks/k1").await;
                assert_eq!(
                    again["status"], "online",
                    "round {round}: shown {k} while connected"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let job = fleet
            .create_job("k1", text_job(&format!("after rebind {round}")))
            .await;
        fleet.wait_job(&job, "printed").await;
    }
    agent.shutdown().await;
}

/// A fleet on an external mosquitto, and `k1`'s agent reaching it through
/// a relay, republishing its status every second.
async fn mosquitto_fleet(
    dir: &std::path::Path,
    keep_alive: Duration,
) -> (
    Mosquitto,
    TestFleet,
    FakePrinter,
    CutProxy,
    kiosk_agent::Agent,
) {
    let mosquitto = Mosquitto::start(dir).await;
    let mut opts = FleetOptions::new(&["k1"]);
    opts.external_broker = Some(mosquitto.addr);
    let fleet = TestFleet::start_with(opts).await;
    let printer = FakePrinter::start().await.unwrap();
    let proxy = CutProxy::start(mosquitto.addr).await.unwrap();
    let mut config = fleet.agent_config("k1", printer.addr());
    config.broker.url = Some(format!("mqtt://{}", proxy.addr()).parse().unwrap());
    config.broker.client.keep_alive = keep_alive;
    config.status.heartbeat = HEARTBEAT;
    let agent = fleet.start_agent_with(config).await;
    fleet.wait_kiosk("k1", "online").await;
    (mosquitto, fleet, printer, proxy, agent)
}

const HEARTBEAT: Duration = Duration::from_secs(1);

/// The kiosk's `kiosk_presence_transitions_total` for `to` and `reason`.
async fn transitions(fleet: &TestFleet, to: &str, reason: &str) -> u64 {
    let resp = fleet
        .request(reqwest::Method::GET, "/metrics")
        .bearer_auth(&fleet.api_key);
    let text = resp.send().await.unwrap().text().await.unwrap();
    let needle = format!("kiosk_presence_transitions_total{{to=\"{to}\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until `/metrics` counts one offline by heartbeat timeout (the
/// counter moves just after the view does), and checks it stays one.
async fn assert_heartbeat_timeout_counted(fleet: &TestFleet) {
    let counted = wait_for(WAIT, || async {
        transitions(fleet, "offline", "heartbeat_timeout").await >= 1
    })
    .await;
    assert!(counted, "no heartbeat_timeout transition counted");
    assert_eq!(transitions(fleet, "offline", "heartbeat_timeout").await, 1);
    assert_eq!(transitions(fleet, "offline", "will").await, 0);
}

/// The broker node dies with the kiosk's will (SIGKILL: nothing is
/// published): the gateway marks the kiosk offline after three heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_after_three_heartbeats_when_the_broker_dies_with_the_will() {
    let dir = tempfile::tempdir().unwrap();
    let (mut mosquitto, fleet, _printer, _proxy, agent) =
        mosquitto_fleet(dir.path(), Duration::from_secs(5)).await;
    // Heartbeats keep it online meanwhile.
    tokio::time::sleep(HEARTBEAT * 4).await;
    assert_eq!(fleet.get("/v1/kiosks/k1").await.1["status"], "online");

    mosquitto.kill().await;
    fleet.wait_kiosk("k1", "offline").await;
    assert_heartbeat_timeout_counted(&fleet).await;
    agent.kill().await;
}

/// The kiosk's link goes silent (no FIN, no RST) and the broker has not
/// noticed yet (keep alive 60 s): no will for 90 s, yet the gateway marks
/// the kiosk offline after three heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_after_three_heartbeats_when_the_link_is_cut_silently() {
    let dir = tempfile::tempdir().unwrap();
    let (_mosquitto, fleet, _printer, proxy, agent) =
        mosquitto_fleet(dir.path(), Duration::from_secs(60)).await;
    proxy.blackhole();
    fleet.wait_kiosk("k1", "offline").await;
    assert_heartbeat_timeout_counted(&fleet).await;
    agent.kill().await;
}
