//! The print path end to end: HTTP → gateway store → embedded broker →
//! agent inbox → fake port-9100 printer → result → HTTP.

use std::time::Duration;

use kiosk_e2e::{TestFleet, WAIT, contains, count_with, receipt_job, text_job};
use kiosk_testkit::{FakeDevicePrinter, FakePaper, FakePrinter, FakeStatus};
use serde_json::json;

fn states(job: &serde_json::Value) -> Vec<String> {
    job["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["state"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Waits until k1's status says its receipt printer's paper is `paper`.
async fn wait_paper(fleet: &TestFleet, paper: &str) -> serde_json::Value {
    fleet
        .wait_get("/v1/kiosks/k1", |k| {
            k["printers"]["receipt"]["paper"] == paper
        })
        .await
        .unwrap_or_else(|_| panic!("kiosk status never said paper {paper}"))
}

#[tokio::test]
async fn receipt_over_http_reaches_the_printer() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;

    let items = [
        (2, "Cheeseburger", 1700),
        (1, "Fries large", 450),
        (2, "Lemonade", 600),
    ];
    let job_id = fleet.create_job("k1", receipt_job(&items)).await;
    let job = fleet.wait_job(&job_id, "printed").await;
    assert_eq!(states(&job), ["queued", "received", "printed"]);

    let jobs = printer.wait_for_jobs(1, WAIT).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let bytes = &jobs[0];
    assert!(
        bytes.starts_with(&[0x1b, 0x40]),
        "starts with ESC @: {:02x?}",
        &bytes[..8]
    );
    for name in [
        "Cheeseburger",
        "Fries large",
        "Lemonade",
        "17.00",
        "4.50",
        "6.00",
        "27.50",
    ] {
        assert!(contains(bytes, name.as_bytes()), "missing {name:?}");
    }
    let cut = bytes
        .windows(2)
        .rposition(|w| w == [0x1d, 0x56])
        .expect("a cut (GS V)");
    assert!(bytes.len() - cut <= 4, "the cut is the last command");
    agent.shutdown().await;
    fleet.wait_kiosk("k1", "offline").await;
}

#[tokio::test]
async fn job_posted_while_kiosk_offline_prints_once_when_it_comes() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let job_id = fleet.create_job("k1", text_job("OFFLINE-JOB\n")).await;
    // Several republish intervals pass: nobody is there to take it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fleet.job(&job_id).await["state"], "queued");

    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_job(&job_id, "printed").await;
    // More republish intervals: the job is finished, nothing is re-sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count_with(&printer.jobs(), "OFFLINE-JOB"), 1);
    agent.shutdown().await;
}

async fn restart_agent_while_jobs_in_flight(kill: bool) {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            fleet
                .create_job("k1", text_job(&format!("JOB-{i:02}\n")))
                .await,
        );
    }
    // Stop the agent somewhere in the middle of the run.
    let _ = printer.wait_for_jobs(3, WAIT).await;
    if kill {
        agent.kill().await;
    } else {
        agent.shutdown().await;
    }
    let agent = fleet.start_agent("k1", printer.addr()).await;
    let mut finished = Vec::new();
    for id in &ids {
        let job = fleet
            .wait_get(&format!("/v1/print-jobs/{id}"), |b| {
                matches!(b["state"].as_str(), Some("printed" | "failed"))
            })
            .await
            .expect("job finished");
        finished.push(job);
    }
    let jobs = printer.jobs();
    for (i, job) in finished.iter().enumerate() {
        let copies = count_with(&jobs, &format!("JOB-{i:02}"));
        match job["state"].as_str() {
            Some("printed") => assert_eq!(copies, 1, "JOB-{i:02} printed {copies} times"),
            // Only a job caught mid-write by the kill may fail, as
            // `interrupted`; it is on paper at most once.
            _ => {
                assert!(kill, "graceful stop must not fail jobs: {job}");
                assert_eq!(job["reason"], "interrupted", "{job}");
                assert!(copies <= 1);
            }
        }
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn agent_restarted_cleanly_prints_every_job_once() {
    restart_agent_while_jobs_in_flight(false).await;
}

#[tokio::test]
async fn agent_killed_and_restarted_prints_no_job_twice() {
    restart_agent_while_jobs_in_flight(true).await;
}

#[tokio::test]
async fn same_job_published_twice_prints_once() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;

    let backend = fleet.mqtt_client("backend-1", "backend").await;
    let job = json!({
        "v": 1, "job_id": "dup-1", "printer": "receipt",
        "document": {"kind": "text", "text": "DUPLICATE-ME\n"}
    });
    backend.publish("kiosk/k1/print", &job).await;
    backend.publish("kiosk/k1/print", &job).await;
    fleet.wait_job("dup-1", "printed").await;
    backend.publish("kiosk/k1/print", &job).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(count_with(&printer.jobs(), "DUPLICATE-ME"), 1);
    assert_eq!(fleet.job("dup-1").await["origin"], "mqtt");
    agent.shutdown().await;
}

