//! Three real nats-server nodes clustered on loopback, each with JetStream
//! and an MQTT listener, as child processes: the cluster of issue 14's
//! failover tests. No authorization (any login is taken): these tests are
//! about failover; `broker-config`'s tests check the isolation.
//!
//! Without nats-server, [`NatsCluster::start`] returns `None` and the test
//! skips with a printed reason, unless `KIOSK_REQUIRE_NATS=1` (exported by
//! `scripts/test.sh`, which installs it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::nats::binary_or_skip;

/// How long a node or the cluster may take to be ready.
const READY: Duration = Duration::from_secs(30);

/// One node.
pub struct Node {
    /// `n1`, `n2`, `n3`.
    pub name: String,
    /// Its MQTT listener.
    pub mqtt_addr: SocketAddr,
    monitor_port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running three-node cluster.
pub struct NatsCluster {
    binary: PathBuf,
    /// The nodes, `n1` first.
    pub nodes: Vec<Node>,
    http: reqwest::Client,
}

fn free_port() -> u16 {
    kiosk_testkit::free_port().expect("free port")
}

impl NatsCluster {
    /// Writes three nodes' configurations under `dir` (client, cluster,
    /// monitoring and MQTT ports free on 127.0.0.1; each node routes to
    /// all three; JetStream stores under `dir/<node>`), starts them and
    /// waits until every node's `/healthz` (which covers JetStream) is
    /// ok. `None` (after printing why) without nats-server.
    ///
    /// # Panics
    /// When nats-server is missing and `KIOSK_REQUIRE_NATS=1`, or when the
    /// cluster is not ready within 30 s.
    pub async fn start(dir: &Path) -> Option<NatsCluster> {
        let binary = binary_or_skip()?;
        let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (i, cluster_port) in cluster_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let (client_port, monitor_port, mqtt_port) = (free_port(), free_port(), free_port());
            let conf = dir.join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: \"127.0.0.1:{client_port}\"\nhttp: \"127.0.0.1:{monitor_port}\"\n\
                     jetstream {{\n  store_dir: \"{store}\"\n}}\n\
                     mqtt {{\n  listen: \"127.0.0.1:{mqtt_port}\"\n  stream_replicas: 3\n  consumer_replicas: 3\n}}\n\
                     cluster {{\n  name: kiosk-test\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [{routes}]\n}}\n",
                    store = dir.join(&name).display(),
                ),
            )
            .expect("write node config");
            nodes.push(Node {
                log: dir.join(format!("{name}.log")),
                name,
                mqtt_addr: SocketAddr::from(([127, 0, 0, 1], mqtt_port)),
                monitor_port,
                conf,
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            binary,
            nodes,
            http: reqwest::Client::new(),
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster.wait_ready().await;
        Some(cluster)
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        node.child = Some(
            Command::new(&self.binary)
                .arg("-c")
                .arg(&node.conf)
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("spawn nats-server"),
        );
    }

    /// Prints the last `lines` lines of every node's log, for a test about
    /// to fail.
    pub fn dump_logs(&self, lines: usize) {
        for node in &self.nodes {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            let all: Vec<&str> = log.lines().collect();
            eprintln!("--- {} ({}) ---", node.name, node.mqtt_addr);
            for line in &all[all.len().saturating_sub(lines)..] {
                eprintln!("{line}");
            }
        }
    }

    /// The MQTT addresses, `n1` first.
    pub fn mqtt_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.mqtt_addr).collect()
    }

    /// The index of the node whose MQTT listener is `addr` (`host:port`).
    pub fn node_of(&self, addr: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.mqtt_addr.to_string() == addr)
    }

    /// Kills node `i` with SIGKILL: no last will it holds is published.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts node `i` again on its ports and store, and waits until it
    /// runs JetStream, knows the cluster's meta leader, and every node sees
    /// every stream led.
    ///
    /// Not the full `/healthz`: after a failover the restarted node keeps
    /// the consumers of sessions that moved to another node, which never
    /// become current there, so it would fail that check for good.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        let node = &self.nodes[i];
        let deadline = tokio::time::Instant::now() + READY;
        let health = format!(
            "http://127.0.0.1:{}/healthz?js-server-only=true",
            node.monitor_port
        );
        let jsz = format!("http://127.0.0.1:{}/jsz", node.monitor_port);
        loop {
            let up =
                matches!(self.http.get(&health).send().await, Ok(r) if r.status().is_success());
            let leader = match self.http.get(&jsz).send().await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|j| j["meta_cluster"]["leader"].as_str().map(str::to_owned))
                    .is_some_and(|l| !l.is_empty()),
                Err(_) => false,
            };
            if up
                && leader
                && tokio::net::TcpStream::connect(node.mqtt_addr).await.is_ok()
                && self.streams_led().await
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats node {} did not rejoin; see {}",
                node.name,
                node.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether every running node sees a leader for every JetStream stream
    /// (the MQTT streams `$MQTT_sess`, `$MQTT_msgs`, `$MQTT_rmsgs`): a
    /// node that came back has its streams again.
    async fn streams_led(&self) -> bool {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!(
                "http://127.0.0.1:{}/jsz?accounts=true&streams=true",
                node.monitor_port
            );
            let Ok(r) = self.http.get(&url).send().await else {
                return false;
            };
            let Ok(j) = r.json::<serde_json::Value>().await else {
                return false;
            };
            let streams = j["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten());
            for stream in streams {
                let cluster = &stream["cluster"];
                // Replicas' `current` is no guide: a healthy cluster
                // reports a replica of an idle stream behind by one for
                // good.
                if cluster["leader"].as_str().is_none_or(str::is_empty) {
                    return false;
                }
            }
        }
        true
    }

    /// Waits until every running node answers `/healthz` with 200 (the
    /// server is up, JetStream included) and listens for MQTT: for a new
    /// cluster.
    ///
    /// # Panics
    /// After 30 s, naming the node and its log.
    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + READY;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!("http://127.0.0.1:{}/healthz", node.monitor_port);
            loop {
                let healthy =
                    matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success());
                if healthy && tokio::net::TcpStream::connect(node.mqtt_addr).await.is_ok() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nats node {} not ready; see {}",
                    node.name,
                    node.log.display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
