//! NATS benchmark: what a fleet costs on a nats-server node (the broker of
//! README "Scaling out"). Prints figures; asserts nothing.
//!
//! ```text
//! cargo bench -p kiosk-e2e --bench nats
//! BENCH_NATS_KIOSKS=3000 cargo bench -p kiosk-e2e --bench nats
//! ```
//!
//! One nats-server 2.9 node with JetStream and its MQTT listener, in its
//! own process. `BENCH_NATS_KIOSKS` (default 2,000) kiosks connect at once
//! the way the agent does: MQTT 3.1.1, a persistent session
//! (`clean_session = false`) and the agent's four QoS 1 subscriptions
//! (`print`, `cmd`, `cash/ack`, `cash/control`), retrying with jittered
//! backoff when turned away, until every one has its SUBACK. Printed:
//! seconds until all are subscribed, the server's RSS before and after
//! (KiB per kiosk) and the JetStream store on disk. Then the whole fleet
//! drops and reconnects to its existing sessions (the reconnect storm
//! after a VPS or network outage): seconds until all are back.
//!
//! No authorization is configured: `broker-config --format nats` users
//! add a bcrypt check per CONNECT, which this does not measure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kiosk_e2e::bench::{env_usize, rss_kib};
use kiosk_e2e::nats::NatsServer;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS};
use tokio::task::JoinSet;

/// Bytes under `dir`, recursively.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The agent's subscriptions (device-agent/src/connection.rs).
fn filters(kiosk: &str) -> [String; 4] {
    [
        format!("kiosk/{kiosk}/print"),
        format!("kiosk/{kiosk}/cmd"),
        format!("kiosk/{kiosk}/cash/ack"),
        format!("kiosk/{kiosk}/cash/control"),
    ]
}

/// Connects `kiosk` with a persistent session and, on a new session,
/// subscribes as the agent does; returns once the CONNACK (and SUBACK) is
/// in, with the event loop still polled in the background.
async fn session(
    addr: std::net::SocketAddr,
    kiosk: &str,
) -> anyhow::Result<(AsyncClient, tokio::task::JoinHandle<()>)> {
    let mut o = MqttOptions::new(kiosk, addr.ip().to_string(), addr.port());
    o.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(120))
        .set_credentials(kiosk, "unused");
    let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(o, 16);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(30);
    eventloop.set_network_options(network);
    let present = loop {
        if let Event::Incoming(Packet::ConnAck(ack)) = eventloop.poll().await? {
            break ack.session_present;
        }
    };
    if !present {
        for f in filters(kiosk) {
            client.subscribe(f, QoS::AtLeastOnce).await?;
        }
        let mut acked = 0;
        while acked < 4 {
            if let Event::Incoming(Packet::SubAck(ack)) = eventloop.poll().await? {
                anyhow::ensure!(
                    ack.return_codes
                        .iter()
                        .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
                    "{kiosk}: a filter was refused: {ack:?}"
                );
                acked += 1;
            }
        }
    }
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    Ok((client, poller))
}

/// A deterministic jitter in [delay/2, delay) from the kiosk's number.
fn jitter(n: usize, delay: Duration) -> Duration {
    let half = delay / 2;
    half + Duration::from_micros(
        (n as u64).wrapping_mul(2_654_435_761) % (half.as_micros().max(1) as u64),
    )
}

/// Every kiosk connected at once; returns the sessions, seconds until all
/// were in, and how many attempts were turned away and retried.
async fn storm(
    addr: std::net::SocketAddr,
    kiosks: usize,
) -> (Vec<(AsyncClient, tokio::task::JoinHandle<()>)>, f64, usize) {
    let retries = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut connecting = JoinSet::new();
    for n in 0..kiosks {
        let retries = retries.clone();
        connecting.spawn(async move {
            let kiosk = format!("kiosk-{n:05}");
            let mut delay = Duration::from_millis(250);
            loop {
                match session(addr, &kiosk).await {
                    Ok(s) => return s,
                    Err(_) => {
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(jitter(n, delay)).await;
                        delay = (delay * 2).min(Duration::from_secs(4));
                    }
                }
            }
        });
    }
    let mut sessions = Vec::with_capacity(kiosks);
    while let Some(s) = connecting.join_next().await {
        sessions.push(s.expect("session task"));
    }
    (
        sessions,
        started.elapsed().as_secs_f64(),
        retries.load(Ordering::Relaxed),
    )
}

async fn drop_all(sessions: Vec<(AsyncClient, tokio::task::JoinHandle<()>)>) {
    for (client, poller) in sessions {
        let _ = client.try_disconnect();
        poller.abort();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kiosks = env_usize("BENCH_NATS_KIOSKS", 2_000);
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("extra.conf"), "max_connections: 100000\n")?;
    let Some(server) = NatsServer::start(dir.path(), "extra.conf").await else {
        println!("nats-server is not installed (apt install nats-server): nothing measured");
        return Ok(());
    };
    let pid = server.pid().unwrap_or(0);
    let version = std::process::Command::new(
        kiosk_e2e::nats::binary().unwrap_or_else(|| "nats-server".into()),
    )
    .arg("--version")
    .output()
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    .unwrap_or_default();
    println!(
        "kiosk-fleet NATS benchmark ({} cores, {version}, one node, JetStream on disk)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);

    let (sessions, secs, retries) = storm(server.mqtt_addr, kiosks).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    println!(
        "new sessions: {kiosks} kiosks (persistent session, 4 QoS 1 subscriptions) all subscribed \
         after {secs:.1} s ({retries} attempts turned away and retried)\n  \
         nats-server RSS {:.1} MiB before, {:.1} MiB after ({:.1} KiB per kiosk); JetStream on disk \
         {:.1} MiB",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / kiosks.max(1) as f64,
        disk_bytes(&dir.path().join("jetstream")) as f64 / (1024.0 * 1024.0),
    );

    drop_all(sessions).await;
    let idle = rss_kib(pid);
    let (sessions, secs, retries) = storm(server.mqtt_addr, kiosks).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "reconnect storm: {kiosks} kiosks back on their sessions after {secs:.1} s ({retries} \
         attempts retried); nats-server RSS {:.1} MiB with all disconnected, {:.1} MiB with all back",
        idle as f64 / 1024.0,
        rss_kib(pid) as f64 / 1024.0,
    );
    drop_all(sessions).await;
    Ok(())
}