#[tokio::test]
async fn job_expiring_while_kiosk_offline_is_never_printed() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let mut body = text_job("TOO-LATE\n");
    body["expires_in_s"] = json!(1);
    let job_id = fleet.create_job("k1", body).await;
    let job = fleet.wait_job(&job_id, "expired").await;
    assert_eq!(job["reason"], "expired before the kiosk received it");

    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    // The gateway asks the kiosk about it; the kiosk confirms it expired.
    let job = fleet
        .wait_get(&format!("/v1/print-jobs/{job_id}"), |b| {
            b["history"].as_array().is_some_and(|h| h.len() >= 3)
        })
        .await
        .expect("kiosk confirmed expiry");
    assert_eq!(job["state"], "expired");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_with(&printer.jobs(), "TOO-LATE"), 0);
    agent.shutdown().await;
}

#[tokio::test]
async fn job_waits_for_paper_and_prints_when_it_is_back() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    printer.set_status(FakeStatus {
        paper: FakePaper::Out,
        ..FakeStatus::default()
    });
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let job_id = fleet.create_job("k1", text_job("NEEDS-PAPER\n")).await;
    fleet.wait_job(&job_id, "received").await;
    let kiosk = wait_paper(&fleet, "out").await;
    assert_eq!(kiosk["printers"]["receipt"]["ready"], false);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fleet.job(&job_id).await["state"], "received");
    assert!(printer.jobs().is_empty());

    printer.set_status(FakeStatus::default());
    fleet.wait_job(&job_id, "printed").await;
    assert_eq!(count_with(&printer.jobs(), "NEEDS-PAPER"), 1);
    wait_paper(&fleet, "ok").await;
    agent.shutdown().await;
}

/// The same on a `device` printer (a pty node, as a USB or serial printer
/// whose read side answers `DLE EOT`): the kiosk says paper out and near
/// end, the job waits, then prints once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_printer_tells_its_paper_and_jobs_wait_for_it() {
    let fleet = TestFleet::start(&["k1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let printer = FakeDevicePrinter::start(dir.path()).unwrap();
    printer.set_status(FakeStatus {
        paper: FakePaper::Out,
        ..FakeStatus::default()
    });
    let unused = "127.0.0.1:9".parse().unwrap();
    let toml = fleet.agent_toml("k1", unused).replace(
        "driver = \"tcp\"\naddress = \"127.0.0.1:9\"",
        &format!(
            "driver = \"device\"\naddress = \"{}\"",
            printer.path().display()
        ),
    );
    assert!(toml.contains("driver = \"device\""), "{toml}");
    use kiosk_schemas::settings::Checked as _;
    let config = kiosk_agent::AgentConfig::from_toml(&toml).unwrap();
    let agent = fleet.start_agent_with(config).await;
    fleet.wait_kiosk("k1", "online").await;
    let job_id = fleet.create_job("k1", text_job("USB-NEEDS-PAPER\n")).await;
    fleet.wait_job(&job_id, "received").await;
    let kiosk = wait_paper(&fleet, "out").await;
    assert_eq!(kiosk["printers"]["receipt"]["ready"], false);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fleet.job(&job_id).await["state"], "received");
    assert!(!contains(&printer.received(), b"USB-NEEDS-PAPER"));

    printer.set_status(FakeStatus {
        paper: FakePaper::NearEnd,
        ..FakeStatus::default()
    });
    fleet.wait_job(&job_id, "printed").await;
    let bytes = printer.received();
    assert_eq!(count_with(&[bytes], "USB-NEEDS-PAPER"), 1);
    wait_paper(&fleet, "near_end").await;
    agent.shutdown().await;
}

