//! Receipts with a logo: render time and bytes per image command, and the
//! agent's memory while it prints them. Prints figures; asserts nothing.
//!
//! ```text
//! cargo bench -p kiosk-e2e --bench logo
//! BENCH_RENDERS=500 BENCH_JOBS=100 cargo bench -p kiosk-e2e --bench logo
//! ```
//!
//! 1. A 576 × 240 dot logo (a gray gradient with shapes, so dithering has
//!    work) converted once at config load, then a receipt with `"logo":
//!    true` rendered `BENCH_RENDERS` times (200) in each `image_mode`:
//!    p50/p99 render time and the bytes of one copy.
//! 2. The real agent as its own process (`agent-process`, release build)
//!    with that logo, connected to an in-process gateway and a fake
//!    port-9100 printer: its RSS idle, then `BENCH_JOBS` (50) such
//!    receipts posted and printed, then its RSS and peak RSS (`VmHWM`);
//!    then 10 receipts with an Arabic line (drawn with the fonts, which
//!    the first such line loads) and the RSS again.

use std::time::{Duration, Instant};

use image::{GrayImage, Luma};
use kiosk_agent::config::{AgentConfig, Checked};
use kiosk_agent::render::{ImageMode, render};
use kiosk_e2e::TestFleet;
use kiosk_e2e::bench::{env_usize, status_kib};
use kiosk_schemas::Document;
use kiosk_testkit::FakePrinter;
use serde_json::{Value, json};

/// A logo the size restaurants send: full width, 240 rows, gray levels.
fn logo_png(path: &std::path::Path) {
    let img = GrayImage::from_fn(576, 240, |x, y| {
        let (dx, dy) = (x as i64 - 288, y as i64 - 120);
        let ring = (dx * dx + dy * dy) as f64;
        let l = if (90.0f64.powi(2)..110.0f64.powi(2)).contains(&ring) {
            0
        } else {
            ((x * 255) / 576) as u8 / 2 + ((y * 255) / 240) as u8 / 2
        };
        Luma([l])
    });
    img.save(path).expect("write logo");
}

fn receipt() -> Value {
    json!({"kind": "receipt", "logo": true,
        "header": ["Burger Corner", "12 Market Street"],
        "items": [{"quantity": 2, "name": "Cheeseburger", "amount": 1700},
                  {"quantity": 1, "name": "Fries", "amount": 450}],
        "total": 2150, "currency": "EUR", "footer": ["Thank you!"]})
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn render_figures(fleet: &TestFleet, logo: &std::path::Path, printer: std::net::SocketAddr) {
    let renders = env_usize("BENCH_RENDERS", 200);
    let doc: Document = serde_json::from_value(receipt()).unwrap();
    for mode in ["raster", "bit_image", "graphics"] {
        let toml = format!(
            "{}logo = {:?}\nimage_mode = \"{mode}\"\n",
            fleet.agent_toml("k1", printer),
            logo.display().to_string()
        );
        let started = Instant::now();
        let config = AgentConfig::from_toml(&toml).expect("config");
        let load = started.elapsed();
        let opts = config.printers["receipt"].render_options();
        assert!(matches!(
            opts.image_mode,
            ImageMode::Raster | ImageMode::BitImage | ImageMode::Graphics
        ));
        let mut times = Vec::with_capacity(renders);
        let mut bytes = 0;
        for _ in 0..renders {
            let t = Instant::now();
            let out = render(&doc, &opts).expect("render");
            times.push(t.elapsed());
            bytes = out.bytes.len();
        }
        times.sort();
        println!(
            "{mode:>9}: config load with logo {:.1} ms; render p50 {:.0} µs, p99 {:.0} µs; {bytes} bytes a copy",
            load.as_secs_f64() * 1000.0,
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
        );
    }
}

#[tokio::main]
async fn main() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("logo.png");
    logo_png(&logo);
    render_figures(&fleet, &logo, printer.addr());

    let jobs = env_usize("BENCH_JOBS", 50);
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "{}logo = {:?}\n",
            fleet.agent_toml("k1", printer.addr()),
            logo.display().to_string()
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-process"))
        .arg("--config")
        .arg(&config)
        .kill_on_drop(true)
        .spawn()
        .expect("agent-process");
    let pid = child.id().unwrap();
    fleet.wait_kiosk("k1", "online").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = status_kib(pid, "VmRSS:");
    let started = Instant::now();
    let mut ids = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let body = json!({"printer": "receipt", "document": receipt()});
        ids.push(fleet.create_job("k1", body).await);
    }
    for id in &ids {
        fleet.wait_job(id, "printed").await;
    }
    let elapsed = started.elapsed();
    println!(
        "agent: RSS idle {:.1} MiB; after {jobs} logo receipts in {:.1} s: RSS {:.1} MiB, peak {:.1} MiB",
        idle as f64 / 1024.0,
        elapsed.as_secs_f64(),
        status_kib(pid, "VmRSS:") as f64 / 1024.0,
        status_kib(pid, "VmHWM:") as f64 / 1024.0,
    );
    // The first line no code page has loads the fonts (Debian's Noto when
    // installed): what that costs.
    let mut ids = Vec::new();
    for _ in 0..10 {
        let mut doc = receipt();
        doc["items"][0]["name"] = json!("\u{634}\u{627}\u{648}\u{631}\u{645}\u{627}");
        ids.push(
            fleet
                .create_job("k1", json!({"printer": "receipt", "document": doc}))
                .await,
        );
    }
    for id in &ids {
        fleet.wait_job(id, "printed").await;
    }
    println!(
        "agent: after 10 receipts with an Arabic line (fonts loaded): RSS {:.1} MiB, peak {:.1} MiB",
        status_kib(pid, "VmRSS:") as f64 / 1024.0,
        status_kib(pid, "VmHWM:") as f64 / 1024.0,
    );
    drop(child);
}
