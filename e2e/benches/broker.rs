//! Broker benchmark: what the topic ACL and the front door cost, and how a
//! whole fleet reconnecting at once is let in. Prints figures; asserts
//! nothing.
//!
//! ```text
//! cargo bench -p kiosk-e2e --bench broker
//! BENCH_MESSAGES=20000 BENCH_LATENCY=2000 BENCH_STORM=10000 cargo bench -p kiosk-e2e --bench broker
//! ```
//!
//! 1. QoS 1 publish throughput and latency (kiosk → backend through the
//!    embedded broker on loopback), with the default ACL, with an
//!    allow-all ACL (`pattern readwrite #`: the ACL "off"), and straight to
//!    rumqttd's loopback listener without the front door.
//! 2. Reconnect storm: `BENCH_STORM` kiosks, each with its own credentials,
//!    connecting at once to a broker in a child process (this benchmark
//!    re-executed, so its RSS is the broker's alone): seconds until all have
//!    their CONNACK, the broker's RSS before and after, with the default
//!    `connections_per_second` (1000), with the rate limit out of the way,
//!    and straight to one rumqttd listener (with the broker's internal
//!    password). Capped to what the open-files limit allows (3 descriptors
//!    per connection in the broker). The difference between the front-door
//!    and the straight runs is the front door's own memory per idle
//!    connection, printed apart from rumqttd's.

use std::io::{BufRead, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kiosk_broker::{BrokerConfig, EmbeddedBroker, Role, generate_secret, hash_generated_secret};
use kiosk_e2e::bench::{env_usize, rss_kib};
use kiosk_schemas::Secret;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS};
use tokio::task::JoinSet;

/// Set in the child process: the broker config file to run.
const CHILD_ENV: &str = "KIOSK_BENCH_BROKER_CONFIG";

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len().saturating_sub(1))]
}

fn options(addr: SocketAddr, id: &str, user: &str, secret: &Secret) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_credentials(user, secret.expose())
        .set_keep_alive(Duration::from_secs(120))
        .set_inflight(100);
    o
}

async fn connect(o: MqttOptions, timeout: Duration) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let (client, mut eventloop) = AsyncClient::new(o, 1000);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(timeout.as_secs().max(1));
    eventloop.set_network_options(network);
    loop {
        match eventloop.poll().await? {
            Event::Incoming(Packet::ConnAck(_)) => return Ok((client, eventloop)),
            _ => continue,
        }
    }
}

/// Writes a credentials file with `kiosks` kiosks `kiosk-00000`.. and a
/// backend; returns their secrets.
fn credentials(path: &Path, kiosks: usize) -> anyhow::Result<(Vec<(String, Secret)>, Secret)> {
    let ids: Vec<(String, Secret)> = (0..kiosks)
        .map(|i| (format!("kiosk-{i:05}"), generate_secret()))
        .collect();
    let mut text = String::new();
    for (id, secret) in &ids {
        text.push_str(&format!("{id}:kiosk:{}\n", hash_generated_secret(secret)));
    }
    let backend = generate_secret();
    text.push_str(&format!(
        "backend:{}:{}\n",
        Role::Backend,
        hash_generated_secret(&backend)
    ));
    std::fs::write(path, text)?;
    Ok((ids, backend))
}