#[tokio::test]
async fn gateway_restart_keeps_queued_jobs_and_history() {
    let mut fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let before: Vec<String> = futures_join(&fleet, "BEFORE", 3).await;
    fleet.stop_gateway().await;
    fleet.start_gateway().await;
    for id in &before {
        assert_eq!(fleet.job(id).await["state"], "queued");
    }
    let agent = fleet.start_agent("k1", printer.addr()).await;
    for id in &before {
        let job = fleet.wait_job(id, "printed").await;
        assert_eq!(states(&job), ["queued", "received", "printed"]);
    }
    // And again with the kiosk connected through the restart.
    let during = futures_join(&fleet, "DURING", 3).await;
    fleet.stop_gateway().await;
    fleet.start_gateway().await;
    let after = futures_join(&fleet, "AFTER", 3).await;
    for id in during.iter().chain(&after) {
        fleet.wait_job(id, "printed").await;
    }
    let jobs = printer.jobs();
    for i in 0..3 {
        for tag in ["BEFORE", "DURING", "AFTER"] {
            assert_eq!(count_with(&jobs, &format!("{tag}-{i}")), 1, "{tag}-{i}");
        }
    }
    agent.shutdown().await;
}

async fn futures_join(fleet: &TestFleet, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            fleet
                .create_job("k1", text_job(&format!("{tag}-{i}\n")))
                .await,
        );
    }
    ids
}

/// Polls the job until it is in `state`, for at most `within`; the last
/// body seen otherwise.
async fn job_within(
    fleet: &TestFleet,
    job_id: &str,
    state: &str,
    within: Duration,
) -> Result<serde_json::Value, serde_json::Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let job = fleet.job(job_id).await;
        if job["state"] == state {
            return Ok(job);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(job);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The results published for `job_id` until one in `state` arrives (or
/// [`WAIT`] passes), in order.
async fn results_until(
    client: &mut kiosk_e2e::mqtt::Client,
    job_id: &str,
    state: &str,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(p) = client
        .recv(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        let Ok(result) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
            continue;
        };
        if result["job_id"] != job_id {
            continue;
        }
        let done = result["state"] == state;
        seen.push(result);
        if done {
            break;
        }
    }
    seen
}

/// Issue #9, finding 5: a job whose bytes all reached the printer is
/// `printed` even when the agent dies while it waits for the printer to
/// close the connection.
#[tokio::test]
async fn crash_after_the_last_byte_leaves_the_job_printed_and_printed_once() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    // The printer takes every byte but never closes its side: the agent
    // waits for that close (up to 2 s) after the job.
    printer.set_hold_connections(true);
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let job_id = fleet.create_job("k1", text_job("LAST-BYTE\n")).await;
    printer.wait_for_jobs(1, WAIT).await.unwrap();
    // Recorded and reported `printed` once the bytes are handed over,
    // well before the 2 s wait for the printer's close is over.
    let job = job_within(&fleet, &job_id, "printed", Duration::from_millis(1500))
        .await
        .unwrap_or_else(|last| {
            panic!("not printed while the printer holds the connection: {last}")
        });
    assert_eq!(states(&job), ["queued", "received", "printed"]);
    // Dies while it still waits for the close.
    agent.kill().await;
    printer.set_hold_connections(false);

    let mut technician = fleet.mqtt_client("technician-1", "technician").await;
    technician.subscribe("kiosk/k1/print/result").await;
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    // Delivered again: the agent answers with what it recorded.
    let backend = fleet.mqtt_client("backend-1", "backend").await;
    backend
        .publish(
            "kiosk/k1/print",
            &json!({"v": 1, "job_id": job_id, "printer": "receipt",
                    "document": {"kind": "text", "text": "LAST-BYTE\n"}}),
        )
        .await;
    let results = results_until(&mut technician, &job_id, "printed").await;
    assert!(
        results.last().is_some_and(|r| r["state"] == "printed")
            && results.iter().all(|r| r["state"] != "failed"),
        "the restarted agent must hold the job as printed: {results:?}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(count_with(&printer.jobs(), "LAST-BYTE"), 1);
    let job = fleet.job(&job_id).await;
    assert_eq!(job["state"], "printed");
    assert_eq!(states(&job), ["queued", "received", "printed"]);
    agent.shutdown().await;
}

/// Bytes of the raw job the mid-write tests send: larger, times its 10
/// copies, than what loopback socket buffers take before a write blocks
/// (about 3 MB).
const BIG_RAW: usize = 380_000;
const BIG_COPIES: u64 = 10;

/// A 3.8 MB raw job (10 copies) whose bytes hold no `DLE`.
fn big_raw_job() -> serde_json::Value {
    let data: Vec<u8> = (0..BIG_RAW).map(|i| b'A' + (i % 26) as u8).collect();
    json!({"printer": "receipt", "copies": BIG_COPIES,
           "document": kiosk_schemas::Document::Raw(kiosk_schemas::RawDocument::from_bytes(&data))})
}

/// The `bytes_written` and `bytes_total` of a failed job, checked to
/// describe a write that stopped part-way.
fn part_written(job: &serde_json::Value) -> (u64, u64) {
    let written = job["bytes_written"].as_u64();
    let total = job["bytes_total"].as_u64();
    let (Some(written), Some(total)) = (written, total) else {
        panic!("a job failed mid-write must say how far it got: {job}");
    };
    assert_eq!(total, BIG_RAW as u64 * BIG_COPIES, "{job}");
    assert!(0 < written && written < total, "{job}");
    (written, total)
}

#[tokio::test]
async fn crash_mid_write_is_failed_interrupted_with_bytes_written_never_reprinted() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    // A jammed printer: it takes 64 KiB and reads no more, so the agent's
    // write blocks in the middle of the job.
    printer.set_stall_after(Some(64 * 1024));
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let job_id = fleet.create_job("k1", big_raw_job()).await;
    assert!(
        printer.wait_for_stalled(1, WAIT).await,
        "the job never started"
    );
    // Long enough for the progress to reach the store, shorter than the
    // agent's 2 s write timeout.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    agent.kill().await;

    let agent = fleet.start_agent("k1", printer.addr()).await;
    let job = fleet.wait_job(&job_id, "failed").await;
    assert_eq!(job["reason"], "interrupted", "{job}");
    part_written(&job);
    // Not written again by the restarted agent (its connection would stall
    // too), nor by republishes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !printer
            .wait_for_stalled(2, Duration::from_millis(200))
            .await
    );
    assert!(printer.jobs().is_empty());

    // An explicit reprint is the way to print it again.
    printer.set_stall_after(None);
    let (status, reprint) = fleet
        .post(
            &format!("/v1/print-jobs/{job_id}/reprint"),
            &json!({"copies": 1}),
        )
        .await;
    assert_eq!(status, 202, "{reprint}");
    fleet
        .wait_job(reprint["job_id"].as_str().unwrap(), "printed")
        .await;
    // The killed write's socket delivers what its buffers held once the
    // printer reads again: a part, never a whole job.
    let whole = |jobs: Vec<Vec<u8>>| jobs.iter().filter(|j| j.len() == BIG_RAW).count();
    assert_eq!(whole(printer.jobs()), 1);
    agent.shutdown().await;
}

