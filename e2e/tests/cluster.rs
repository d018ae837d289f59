//! Issue 14: the gateway and kiosks on a three-node NATS cluster (Debian's
//! nats-server with JetStream and MQTT), with `broker.urls` failover.
//!
//! The gateway lists n1, n2, n3 and starts on n1; the kiosks list n2 and
//! n3 and start on one of them at random. Jobs print on both kiosks and
//! coins go in on k2 while: the node k1 is on is killed with SIGKILL (its
//! last wills die with it), so the gateway sees k1 go offline by missed
//! heartbeats and back online on the other node; that node comes back;
//! then the gateway's node n1 is killed and the gateway moves on. Every
//! job prints exactly once and every coin is one credit on the session.
//!
//! The same with mosquitto: two brokers bridged for `kiosk/#`, no shared
//! sessions; the broker the kiosk is on is killed, every client on it
//! moves to the other, and jobs still print exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiosk_agent::config::{AgentConfig, Checked};
use kiosk_e2e::mosquitto::Mosquitto;
use kiosk_e2e::nats_cluster::NatsCluster;
use kiosk_e2e::{FleetOptions, TestFleet, WAIT, count_with, text_job};
use kiosk_testkit::FakePrinter;
use kiosk_testkit::board::{FakeBoard, Money};

/// The agent TOML of `base` on the cluster's nodes 2 and 3, reconnecting
/// after 2 s at the earliest with a 300 ms heartbeat: the gateway's
/// heartbeat rule (3 × 300 ms) sees the kiosk offline before it is back.
fn on_cluster(base: &str, cluster: &NatsCluster) -> String {
    on_brokers(
        base,
        &[cluster.nodes[1].mqtt_addr, cluster.nodes[2].mqtt_addr],
    )
}

