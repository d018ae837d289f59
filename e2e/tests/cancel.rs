//! Cancel over real HTTP and MQTT (`POST /v1/print-jobs/{id}/cancel`):
//! queued (kiosk offline, and never seen online), received (printer out
//! of paper, kiosk online and offline), printing (the kiosk refuses, the
//! job ends printed, then 409) and printed (409). A cancelled job never
//! reaches the printer.

use std::time::Duration;

use kiosk_e2e::{TestFleet, WAIT, count_with, text_job};
use kiosk_testkit::{FakePaper, FakePrinter, FakeStatus};
use serde_json::{Value, json};

fn states(job: &Value) -> Vec<String> {
    job["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["state"].as_str().unwrap_or("?").to_owned())
        .collect()
}

async fn cancel(fleet: &TestFleet, job_id: &str) -> (u16, Value) {
    fleet
        .post(&format!("/v1/print-jobs/{job_id}/cancel"), &json!({}))
        .await
}

/// Waits until the kiosk has answered the job's cancel.
async fn wait_answered(fleet: &TestFleet, job_id: &str) -> Value {
    fleet
        .wait_get(&format!("/v1/print-jobs/{job_id}"), |b| {
            b.get("cancel_pending").is_none()
        })
        .await
        .unwrap_or_else(|last| panic!("the kiosk never answered the cancel: {last}"))
}

fn paper_out() -> FakeStatus {
    FakeStatus {
        paper: FakePaper::Out,
        ..FakeStatus::default()
    }
}

#[tokio::test]
async fn a_queued_job_of_an_offline_kiosk_is_cancelled_at_once_and_never_printed() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    // Online once (the broker keeps its session), then offline.
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    agent.shutdown().await;
    fleet.wait_kiosk("k1", "offline").await;

    let job_id = fleet.create_job("k1", text_job("CANCELLED-QUEUED\n")).await;
    let (status, body) = cancel(&fleet, &job_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled", "{body}");
    assert_eq!(body["cancel_pending"], true, "{body}");
    assert_eq!(states(&body), ["queued", "cancelled"]);
    let (status, again) = cancel(&fleet, &job_id).await;
    assert_eq!((status, &again["state"]), (200, &json!("cancelled")));

    // Back online: the kiosk is told, confirms, and prints nothing of it.
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let job = wait_answered(&fleet, &job_id).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(states(&job), ["queued", "cancelled"]);
    // A later job prints, the cancelled one never.
    let next = fleet.create_job("k1", text_job("AFTER-CANCEL\n")).await;
    fleet.wait_job(&next, "printed").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(count_with(&printer.jobs(), "CANCELLED-QUEUED"), 0);
    assert_eq!(count_with(&printer.jobs(), "AFTER-CANCEL"), 1);
    assert_eq!(fleet.job(&job_id).await["state"], "cancelled");
    agent.shutdown().await;
}

#[tokio::test]
async fn a_job_of_a_kiosk_never_seen_is_cancelled_and_refused_when_it_connects() {
    let fleet = TestFleet::start(&["k1"]).await;
    let job_id = fleet.create_job("k1", text_job("NEVER-SEEN\n")).await;
    let (status, body) = cancel(&fleet, &job_id).await;
    assert_eq!(
        (status, &body["state"]),
        (200, &json!("cancelled")),
        "{body}"
    );
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    let job = wait_answered(&fleet, &job_id).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(printer.jobs().is_empty());
    agent.shutdown().await;
}

#[tokio::test]
async fn a_received_job_is_cancelled_on_the_kiosk_online_and_offline() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    // No paper: received jobs wait on the kiosk.
    printer.set_status(paper_out());
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;

    // Online: asked, then confirmed.
    let online = fleet.create_job("k1", text_job("CANCEL-ONLINE\n")).await;
    fleet.wait_job(&online, "received").await;
    let (status, body) = cancel(&fleet, &online).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "received", "{body}");
    assert_eq!(body["cancel_pending"], true, "{body}");
    let job = fleet.wait_job(&online, "cancelled").await;
    assert_eq!(states(&job), ["queued", "received", "cancelled"]);
    assert!(job.get("cancel_pending").is_none(), "{job}");

    // Offline: asked while away, confirmed when it is back.
    let offline = fleet.create_job("k1", text_job("CANCEL-OFFLINE\n")).await;
    fleet.wait_job(&offline, "received").await;
    agent.shutdown().await;
    fleet.wait_kiosk("k1", "offline").await;
    let (status, body) = cancel(&fleet, &offline).await;
    assert_eq!(
        (status, &body["state"]),
        (202, &json!("received")),
        "{body}"
    );
    let agent = fleet.start_agent("k1", printer.addr()).await;
    let job = fleet.wait_job(&offline, "cancelled").await;
    assert_eq!(states(&job), ["queued", "received", "cancelled"]);

    // Paper back: neither prints, the next job does.
    printer.set_status(FakeStatus::default());
    let next = fleet.create_job("k1", text_job("AFTER-PAPER\n")).await;
    fleet.wait_job(&next, "printed").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let jobs = printer.jobs();
    assert_eq!(count_with(&jobs, "CANCEL-ONLINE"), 0);
    assert_eq!(count_with(&jobs, "CANCEL-OFFLINE"), 0);
    assert_eq!(count_with(&jobs, "AFTER-PAPER"), 1);
    let (status, body) = cancel(&fleet, &online).await;
    assert_eq!((status, &body["state"]), (200, &json!("cancelled")));
    agent.shutdown().await;
}

#[tokio::test]
async fn a_printing_job_is_not_cancelled_and_a_printed_one_answers_409() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    // A jammed printer keeps the job in its write (`printing`).
    printer.set_stall_after(Some(64 * 1024));
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let data: String = (0..380_000)
        .map(|i| (b'A' + (i % 26) as u8) as char)
        .collect();
    let raw = kiosk_schemas::RawDocument::from_bytes(data.as_bytes());
    let job_id = fleet
        .create_job(
            "k1",
            json!({"printer": "receipt", "copies": 10,
                   "document": {"kind": "raw", "data": raw.data}}),
        )
        .await;
    assert!(printer.wait_for_stalled(1, WAIT).await, "never started");
    // `printing` is `received` at the gateway: the kiosk is asked, and
    // refuses, since the write started.
    let (status, body) = cancel(&fleet, &job_id).await;
    assert_eq!(
        (status, &body["state"]),
        (202, &json!("received")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    printer.set_stall_after(None);
    let job = fleet.wait_job(&job_id, "printed").await;
    assert_eq!(states(&job), ["queued", "received", "printed"]);
    assert!(job.get("cancel_pending").is_none(), "{job}");
    let (status, body) = cancel(&fleet, &job_id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "not_cancellable");
    assert_eq!(body["error"]["state"], "printed");

    // Printed with the printer working: 409 too, and stays printed.
    let done = fleet.create_job("k1", text_job("DONE\n")).await;
    fleet.wait_job(&done, "printed").await;
    let (status, body) = cancel(&fleet, &done).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["state"], "printed");
    assert_eq!(fleet.job(&done).await["state"], "printed");
    let (status, body) = cancel(&fleet, "no-such-job").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("job_not_found"))
    );
    agent.shutdown().await;
}