#[tokio::test]
async fn write_stalled_past_the_timeout_fails_with_bytes_written() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    printer.set_stall_after(Some(64 * 1024));
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let job_id = fleet.create_job("k1", big_raw_job()).await;
    let job = fleet.wait_job(&job_id, "failed").await;
    let reason = job["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("timed out") && reason.contains("write to"),
        "{job}"
    );
    part_written(&job);
    agent.shutdown().await;
}

/// Many requests at once on a multi-threaded runtime, as in production:
/// concurrent store transactions and flushes must not deadlock (sled 0.34's
/// `flush_async` did, see `Store::flush`), and a burst far larger than
/// rumqttd's window of 100 unacknowledged messages must not wedge the MQTT
/// sessions (it did with one gateway connection, see `gateway::mqtt`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_a_multi_threaded_runtime_all_print() {
    let fleet = std::sync::Arc::new(TestFleet::start(&["k1", "k2"]).await);
    let p1 = FakePrinter::start().await.unwrap();
    let p2 = FakePrinter::start().await.unwrap();
    let a1 = fleet.start_agent("k1", p1.addr()).await;
    let a2 = fleet.start_agent("k2", p2.addr()).await;
    let mut clients = Vec::new();
    for c in 0..16 {
        let fleet = fleet.clone();
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                let kiosk = if c % 4 == 0 { "k2" } else { "k1" };
                ids.push(
                    fleet
                        .create_job(kiosk, text_job(&format!("C{c:02}-{i:02}\n")))
                        .await,
                );
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await.unwrap());
    }
    for id in &ids {
        fleet.wait_job(id, "printed").await;
    }
    let jobs: Vec<Vec<u8>> = p1.jobs().into_iter().chain(p2.jobs()).collect();
    assert_eq!(jobs.len(), 800);
    for c in 0..16 {
        for i in 0..50 {
            assert_eq!(count_with(&jobs, &format!("C{c:02}-{i:02}")), 1);
        }
    }
    a1.shutdown().await;
    a2.shutdown().await;
}
