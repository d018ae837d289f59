//! Job size limits end to end: a 300 KiB job passes every hop (HTTP body,
//! the gateway's job limit, the broker's payload limit, both MQTT clients'
//! packet limits, the agent's `print.max_job_bytes`) and prints whole; a
//! job over any limit is refused at the HTTP edge with 413 naming the
//! limit, never lost on the way.

use base64::Engine as _;
use kiosk_e2e::{FleetOptions, TestFleet, WAIT};
use kiosk_testkit::FakePrinter;
use serde_json::{Value, json};

/// A raw job whose JSON is about `json_bytes` long; returns it and the
/// bytes the printer must receive.
fn raw_job(json_bytes: usize) -> (Value, Vec<u8>) {
    let data: Vec<u8> = (0..json_bytes * 3 / 4).map(|i| (i % 251) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
    (
        json!({"printer": "receipt", "document": {"kind": "raw", "data": b64}}),
        data,
    )
}

#[tokio::test]
async fn a_300_kib_job_passes_every_hop_and_prints_whole() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let (job, data) = raw_job(300 * 1024);
    assert!(job.to_string().len() >= 300 * 1024);
    let id = fleet.create_job("k1", job).await;
    fleet.wait_job(&id, "printed").await;
    let jobs = printer.wait_for_jobs(1, WAIT).await.unwrap();
    assert!(
        kiosk_e2e::contains(&jobs[0], &data),
        "the printer got all {} bytes",
        data.len()
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn a_job_over_a_limit_is_refused_at_the_edge_naming_it() {
    let mut opts = FleetOptions::new(&["k1"]);
    // The broker's payload limit below the gateway's job limit, and the
    // HTTP body limit above both.
    opts.broker_extra = "max_payload_bytes = 65536".to_owned();
    opts.http_extra = "max_body_bytes = 200000".to_owned();
    let fleet = TestFleet::start_with(opts).await;
    let (job, _) = raw_job(100 * 1024);
    let (status, body) = fleet.post("/v1/kiosks/k1/print-jobs", &job).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("broker.max_payload_bytes"), "{message}");
    let (job, _) = raw_job(250 * 1024);
    let (status, body) = fleet.post("/v1/kiosks/k1/print-jobs", &job).await;
    assert_eq!(status, 413, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("http.max_body_bytes"), "{message}");
    // Just under the broker's limit still goes through.
    let (job, _) = raw_job(40 * 1024);
    let (status, body) = fleet.post("/v1/kiosks/k1/print-jobs", &job).await;
    assert_eq!(status, 202, "{body}");
}
