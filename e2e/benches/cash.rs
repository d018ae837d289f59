//! Cash path benchmark: gateway + embedded broker + an agent whose acceptor
//! is a pseudo-terminal. Prints figures; asserts nothing.
//!
//! ```text
//! cargo bench -p kiosk-e2e --bench cash
//! BENCH_CREDITS=1000 BENCH_DRAIN=10000 cargo bench -p kiosk-e2e --bench cash
//! ```
//!
//! 1. Latency from a line written on the serial port to the SSE `credit`
//!    event, one credit at a time.
//! 2. How fast an agent drains credits buffered while its link was down.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kiosk_e2e::TestFleet;
use kiosk_e2e::bench::env_usize;
use kiosk_testkit::{CutProxy, FakeAcceptor, FakePrinter};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[(((sorted.len() as f64) - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Reads the next SSE event name from a streaming response.
async fn next_event(resp: &mut reqwest::Response, buf: &mut String) -> String {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if let Some(name) = block.lines().find_map(|l| l.strip_prefix("event:")) {
                return name.trim().to_owned();
            }
            continue;
        }
        let chunk = resp.chunk().await.expect("SSE").expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// `kiosk_cash_credits_total{outcome="unassigned"}` from `/metrics`.
async fn unassigned_credits(fleet: &TestFleet) -> usize {
    let text = reqwest::get(format!("{}/metrics", fleet.http_base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("kiosk_cash_credits_total{outcome=\"unassigned\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn latency(n: usize) {
    let fleet = TestFleet::start(&["k1"]).await;
    let dir = tempfile::tempdir().expect("dir");
    let acceptor = FakeAcceptor::start(dir.path()).expect("pty");
    let printer = FakePrinter::start().await.expect("printer");
    let agent = fleet
        .start_agent_with(fleet.cash_agent_config("k1", printer.addr(), acceptor.path(), None))
        .await;
    fleet.wait_cash_connected("k1", true).await;
    let session = fleet.open_session("k1", 10_000_000).await;
    assert!(acceptor.wait_last_command("ENABLE", kiosk_e2e::WAIT).await);
    let id = session["session_id"].as_str().expect("id");
    let token = session["view_token"].as_str().expect("token");
    let mut resp = fleet
        .request(
            reqwest::Method::GET,
            &format!("/v1/cash-sessions/{id}/events?token={token}"),
        )
        .send()
        .await
        .expect("SSE");
    let mut buf = String::new();
    assert_eq!(next_event(&mut resp, &mut buf).await, "session");
    let mut samples = Vec::with_capacity(n);
    let mut writes = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        acceptor.send("COIN:1").await.expect("write");
        // The clock starts once the line is on the serial line: the pty
        // write itself can stall while the disk is busy (see below).
        let t1 = Instant::now();
        writes.push(t1 - t0);
        while next_event(&mut resp, &mut buf).await != "credit" {}
        samples.push(t1.elapsed());
    }
    samples.sort();
    writes.sort();
    println!(
        "serial line written -> SSE `credit`, {n} credits one at a time: p50 {}  p99 {}  max {}",
        ms(pct(&samples, 0.5)),
        ms(pct(&samples, 0.99)),
        ms(*samples.last().expect("samples"))
    );
    // Not part of the path: the test's write(2) on the pty master. On this
    // kind of VM it stalls while other threads fsync; a real UART does not.
    println!(
        "  (the pty write(2) itself, in the harness: p50 {}  p99 {}  max {})",
        ms(pct(&writes, 0.5)),
        ms(pct(&writes, 0.99)),
        ms(*writes.last().expect("writes"))
    );
    agent.shutdown().await;
}

async fn drain(n: usize) {
    let fleet = TestFleet::start(&["k1"]).await;
    let dir = tempfile::tempdir().expect("dir");
    let acceptor = FakeAcceptor::start(dir.path()).expect("pty");
    let printer = FakePrinter::start().await.expect("printer");
    let proxy = CutProxy::start(fleet.mqtt_addr).await.expect("proxy");
    let mut config =
        fleet.cash_agent_config("k1", printer.addr(), acceptor.path(), Some(proxy.addr()));
    if let Some(cash) = config.cash.as_mut() {
        cash.resend_interval = Duration::from_secs(5);
    }
    let agent = fleet.start_agent_with(config).await;
    fleet.wait_cash_connected("k1", true).await;
    proxy.cut();
    fleet.wait_kiosk("k1", "offline").await;
    let stats = agent.cash_stats().expect("cash");
    let t0 = Instant::now();
    for _ in 0..n {
        acceptor.send("COIN:1").await.expect("write");
    }
    while stats.credits.load(Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = t0.elapsed();
    let t1 = Instant::now();
    proxy.restore();
    fleet.wait_kiosk("k1", "online").await;
    let reconnected = t1.elapsed();
    // Every credit stored by the gateway (as unassigned: no session was
    // open), then acknowledged: the kiosk reports nothing left to send. (A
    // status queued while offline can say 0 before the drain starts.)
    while unassigned_credits(&fleet).await < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let (_, k) = fleet.get("/v1/kiosks/k1").await;
        if k["cash"]["unacked"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_acked = t1.elapsed();
    let (_, list) = fleet.get("/v1/kiosks/k1/unassigned-credits").await;
    let stored = list["credits"].as_array().map_or(0, Vec::len);
    println!(
        "offline buffer: {n} credits recorded (each flushed) in {:.2} s ({:.0}/s)",
        recorded.as_secs_f64(),
        n as f64 / recorded.as_secs_f64(),
    );
    // The kiosk publishes its credits right after CONNACK, before its
    // `online` status reaches the gateway, so the drain overlaps the
    // reconnect; the rate is over the whole time from link back to the
    // kiosk reporting nothing left to send (its status is debounced).
    println!(
        "  link back -> kiosk online {:.2} s (agent backoff), -> all acknowledged {:.2} s: \
         {:.0} credits/s; gateway holds {stored}",
        reconnected.as_secs_f64(),
        all_acked.as_secs_f64(),
        n as f64 / all_acked.as_secs_f64()
    );
    agent.shutdown().await;
}

#[tokio::main]
async fn main() {
    let credits = env_usize("BENCH_CREDITS", 1000);
    let buffered = env_usize("BENCH_DRAIN", 10_000);
    println!(
        "kiosk-fleet cash path benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if credits > 0 {
        latency(credits).await;
    }
    if buffered > 0 {
        drain(buffered).await;
    }
}
