//! Print path benchmark: gateway + embedded broker + agents in one process
//! on loopback, fake port-9100 printers. Prints figures; asserts nothing.
//!
//! ```text
//! cargo bench -p kiosk-e2e --bench print_path
//! BENCH_SEQUENTIAL=1000 BENCH_THROUGHPUT=2000 cargo bench -p kiosk-e2e --bench print_path
//! ```
//!
//! 1. Latency of sequential jobs (one at a time): HTTP `202` received,
//!    bytes at the printer, state `printed` readable over HTTP.
//! 2. Jobs accepted per second with 1, 32 and 128 concurrent HTTP clients
//!    (`BENCH_ACCEPT` jobs each run, 0 skips; `BENCH_CLIENTS=32` and
//!    `BENCH_KIOSK=offline` pick runs).
//! 3. Throughput with 1 and 50 kiosks: jobs posted by 32 concurrent HTTP
//!    clients, until every job is `printed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiosk_e2e::bench::env_usize;
use kiosk_e2e::{TestFleet, text_job};
use kiosk_testkit::FakePrinter;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn sequential(n: usize) {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.expect("printer");
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    // Warm up connections and caches.
    let warm = fleet.create_job("k1", text_job("warm-up\n")).await;
    fleet.wait_job(&warm, "printed").await;

    let (mut accepted, mut at_printer, mut printed) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let before = printer.jobs().len();
        let t0 = Instant::now();
        let id = fleet
            .create_job("k1", text_job(&format!("SEQ-{i}\n")))
            .await;
        accepted.push(t0.elapsed());
        printer
            .wait_for_jobs(before + 1, Duration::from_secs(30))
            .await
            .expect("bytes at printer");
        at_printer.push(t0.elapsed());
        loop {
            let (_, job) = fleet.get(&format!("/v1/print-jobs/{id}")).await;
            if job["state"] == "printed" {
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        printed.push(t0.elapsed());
    }
    for v in [&mut accepted, &mut at_printer, &mut printed] {
        v.sort();
    }
    println!("sequential jobs: {n} (1 kiosk, text job, every step flushed to disk)");
    for (label, v) in [
        ("HTTP 202 received", &accepted),
        ("bytes at printer", &at_printer),
        ("printed, over HTTP", &printed),
    ] {
        println!(
            "  {label:<20} p50 {:>9}  p99 {:>9}  max {:>9}",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(*v.last().expect("samples"))
        );
    }
    agent.shutdown().await;
}

async fn throughput(kiosks: usize, jobs: usize) {
    let names: Vec<String> = (0..kiosks).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fleet = Arc::new(TestFleet::start(&refs).await);
    let mut printers = Vec::new();
    let mut agents = Vec::new();
    for name in &names {
        let printer = FakePrinter::start().await.expect("printer");
        agents.push(fleet.start_agent(name, printer.addr()).await);
        printers.push(printer);
    }
    for name in &names {
        fleet.wait_kiosk(name, "online").await;
    }
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let fleet = fleet.clone();
        let next = next.clone();
        let names = names.clone();
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= jobs {
                    break;
                }
                let kiosk = &names[i % names.len()];
                fleet
                    .create_job(kiosk, text_job(&format!("TP-{i}\n")))
                    .await;
            }
        }));
    }
    for c in clients {
        c.await.expect("client");
    }
    let posted = t0.elapsed();
    let mut last_report = Instant::now();
    loop {
        let done: usize = printers.iter().map(|p| p.jobs().len()).sum();
        if done >= jobs {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  ... {done}/{jobs} at printers after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let at_printers = t0.elapsed();
    loop {
        let (_, list) = fleet.get("/v1/kiosks").await;
        let pending: u64 = list["kiosks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| k["pending_jobs"].as_u64().unwrap_or(0))
            .sum();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_printed = t0.elapsed();
    println!(
        "throughput, {kiosks} kiosk(s), {jobs} jobs, 32 HTTP clients: all accepted in {:.2} s ({:.0} jobs/s), \
         at printers in {:.2} s, all printed (over HTTP) in {:.2} s: {:.0} jobs/s",
        posted.as_secs_f64(),
        jobs as f64 / posted.as_secs_f64(),
        at_printers.as_secs_f64(),
        all_printed.as_secs_f64(),
        jobs as f64 / all_printed.as_secs_f64()
    );
    for a in agents {
        a.shutdown().await;
    }
}

/// Jobs accepted per second (every `202` sent after its job was flushed)
/// with `clients` concurrent HTTP clients posting `jobs` jobs to one kiosk,
/// `online` and printing them meanwhile (its agent in this process) or
/// offline (the jobs wait in the gateway: its acceptance alone).
async fn accept_rate(clients: usize, jobs: usize, online: bool) {
    let fleet = Arc::new(TestFleet::start(&["k1"]).await);
    let printer = FakePrinter::start().await.expect("printer");
    let agent = if online {
        let agent = fleet.start_agent("k1", printer.addr()).await;
        fleet.wait_kiosk("k1", "online").await;
        Some(agent)
    } else {
        None
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let fleet = fleet.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < jobs {
                fleet.create_job("k1", text_job("ACCEPT\n")).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let elapsed = t0.elapsed();
    let kiosk = if online { "online" } else { "offline" };
    let metrics = reqwest::get(format!("{}/metrics", fleet.http_base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let (commits, flushes) = (
        counter("kiosk_store_commits_total"),
        counter("kiosk_store_flushes_total"),
    );
    println!(
        "  {clients:>3} HTTP clients, kiosk {kiosk:<7}: {jobs} jobs accepted in {:.2} s = {:.0} jobs/s \
         ({flushes:.0} flushes, {:.1} commits each)",
        elapsed.as_secs_f64(),
        jobs as f64 / elapsed.as_secs_f64(),
        commits / flushes.max(1.0),
    );
    if let Some(agent) = agent {
        agent.shutdown().await;
    }
}

/// A comma-separated list of numbers from the environment, or `default`.
fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; filters are not supported.
    let seq = env_usize("BENCH_SEQUENTIAL", 1000);
    let jobs = env_usize("BENCH_THROUGHPUT", 2000);
    println!(
        "kiosk-fleet print path benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if seq > 0 {
        sequential(seq).await;
    }
    let accept = env_usize("BENCH_ACCEPT", 4000);
    if accept > 0 {
        println!("jobs accepted (POST -> 202, each flushed first), one kiosk:");
        let clients = env_list("BENCH_CLIENTS", &[1, 32, 128]);
        let kiosk = std::env::var("BENCH_KIOSK").unwrap_or_default();
        for online in [false, true] {
            if !kiosk.is_empty() && kiosk != if online { "online" } else { "offline" } {
                continue;
            }
            for &clients in &clients {
                accept_rate(clients, accept, online).await;
            }
        }
    }
    if jobs > 0 {
        throughput(1, jobs).await;
        throughput(50, jobs).await;
    }
}