/// Throughput and latency of kiosk → backend QoS 1 publishes through `addr`.
async fn publish_path(
    label: &str,
    addr: SocketAddr,
    kiosk: &(String, Secret),
    backend: &Secret,
    messages: usize,
    latency_samples: usize,
) -> anyhow::Result<()> {
    let (id, secret) = kiosk;
    let topic = format!("kiosk/{id}/print/result");
    let (sub, mut sub_loop) = connect(
        options(addr, "backend-bench", "backend", backend),
        Duration::from_secs(5),
    )
    .await?;
    sub.subscribe("kiosk/+/print/result", QoS::AtLeastOnce)
        .await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await? {
            break;
        }
    }
    let (publisher, mut pub_loop) =
        connect(options(addr, id, id, secret), Duration::from_secs(5)).await?;
    let pub_task = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let sub_task = tokio::spawn(async move {
        while let Ok(event) = sub_loop.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = event {
                let _ = tx.send(Instant::now());
            }
        }
    });

    // Latency: one message at a time.
    let mut latencies = Vec::with_capacity(latency_samples);
    for _ in 0..latency_samples {
        let t0 = Instant::now();
        publisher
            .publish(&topic, QoS::AtLeastOnce, false, vec![b'x'; 200])
            .await?;
        let at = rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("subscriber gone"))?;
        latencies.push(at - t0);
    }
    latencies.sort();

    // Throughput: as fast as the publisher's window (100 in flight) allows.
    let t0 = Instant::now();
    let p = publisher.clone();
    let t = topic.clone();
    let producer = tokio::spawn(async move {
        for _ in 0..messages {
            if p.publish(&t, QoS::AtLeastOnce, false, vec![b'x'; 200])
                .await
                .is_err()
            {
                break;
            }
        }
    });
    for _ in 0..messages {
        rx.recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("subscriber gone"))?;
    }
    let elapsed = t0.elapsed();
    producer.await?;
    println!(
        "  {label:<38} {:>7.0} msg/s   latency p50 {:>9}  p99 {:>9}",
        messages as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
    );
    pub_task.abort();
    sub_task.abort();
    Ok(())
}

async fn acl_cost(messages: usize, latency_samples: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let creds = dir.path().join("credentials");
    let (kiosks, backend) = credentials(&creds, 3)?;
    let allow_all = dir.path().join("allow-all.acl");
    std::fs::write(&allow_all, "pattern readwrite #\n")?;
    println!(
        "QoS 1 kiosk -> backend, 200-byte payloads: {latency_samples} one at a time (latency), {messages} pipelined (throughput)"
    );
    for (label, acl, direct, kiosk) in [
        ("default ACL, front door", None, false, &kiosks[0]),
        (
            "ACL off (allow-all file), front door",
            Some(allow_all.clone()),
            false,
            &kiosks[1],
        ),
        ("default ACL, straight to rumqttd", None, true, &kiosks[2]),
    ] {
        let mut config = BrokerConfig::new(&creds);
        config.listen = Some("127.0.0.1:0".parse()?);
        config.acl = acl;
        let broker = EmbeddedBroker::start(config).await?;
        // rumqttd's own listener takes only the broker's internal password.
        let (addr, kiosk, backend) = if direct {
            let internal = broker.internal_password();
            (
                broker.internal_addr(),
                (kiosk.0.clone(), internal.clone()),
                internal,
            )
        } else {
            (broker.local_addr(), kiosk.clone(), backend.clone())
        };
        publish_path(label, addr, &kiosk, &backend, messages, latency_samples).await?;
        broker.shutdown().await;
    }
    Ok(())
}

/// The child: runs the broker of `config`, prints its address, stops when
/// stdin closes.
async fn child(config: &Path) -> anyhow::Result<()> {
    let config = BrokerConfig::load(Some(config))?;
    let broker = EmbeddedBroker::start(config).await?;
    println!(
        "listening {} {} {}",
        broker.local_addr(),
        broker.internal_addr(),
        broker.internal_password().expose()
    );
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            line.clear();
        }
    })
    .await?;
    let stats = broker.metrics().snapshot();
    eprintln!("broker: {stats:?}");
    broker.shutdown().await;
    Ok(())
}

/// Kiosks that fit the open-files limit: three descriptors per connection
/// in the broker process (client, front door to rumqttd, rumqttd's end).
fn storm_size(requested: usize) -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(usize::MAX);
    let fits = limit.saturating_sub(600) / 3;
    if fits < requested {
        println!(
            "note: the open-files limit here is {limit} and cannot be raised; the broker needs 3 per \
             connection, so the storm runs {fits} kiosks instead of {requested}"
        );
    }
    requested.min(fits)
}