/// [`on_cluster`] for any brokers.
fn on_brokers(base: &str, brokers: &[std::net::SocketAddr]) -> String {
    let urls = format!(
        "urls = {:?}",
        brokers
            .iter()
            .map(|b| format!("mqtt://{b}"))
            .collect::<Vec<_>>()
    );
    let mut out: Vec<String> = base
        .lines()
        .map(|line| {
            if line.starts_with("url = ") {
                urls.clone()
            } else if line.starts_with("reconnect_min") {
                "reconnect_min = \"2s\"".to_owned()
            } else if line.starts_with("reconnect_max") {
                "reconnect_max = \"4s\"".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect();
    out.push("[status]\nheartbeat = \"300ms\"".to_owned());
    out.join("\n")
}

/// Records every change of a kiosk's `(status, broker)` as the gateway
/// shows it, polled every 50 ms.
fn watch_presence(fleet: &Arc<TestFleet>, kiosk: &str) -> Arc<Mutex<Vec<(String, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let (fleet, kiosk, out) = (fleet.clone(), kiosk.to_owned(), seen.clone());
    tokio::spawn(async move {
        loop {
            let (_, view) = fleet.get(&format!("/v1/kiosks/{kiosk}")).await;
            let now = (
                view["status"].as_str().unwrap_or("").to_owned(),
                view["broker"].as_str().unwrap_or("").to_owned(),
            );
            {
                let mut seen = out.lock().unwrap();
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    seen
}

/// How long the cluster may take to serve a client whose node died: a
/// CONNECT of a persistent session waits for JetStream to move what that
/// node led (seen here: longer than a client's 5 s CONNACK timeout, more
/// than once, on two shared cores), and backoff comes on top.
const FAILOVER: Duration = Duration::from_secs(90);

async fn broker_of(fleet: &TestFleet, kiosk: &str) -> String {
    let view = fleet
        .wait_get(&format!("/v1/kiosks/{kiosk}"), |v| {
            v["status"] == "online" && v["broker"].is_string()
        })
        .await
        .unwrap();
    view["broker"].as_str().unwrap().to_owned()
}

async fn post_jobs(fleet: &TestFleet, ids: &mut Vec<(String, String)>, round: &str) {
    for kiosk in ["k1", "k2"] {
        for i in 0..5 {
            let marker = format!("NATS-{kiosk}-{round}-{i}");
            let id = fleet
                .create_job(kiosk, text_job(&format!("{marker}\n")))
                .await;
            ids.push((id, marker));
        }
    }
}

async fn insert(board: &FakeBoard, coins: usize) {
    for _ in 0..coins {
        assert!(board.wait_accepting(true, WAIT).await, "the board accepts");
        assert!(board.insert(Money::Coin, 100).await, "coin taken");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosks_and_the_gateway_fail_over_across_a_nats_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cluster) = NatsCluster::start(dir.path()).await else {
        return;
    };
    let mut opts = FleetOptions::new(&["k1", "k2"]);
    opts.external_broker = Some(cluster.nodes[0].mqtt_addr);
    opts.external_cluster = cluster.mqtt_addrs();
    let fleet = Arc::new(TestFleet::start_with(opts).await);
    let health = fleet
        .wait_get("/healthz", |h| h["mqtt"] == "connected")
        .await
        .unwrap();
    assert_eq!(health["broker"], cluster.nodes[0].mqtt_addr.to_string());

    let (p1, p2) = (
        FakePrinter::start().await.unwrap(),
        FakePrinter::start().await.unwrap(),
    );
    let board_dir = tempfile::tempdir().unwrap();
    let board = FakeBoard::start(board_dir.path()).unwrap();
    let k1 = on_cluster(&fleet.agent_toml("k1", p1.addr()), &cluster);
    let k2 = on_cluster(
        &fleet.cash_agent_toml("k2", p2.addr(), board.path()),
        &cluster,
    );
    let _a1 = fleet
        .start_agent_with(AgentConfig::from_toml(&k1).unwrap())
        .await;
    let _a2 = fleet
        .start_agent_with(AgentConfig::from_toml(&k2).unwrap())
        .await;
    let on_k1 = broker_of(&fleet, "k1").await;
    let k1_node = cluster.node_of(&on_k1).expect("k1 on a cluster node");
    assert!(
        k1_node == 1 || k1_node == 2,
        "kiosks start on n2 or n3: {on_k1}"
    );
    broker_of(&fleet, "k2").await;
    fleet.wait_cash_connected("k2", true).await;
    let presence = watch_presence(&fleet, "k1");

    let session = fleet.open_session("k2", 5000).await;
    let session_id = session["session_id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    post_jobs(&fleet, &mut ids, "a").await;
    insert(&board, 3).await;

    // The node k1 is on dies; jobs and coins keep coming.
    cluster.kill(k1_node).await;
    let killed = tokio::time::Instant::now();
    post_jobs(&fleet, &mut ids, "b").await;
    insert(&board, 3).await;
    let moved = fleet
        .wait_get_within("/v1/kiosks/k1", FAILOVER, |v| {
            v["status"] == "online" && v["broker"].is_string() && v["broker"] != on_k1.as_str()
        })
        .await
        .unwrap_or_else(|last| {
            cluster.dump_logs(40);
            panic!("k1 back online on another node: {last}")
        });
    eprintln!("k1 failed over in {:?}", killed.elapsed());
    // The watcher polls on its own: give it the time to see the return.
    let deadline = tokio::time::Instant::now() + WAIT;
    let seen = loop {
        let seen = presence.lock().unwrap().clone();
        let back = seen
            .iter()
            .position(|(status, broker)| status == "offline" && broker == &on_k1)
            .is_some_and(|off| {
                seen[off..]
                    .iter()
                    .any(|(status, broker)| status == "online" && broker != &on_k1)
            });
        if back || tokio::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let offline_at = seen
        .iter()
        .position(|(status, broker)| status == "offline" && broker == &on_k1)
        .unwrap_or_else(|| panic!("k1 was seen offline after its node died: {seen:?}"));
    assert!(
        seen[offline_at..]
            .iter()
            .any(|(status, broker)| status == "online" && broker != &on_k1),
        "k1 back online on another node: {seen:?}"
    );
    assert_ne!(moved["broker"], on_k1.as_str());

    // The node comes back; then the gateway's node dies.
    cluster.restart(k1_node).await;
    cluster.kill(0).await;
    // JetStream elects new leaders for what n1 led before the gateway's
    // persistent session can resume on another node.
    let n1 = cluster.nodes[0].mqtt_addr.to_string();
    let killed = tokio::time::Instant::now();
    let health = fleet
        .wait_get_within("/healthz", FAILOVER, |h| {
            h["mqtt"] == "connected" && h["broker"].is_string() && h["broker"] != n1.as_str()
        })
        .await
        .unwrap_or_else(|h| {
            cluster.dump_logs(40);
            panic!("the gateway moved to another node: {h}")
        });
    eprintln!("the gateway failed over in {:?}", killed.elapsed());
    assert!(
        cluster
            .node_of(health["broker"].as_str().unwrap())
            .is_some()
    );
    post_jobs(&fleet, &mut ids, "c").await;
    insert(&board, 3).await;

    for (id, _) in &ids {
        fleet
            .wait_get_within(&format!("/v1/print-jobs/{id}"), FAILOVER, |j| {
                j["state"] == "printed"
            })
            .await
            .unwrap_or_else(|last| panic!("job {id} never printed: {last}"));
    }
    let (jobs1, jobs2) = (p1.jobs(), p2.jobs());
    for (_, marker) in &ids {
        let jobs = if marker.contains("-k1-") {
            &jobs1
        } else {
            &jobs2
        };
        assert_eq!(count_with(jobs, marker), 1, "{marker} printed once");
    }
    let path = format!("/v1/cash-sessions/{session_id}");
    let s = fleet
        .wait_get_within(&path, FAILOVER, |s| s["amount_inserted"] == 900)
        .await
        .unwrap_or_else(|last| panic!("nine coins on the session: {last}"));
    assert_eq!(s["credits"].as_array().map(Vec::len), Some(9), "{s}");
    // Nothing more arrives later (no credit counted twice).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, s) = fleet.get(&format!("/v1/cash-sessions/{session_id}")).await;
    assert_eq!(s["amount_inserted"], 900, "{s}");
}

#[tokio::test]
async fn with_two_bridged_mosquittos_clients_move_when_their_broker_dies() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Mosquitto::start(dir_a.path()).await;
    let mut b = Mosquitto::start_bridged(dir_b.path(), a.addr).await;
    let mut opts = FleetOptions::new(&["k1"]);
    opts.external_broker = Some(a.addr);
    opts.external_cluster = vec![a.addr, b.addr];
    let fleet = Arc::new(TestFleet::start_with(opts).await);
    let printer = FakePrinter::start().await.unwrap();
    let toml = on_brokers(&fleet.agent_toml("k1", printer.addr()), &[a.addr, b.addr]);
    let _agent = fleet
        .start_agent_with(AgentConfig::from_toml(&toml).unwrap())
        .await;
    let on = broker_of(&fleet, "k1").await;
    let presence = watch_presence(&fleet, "k1");
    let mut ids = Vec::new();
    for i in 0..5 {
        let marker = format!("MOSQ-a-{i}");
        ids.push((
            fleet
                .create_job("k1", text_job(&format!("{marker}\n")))
                .await,
            marker,
        ));
    }
    for (id, _) in &ids {
        fleet.wait_job(id, "printed").await;
    }

    // The kiosk's broker dies (and with A, the gateway's too).
    if on == a.addr.to_string() {
        a.kill().await;
    } else {
        b.kill().await;
    }
    for i in 0..5 {
        let marker = format!("MOSQ-b-{i}");
        ids.push((
            fleet
                .create_job("k1", text_job(&format!("{marker}\n")))
                .await,
            marker,
        ));
    }
    fleet
        .wait_get("/v1/kiosks/k1", |v| {
            v["status"] == "online" && v["broker"].is_string() && v["broker"] != on.as_str()
        })
        .await
        .expect("k1 back online on the other broker");
    for (id, _) in &ids {
        fleet.wait_job(id, "printed").await;
    }
    let jobs = printer.jobs();
    for (_, marker) in &ids {
        assert_eq!(count_with(&jobs, marker), 1, "{marker} printed once");
    }
    let seen = presence.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(status, _)| status == "offline"),
        "offline by heartbeat while it moved: {seen:?}"
    );
}
