//! Durable writes per second through [`GroupCommit`] on sled, without HTTP:
//! what the store alone can do on this machine.
//!
//! ```sh
//! cargo bench -p kiosk-store --bench commit
//! BENCH_WRITES=20000 BENCH_WRITERS=1,32,128 cargo bench -p kiosk-store --bench commit
//! ```
//!
//! Each writer inserts a 1 KiB record and an index entry (like a print job
//! and its `pending` entry), then waits for [`GroupCommit::commit`]; the
//! figures are commits per second and writes per flush.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use kiosk_store::GroupCommit;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

async fn run(writers: usize, writes: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::open(dir.path()).expect("sled");
    let jobs = db.open_tree("jobs").expect("tree");
    let pending = db.open_tree("pending").expect("tree");
    let commit = GroupCommit::new(db.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (jobs, pending, commit, next) =
            (jobs.clone(), pending.clone(), commit.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let value = vec![7u8; 1024];
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= writes {
                    break;
                }
                let key = (n as u64).to_be_bytes();
                jobs.insert(key, value.as_slice()).expect("insert");
                pending.insert(key, &[]).expect("insert");
                commit.commit().await.expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "  {writers:>3} writers: {writes} durable writes in {elapsed:.2} s = {:.0}/s, {} flushes ({:.1} writes each, {:.2} ms each)",
        writes as f64 / elapsed,
        commit.flushes(),
        writes as f64 / commit.flushes().max(1) as f64,
        elapsed * 1e3 / commit.flushes().max(1) as f64,
    );
}

#[tokio::main]
async fn main() {
    let writes = env_list("BENCH_WRITES", &[10000])[0];
    println!(
        "kiosk-store group commit benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for writers in env_list("BENCH_WRITERS", &[1, 32, 128]) {
        run(writers, writes).await;
    }
}
