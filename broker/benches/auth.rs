//! Authentication cost, printed, not asserted: `cargo bench -p kiosk-broker --bench auth`.
//!
//! - verifying 10,000 kiosk secrets (`$sha256$`) through the store, and the
//!   `stat` the store does on each lookup;
//! - `KIOSK_BENCH_ARGON2` (default 10) argon2id verifications;
//! - a connect storm: `KIOSK_BENCH_CLIENTS` (default 1,000) rumqttc clients,
//!   each with its own credentials, connecting at once to the embedded broker
//!   on loopback, timed until all have their CONNACK.

use std::time::{Duration, Instant};

use kiosk_broker::{
    AuthOutcome, BrokerConfig, CredentialStore, EmbeddedBroker, Role, generate_secret,
    hash_chosen_password, hash_generated_secret,
};
use kiosk_schemas::Secret;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tokio::task::JoinSet;

const KIOSKS: usize = 10_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints `what: <elapsed> (<elapsed / count> each)`; `count` 0 counts
/// as 1. `elapsed` comes first so that it is read before `what` is
/// formatted.
fn print_each(elapsed: Duration, count: usize, what: &str) {
    println!(
        "{what}: {elapsed:?} ({:?} each)",
        elapsed / count.max(1) as u32
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argon2_checks = env_usize("KIOSK_BENCH_ARGON2", 10);
    let clients = env_usize("KIOSK_BENCH_CLIENTS", 1_000).min(KIOSKS);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("credentials");

    // One file with 10,000 kiosks and one technician, written in one go.
    let started = Instant::now();
    let kiosks: Vec<(String, Secret)> = (0..KIOSKS)
        .map(|i| (format!("kiosk-{i:05}"), generate_secret()))
        .collect();
    let mut text = String::new();
    for (id, secret) in &kiosks {
        text.push_str(&format!("{id}:kiosk:{}\n", hash_generated_secret(secret)));
    }
    let technician = Secret::new("a password a person chose");
    text.push_str(&format!(
        "technician:technician:{}\n",
        hash_chosen_password(&technician)?
    ));
    std::fs::write(&path, text)?;
    println!("generate + hash {KIOSKS} secrets: {:?}", started.elapsed());

    let started = Instant::now();
    let store = CredentialStore::open(&path)?;
    println!("load {} users: {:?}", store.len(), started.elapsed());

    let started = Instant::now();
    for (id, secret) in &kiosks {
        let outcome = store.verify(id, id, secret).await;
        anyhow::ensure!(outcome == AuthOutcome::Accepted { role: Role::Kiosk });
    }
    print_each(
        started.elapsed(),
        KIOSKS,
        &format!("verify {KIOSKS} $sha256$ kiosk logins (incl. stat)"),
    );

    let started = Instant::now();
    for _ in 0..KIOSKS {
        std::fs::metadata(&path)?;
    }
    print_each(started.elapsed(), KIOSKS, "  of which stat of the file");

    let started = Instant::now();
    for _ in 0..argon2_checks {
        let outcome = store.verify("x", "technician", &technician).await;
        anyhow::ensure!(
            outcome
                == AuthOutcome::Accepted {
                    role: Role::Technician
                }
        );
    }
    print_each(
        started.elapsed(),
        argon2_checks,
        &format!("verify {argon2_checks} argon2id logins one after another"),
    );

    // The storm.
    let mut config = BrokerConfig::new(&path);
    config.listen = Some("127.0.0.1:0".parse()?);
    let broker = EmbeddedBroker::start(config).await?;
    let addr = broker.local_addr();

    let serial = clients.min(100);
    let started = Instant::now();
    for (id, secret) in &kiosks[..serial] {
        let (client, eventloop) = connect(addr, id.clone(), secret.clone()).await?;
        client.disconnect().await?;
        drop(eventloop);
    }
    print_each(
        started.elapsed(),
        serial,
        &format!("connect {serial} clients one after another"),
    );

    let started = Instant::now();
    let mut connecting = JoinSet::new();
    for (id, secret) in &kiosks[..clients] {
        let (id, secret) = (id.clone(), secret.clone());
        connecting.spawn(async move {
            let mut options = MqttOptions::new(&id, addr.ip().to_string(), addr.port());
            options.set_credentials(&id, secret.expose());
            options.set_keep_alive(Duration::from_secs(60));
            let (client, mut eventloop) = AsyncClient::new(options, 10);
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    Ok((client, eventloop, started.elapsed()))
                }
                Ok(other) => Err(format!("{id}: expected CONNACK, got {other:?}")),
                Err(e) => Err(format!("{id}: {e}")),
            }
        });
    }
    let mut connected = Vec::with_capacity(clients);
    let mut latencies = Vec::with_capacity(clients);
    let mut failed = 0;
    while let Some(result) = connecting.join_next().await {
        match result? {
            Ok((client, eventloop, latency)) => {
                connected.push((client, eventloop));
                latencies.push(latency);
            }
            Err(e) => {
                failed += 1;
                if failed <= 5 {
                    eprintln!("connect failed: {e}");
                }
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "connect storm: {} of {clients} clients connected concurrently in {elapsed:?} ({failed} failed)",
        connected.len()
    );
    latencies.sort();
    if let (Some(first), Some(last)) = (latencies.first(), latencies.last()) {
        let median = latencies[latencies.len() / 2];
        let p90 = latencies[latencies.len() * 9 / 10];
        println!("  CONNACK after: first {first:?}, median {median:?}, p90 {p90:?}, last {last:?}");
    }
    drop(connected);
    broker.shutdown().await;
    Ok(())
}

async fn connect(
    addr: std::net::SocketAddr,
    id: String,
    secret: Secret,
) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop)> {
    let mut options = MqttOptions::new(&id, addr.ip().to_string(), addr.port());
    options.set_credentials(&id, secret.expose());
    options.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    match eventloop.poll().await? {
        Event::Incoming(Packet::ConnAck(_)) => Ok((client, eventloop)),
        other => anyhow::bail!("{id}: expected CONNACK, got {other:?}"),
    }
}
