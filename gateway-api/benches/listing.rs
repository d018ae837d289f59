//! Pages of jobs through the store's indexes ([`Store::list_jobs`]) with
//! many jobs stored: a page should cost about its size, not the store's.
//!
//! ```sh
//! cargo bench -p kiosk-gateway --bench listing
//! BENCH_JOBS=100000 BENCH_LIMIT=50 cargo bench -p kiosk-gateway --bench listing
//! ```
//!
//! Stores `BENCH_JOBS` jobs over 4 kiosks and 2 printers (1 % `failed`,
//! 2 % `queued`, the rest `printed`; `create_job`, no flush), then times
//! pages of `BENCH_LIMIT`: the first page, every page to the end through
//! the cursor, every page of `state=failed`, of `state=queued&state=failed`
//! (two ranges merged) and of one kiosk, and pages of `kiosk_id` +
//! `printer=label` (a filter on top of the kiosk's index, 1 in 5 of its
//! jobs). Prints p50 and p99 per kind.

use std::time::{Duration, Instant};

use chrono::Utc;
use kiosk_gateway::store::{Cursor, JobFilter, JobRecord, Origin, Store, Transition};
use kiosk_schemas::{JobId, JobState, KioskId};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

const PAYLOAD: &[u8] =
    br#"{"v":1,"job_id":"x","printer":"receipt","document":{"kind":"text","text":"Hello\n"}}"#;

fn record(n: usize) -> JobRecord {
    let at = Utc::now() - chrono::Duration::days(30) + chrono::Duration::milliseconds(n as i64);
    let state = match n % 100 {
        0 => JobState::Failed,
        1 | 2 => JobState::Queued,
        _ => JobState::Printed,
    };
    JobRecord {
        job_id: JobId::new(format!("job-{n:08}")).expect("job id"),
        kiosk_id: KioskId::new(format!("kiosk-{}", n % 4)).expect("kiosk id"),
        printer: if n % 10 == 1 { "label" } else { "receipt" }.to_owned(),
        copies: 1,
        created_at: at,
        expires_at: None,
        state,
        reason: None,
        history: vec![Transition {
            state,
            at,
            reason: None,
        }],
        origin: Origin::Http {
            api_key: "bench".to_owned(),
        },
        reprint_of: None,
        accepted_at: at,
        gateway_expired: false,
        bytes: None,
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Times `pages` pages of `filter`, following the cursor (back to the
/// first page after the last) if `follow`, and prints p50/p99.
fn run(store: &Store, name: &str, filter: &JobFilter, limit: usize, pages: usize, follow: bool) {
    let mut times = Vec::with_capacity(pages);
    let (mut cursor, mut shown, mut walks) = (None::<Cursor>, 0usize, 0usize);
    for _ in 0..pages {
        let t0 = Instant::now();
        let page = store
            .list_jobs(filter, cursor.as_ref(), limit)
            .expect("list");
        times.push(t0.elapsed());
        shown += page.jobs.len();
        cursor = page.next.filter(|_| follow);
        if follow && cursor.is_none() {
            walks += 1;
        }
    }
    times.sort();
    println!(
        "  {name:<44} {pages:>5} pages ({:>5.1} jobs each, {walks} walks to the end): p50 {:>7.1} µs  p99 {:>7.1} µs",
        shown as f64 / pages as f64,
        quantile(&times, 0.5).as_secs_f64() * 1e6,
        quantile(&times, 0.99).as_secs_f64() * 1e6,
    );
}

fn main() {
    let jobs = env_usize("BENCH_JOBS", 100_000);
    let limit = env_usize("BENCH_LIMIT", 50);
    println!(
        "kiosk-gateway listing benchmark ({} cores): {jobs} jobs, pages of {limit}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let t0 = Instant::now();
    for n in 0..jobs {
        store.create_job(record(n), PAYLOAD, None).expect("create");
    }
    println!(
        "  stored {jobs} jobs in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let all_pages = jobs.div_ceil(limit);
    let kiosk = Some(KioskId::new("kiosk-1").expect("kiosk id"));
    let first = JobFilter::default();
    run(&store, "first page", &first, limit, 2000, false);
    run(
        &store,
        "every page (deep, by cursor)",
        &first,
        limit,
        all_pages,
        true,
    );
    let failed = JobFilter {
        states: vec![JobState::Failed],
        ..JobFilter::default()
    };
    run(
        &store,
        "state=failed (1 %), every page",
        &failed,
        limit,
        2000,
        true,
    );
    let merged = JobFilter {
        states: vec![JobState::Queued, JobState::Failed],
        ..JobFilter::default()
    };
    run(
        &store,
        "state=queued&state=failed, every page",
        &merged,
        limit,
        2000,
        true,
    );
    let one = JobFilter {
        kiosk: kiosk.clone(),
        ..JobFilter::default()
    };
    run(
        &store,
        "kiosk_id (1 of 4), every page",
        &one,
        limit,
        all_pages / 4,
        true,
    );
    let label = JobFilter {
        kiosk,
        printer: Some("label".to_owned()),
        ..JobFilter::default()
    };
    run(
        &store,
        "kiosk_id + printer=label (on top), every page",
        &label,
        limit,
        500,
        true,
    );
}
