//! The project's own chaos test (issue 9, test 7): several kiosks with
//! print jobs and cash flowing while agents are killed and restarted, the
//! gateway is restarted and kiosk links are cut, all chosen at random from
//! a seed. At the end every job is printed exactly once or reported with a
//! true state, and every credit is on the session it was taken for.
//!
//! Ignored by default (it runs for about two minutes); `scripts/test.sh`
//! runs it. `KIOSK_CHAOS_SEED` (default 9) picks the run,
//! `KIOSK_CHAOS_SECS` (default 60) how long faults are injected:
//!
//! ```sh
//! KIOSK_CHAOS_SEED=42 cargo test -p kiosk-e2e --test chaos -- --ignored --nocapture
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use kiosk_agent::{Agent, AgentConfig};
use kiosk_e2e::{TestFleet, count_with, text_job};
use kiosk_testkit::{CutProxy, FakeBoard, FakePrinter, Money};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::Value;
use tokio::time::Instant;

const KIOSKS: [&str; 3] = ["k1", "k2", "k3"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct ChaosKiosk {
    id: &'static str,
    board: FakeBoard,
    printer: FakePrinter,
    proxy: CutProxy,
    config: AgentConfig,
    agent: Option<Agent>,
    restart_at: Option<Instant>,
    restore_at: Option<Instant>,
    /// Sessions opened on this kiosk, oldest first.
    sessions: Vec<String>,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct Counts {
    jobs: usize,
    printed: usize,
    interrupted: usize,
    expired: usize,
    sessions: usize,
    paid: usize,
    cancelled: usize,
    credits: usize,
    refused: usize,
    agent_kills: usize,
    gateway_restarts: usize,
    link_cuts: usize,
}

/// A session's current body.
async fn session(fleet: &TestFleet, id: &str) -> Value {
    fleet.get(&format!("/v1/cash-sessions/{id}")).await.1
}

fn is_final(s: &Value) -> bool {
    s["state"] == "cancelled" || (s["state"] == "paid" && s["final"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos run of about two minutes; scripts/test.sh runs it"]
async fn chaos_every_job_and_credit_ends_true() {
    let seed = env_u64("KIOSK_CHAOS_SEED", 9);
    let secs = env_u64("KIOSK_CHAOS_SECS", 60);
    let mut rng = StdRng::seed_from_u64(seed);
    eprintln!("chaos: seed {seed}, {secs} s of faults");
    let mut fleet = TestFleet::start(&KIOSKS).await;
    let mut kiosks = Vec::new();
    for id in KIOSKS {
        let dir = tempfile::tempdir().unwrap();
        let board = FakeBoard::start(dir.path()).unwrap();
        let printer = FakePrinter::start().await.unwrap();
        let proxy = CutProxy::start(fleet.mqtt_addr).await.unwrap();
        let config = fleet.cash_agent_config(id, printer.addr(), board.path(), Some(proxy.addr()));
        let agent = fleet.start_agent_with(config.clone()).await;
        kiosks.push(ChaosKiosk {
            id,
            board,
            printer,
            proxy,
            config,
            agent: Some(agent),
            restart_at: None,
            restore_at: None,
            sessions: Vec::new(),
            _dir: dir,
        });
    }
    for k in &kiosks {
        fleet.wait_cash_connected(k.id, true).await;
    }

    // job id -> (kiosk index, marker)
    let mut jobs: BTreeMap<String, (usize, String)> = BTreeMap::new();
    // session id -> amounts inserted while it was the kiosk's latest
    let mut taken: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut counts = Counts::default();
    let mut next_amount: i64 = 1;
    let mut gateway_back_at: Option<Instant> = None;
    let end = Instant::now() + Duration::from_secs(secs);

    while Instant::now() < end {
        let now = Instant::now();
        if let Some(at) = gateway_back_at
            && now >= at
        {
            fleet.start_gateway().await;
            gateway_back_at = None;
        }
        let gateway_up = gateway_back_at.is_none();
        for k in &mut kiosks {
            if k.restart_at.is_some_and(|t| now >= t) {
                k.agent = Some(fleet.start_agent_with(k.config.clone()).await);
                k.restart_at = None;
            }
            if k.restore_at.is_some_and(|t| now >= t) {
                k.proxy.restore();
                k.restore_at = None;
            }
        }
        let i = rng.gen_range(0..kiosks.len());
        let roll = rng.gen_range(0..100);
        match roll {
            0..=24 if gateway_up => {
                let n = jobs.len();
                let marker = format!("chaos-job-{n:05}");
                let (status, body) = fleet
                    .post(
                        &format!("/v1/kiosks/{}/print-jobs", kiosks[i].id),
                        &text_job(&marker),
                    )
                    .await;
                if status == 202 {
                    jobs.insert(body["job_id"].as_str().unwrap().to_owned(), (i, marker));
                }
            }
            25..=54 => {
                let kind = if rng.gen_bool(0.5) {
                    Money::Coin
                } else {
                    Money::Bill
                };
                let amount = next_amount;
                if kiosks[i].board.insert(kind, amount).await {
                    next_amount += 1;
                    counts.credits += 1;
                    match kiosks[i].sessions.last() {
                        Some(s) => taken.entry(s.clone()).or_default().push(amount),
                        None => panic!("the board took money with no session ever opened"),
                    }
                } else {
                    counts.refused += 1;
                }
            }
            55..=62 if gateway_up => {
                let ready = match kiosks[i].sessions.last() {
                    None => true,
                    Some(s) => is_final(&session(&fleet, s).await),
                };
                if ready {
                    let due = rng.gen_range(20..200);
                    let body = serde_json::json!({"kiosk_id": kiosks[i].id, "order_id": "chaos",
                        "amount_due": due, "currency": "EUR"});
                    let (status, s) = fleet.post("/v1/cash-sessions", &body).await;
                    if status == 201 {
                        let id = s["session_id"].as_str().unwrap().to_owned();
                        kiosks[i].sessions.push(id.clone());
                        taken.insert(id, Vec::new());
                        counts.sessions += 1;
                    }
                }
            }
            63..=67 if gateway_up => {
                if let Some(s) = kiosks[i].sessions.last() {
                    let _ = fleet
                        .post(
                            &format!("/v1/cash-sessions/{s}/cancel"),
                            &serde_json::json!({}),
                        )
                        .await;
                }
            }
            68..=72 => {
                if let Some(agent) = kiosks[i].agent.take() {
                    agent.kill().await;
                    counts.agent_kills += 1;
                    kiosks[i].restart_at =
                        Some(Instant::now() + Duration::from_millis(rng.gen_range(200..3000)));
                }
            }
            73..=77 if kiosks[i].restore_at.is_none() => {
                kiosks[i].proxy.cut();
                counts.link_cuts += 1;
                kiosks[i].restore_at =
                    Some(Instant::now() + Duration::from_millis(rng.gen_range(500..4000)));
            }
            78..=79 if gateway_up => {
                fleet.stop_gateway().await;
                counts.gateway_restarts += 1;
                gateway_back_at =
                    Some(Instant::now() + Duration::from_millis(rng.gen_range(300..2000)));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..150))).await;
    }

    // Heal everything, then let it converge.
    if gateway_back_at.is_some() {
        fleet.start_gateway().await;
    }
    for k in &mut kiosks {
        k.proxy.restore();
        if k.agent.is_none() {
            k.agent = Some(fleet.start_agent_with(k.config.clone()).await);
        }
    }
    let converge = Duration::from_secs(60);
    // Every session ends: open ones are cancelled.
    for k in &kiosks {
        for s in &k.sessions {
            let body = session(&fleet, s).await;
            if body["state"] == "open" {
                let _ = fleet
                    .post(
                        &format!("/v1/cash-sessions/{s}/cancel"),
                        &serde_json::json!({}),
                    )
                    .await;
            }
        }
    }
    let deadline = Instant::now() + converge;
    let mut failures = Vec::new();
    for k in &kiosks {
        for s in &k.sessions {
            let mut body = session(&fleet, s).await;
            while !is_final(&body) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                body = session(&fleet, s).await;
            }
            if !is_final(&body) {
                failures.push(format!("session {s} on {} never final: {body}", k.id));
                continue;
            }
            if body["state"] == "paid" {
                counts.paid += 1;
            } else {
                counts.cancelled += 1;
            }
            let mut got: Vec<i64> = body["credits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["amount"].as_i64().unwrap())
                .collect();
            got.sort_unstable();
            let mut want = taken[s].clone();
            want.sort_unstable();
            if got != want {
                failures.push(format!(
                    "session {s} on {}: credits {got:?}, inserted {want:?}",
                    k.id
                ));
            }
            let inserted: i64 = want.iter().sum();
            let due = body["amount_due"].as_i64().unwrap();
            let owed = if body["state"] == "paid" {
                body["change_due"].as_i64().unwrap() + due
            } else {
                body["refund_due"].as_i64().unwrap()
            };
            if owed != inserted {
                failures.push(format!(
                    "session {s}: totals {body} for {inserted} inserted"
                ));
            }
        }
        let (_, list) = fleet
            .get(&format!("/v1/kiosks/{}/unassigned-credits", k.id))
            .await;
        let n = list["credits"].as_array().map_or(0, Vec::len);
        if n > 0 {
            failures.push(format!("{}: {n} unassigned credits: {list}", k.id));
        }
    }
    for (job_id, (i, marker)) in &jobs {
        let mut body = fleet.job(job_id).await;
        while !matches!(
            body["state"].as_str(),
            Some("printed" | "failed" | "expired")
        ) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            body = fleet.job(job_id).await;
        }
        let copies = count_with(&kiosks[*i].printer.jobs(), marker);
        counts.jobs += 1;
        match body["state"].as_str() {
            Some("printed") => {
                counts.printed += 1;
                if copies != 1 {
                    failures.push(format!("job {job_id} printed {copies} times: {body}"));
                }
            }
            Some("failed") => {
                counts.interrupted += 1;
                if copies > 1 {
                    failures.push(format!("job {job_id} failed but printed {copies} times"));
                }
                let (written, total) = (&body["bytes_written"], &body["bytes_total"]);
                if copies == 1 && written.as_u64().is_some() && written == total {
                    failures.push(format!("job {job_id} printed whole but reported {body}"));
                }
            }
            Some("expired") => {
                counts.expired += 1;
                if copies != 0 {
                    failures.push(format!("job {job_id} expired but printed {copies} times"));
                }
            }
            _ => failures.push(format!("job {job_id} never finished: {body}")),
        }
    }
    eprintln!(
        "chaos (seed {seed}): {} jobs: {} printed, {} failed, {} expired; {} sessions: {} paid, {} cancelled; \
         {} credits taken, {} refused by the acceptor; {} agent kills, {} gateway restarts, {} link cuts",
        counts.jobs,
        counts.printed,
        counts.interrupted,
        counts.expired,
        counts.sessions,
        counts.paid,
        counts.cancelled,
        counts.credits,
        counts.refused,
        counts.agent_kills,
        counts.gateway_restarts,
        counts.link_cuts
    );
    for k in kiosks {
        if let Some(a) = k.agent {
            a.shutdown().await;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