/// Runs one storm; returns the broker's RSS growth per connection, in KiB.
async fn storm(kiosks: usize, per_second: Option<u32>, direct: bool) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let creds = dir.path().join("credentials");
    let (ids, _) = credentials(&creds, kiosks)?;
    let config = dir.path().join("broker.toml");
    let rate = per_second.map_or(String::new(), |r| format!("connections_per_second = {r}\n"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ncredentials = \"{}\"\nmax_connections = {}\n{rate}",
            creds.display(),
            kiosks + 100
        ),
    )?;
    // Three sockets per client in the broker process (client, front door
    // to rumqttd, rumqttd's end): raise the file limit where allowed.
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 65536 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$0\"")
        .arg(&exe)
        .env(CHILD_ENV, &config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let (addr, internal_password): (SocketAddr, Secret) = loop {
        let line = lines
            .next_line()
            .await?
            .ok_or_else(|| anyhow::anyhow!("child exited"))?;
        if let Some(a) = line.strip_prefix("listening ") {
            let mut fields = a.split(' ');
            let (Some(front), Some(internal), Some(password)) =
                (fields.next(), fields.next(), fields.next())
            else {
                anyhow::bail!("bad line {a:?}");
            };
            let password = Secret::new(password.to_owned());
            break if direct {
                (internal.parse()?, password)
            } else {
                (front.parse()?, password)
            };
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid);

    let retries = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut connecting = JoinSet::new();
    for (id, secret) in ids {
        let secret = if direct {
            internal_password.clone()
        } else {
            secret
        };
        let retries = retries.clone();
        connecting.spawn(async move {
            // Like an agent: retry with jittered backoff until connected.
            let mut delay = Duration::from_millis(250);
            loop {
                match connect(options(addr, &id, &id, &secret), Duration::from_secs(10)).await {
                    Ok(session) => return (session, started.elapsed()),
                    Err(_) => {
                        retries.fetch_add(1, Ordering::Relaxed);
                        let jitter = rand_jitter(&id, delay);
                        tokio::time::sleep(jitter).await;
                        delay = (delay * 2).min(Duration::from_secs(4));
                    }
                }
            }
        });
    }
    let mut sessions = Vec::with_capacity(kiosks);
    let mut latencies = Vec::with_capacity(kiosks);
    while let Some(joined) = connecting.join_next().await {
        let (session, latency) = joined?;
        sessions.push(session);
        latencies.push(latency);
    }
    let all = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = rss_kib(pid);
    latencies.sort();
    let limit = if direct {
        "straight to one rumqttd listener (no front door)".to_owned()
    } else {
        per_second.map_or(
            "front door, connections_per_second = 1000 (default)".to_owned(),
            |r| format!("front door, connections_per_second = {r}"),
        )
    };
    let per_connection = (rss_after.saturating_sub(rss_before)) as f64 / kiosks.max(1) as f64;
    println!(
        "reconnect storm, {kiosks} kiosks with their own credentials, {limit}:\n  \
         all connected after {:.2} s (median {:.2} s, p90 {:.2} s), {} refused attempts retried\n  \
         broker RSS {:.1} MiB before, {:.1} MiB with all connected ({:.1} KiB per connection)",
        all.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64(),
        percentile(&latencies, 0.9).as_secs_f64(),
        retries.load(Ordering::Relaxed),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        per_connection,
    );
    drop(sessions);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(per_connection)
}

/// A deterministic jitter in [delay/2, delay) from the kiosk id (no RNG
/// dependency needed here).
fn rand_jitter(id: &str, delay: Duration) -> Duration {
    let h = id
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let half = delay / 2;
    half + Duration::from_micros(h % (half.as_micros().max(1) as u64))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        return child(Path::new(&config)).await;
    }
    let messages = env_usize("BENCH_MESSAGES", 20_000);
    let latency = env_usize("BENCH_LATENCY", 2_000);
    let kiosks = env_usize("BENCH_STORM", 10_000);
    println!(
        "kiosk-fleet broker benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    acl_cost(messages, latency).await?;
    if kiosks > 0 {
        let kiosks = storm_size(kiosks);
        storm(kiosks, None, false).await?;
        let front = storm(kiosks, Some(100_000), false).await?;
        let rumqttd = storm(kiosks, None, true).await?;
        println!(
            "memory per idle kiosk connection: {front:.1} KiB in all, of which rumqttd (router, \
             its socket and buffers) {rumqttd:.1} KiB and the front door (its task, the client's \
             socket, the socket to rumqttd) {:.1} KiB",
            (front - rumqttd).max(0.0)
        );
    }
    Ok(())
}
