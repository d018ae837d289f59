//! `fake-printer`: a fake raw-TCP ESC/POS printer for running the example
//! configs on one machine. Prints a line per job and can append the jobs'
//! bytes to a file.
//!
//! ```text
//! fake-printer --listen 127.0.0.1:9100 --out /tmp/printer.bin [--paper out|near-end|ok] [--cover-open] [--offline]
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kiosk_testkit::{FakePaper, FakePrinter, FakeStatus};

/// A fake port-9100 ESC/POS printer: records jobs, answers DLE EOT status.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Append every job's bytes to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Paper sensor state to report: ok, near-end or out.
    #[arg(long, default_value = "ok")]
    paper: FakePaper,
    /// Report the cover open.
    #[arg(long)]
    cover_open: bool,
    /// Report the printer offline.
    #[arg(long)]
    offline: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let printer = FakePrinter::start_on(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let status = FakeStatus {
        online: !args.offline,
        cover_open: args.cover_open,
        paper: args.paper,
    };
    printer.set_status(status);
    println!("fake printer listening on {} ({status:?})", printer.addr());

    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            jobs = printer.wait_for_jobs(seen + 1, Duration::from_secs(3600)) => {
                // A quiet hour: keep waiting.
                let Ok(jobs) = jobs else { continue };
                for job in jobs.iter().skip(seen) {
                    seen += 1;
                    println!("job {seen}: {} bytes", job.len());
                    if let Some(out) = &args.out {
                        append(out, job).with_context(|| format!("cannot append to {}", out.display()))?;
                    }
                }
            }
        }
    }
    println!("fake printer stopped after {seen} jobs");
    Ok(())
}

fn append(path: &PathBuf, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(bytes)
}
