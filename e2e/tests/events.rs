//! The event log from the outside: every event type delivered once and in
//! order by webhook and by `GET /v1/events`, and the stream resumed after a
//! gateway restart with `Last-Event-ID`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use kiosk_e2e::{FleetOptions, TestFleet, WAIT, sse_events, text_job, wait_for};
use kiosk_testkit::FakePrinter;
use serde_json::{Value, json};

type Delivered = Arc<Mutex<Vec<Value>>>;

async fn receiver(delivered: Delivered) -> SocketAddr {
    let app = Router::new().route(
        "/hooks",
        post(move |body: Bytes| {
            let delivered = delivered.clone();
            async move {
                delivered
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or_default());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn open_stream(fleet: &TestFleet, query: &str, last: Option<&str>) -> reqwest::Response {
    let mut req = fleet
        .request(reqwest::Method::GET, &format!("/v1/events{query}"))
        .bearer_auth(&fleet.api_key);
    if let Some(id) = last {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

fn id_of(event: &Value) -> u64 {
    event["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn every_event_type_reaches_webhooks_and_the_stream_once_in_order() {
    let delivered: Delivered = Arc::default();
    let addr = receiver(delivered.clone()).await;
    let mut opts = FleetOptions::new(&["k1"]);
    opts.webhook_url = Some(format!("http://{addr}/hooks"));
    opts.webhook_events = vec!["*".to_owned()];
    let mut fleet = TestFleet::start_with(opts).await;
    let mut stream = open_stream(&fleet, "", None).await;

    // kiosk.online, printer.status_changed
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    // print_job.state_changed: queued → received (→ printing) → printed
    let job = fleet.create_job("k1", text_job("events")).await;
    fleet.wait_job(&job, "printed").await;
    // cash_session.opened, cash_session.cancelling
    let session = fleet.open_session("k1", 500).await;
    let id = session["session_id"].as_str().unwrap().to_owned();
    let (status, _) = fleet
        .post(&format!("/v1/cash-sessions/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 202, "cancelling");
    // kiosk.offline
    agent.shutdown().await;
    fleet.wait_kiosk("k1", "offline").await;

    let mut seen: Vec<Value> = Vec::new();
    while !seen.iter().any(|e| e["type"] == "kiosk.offline") {
        seen.extend(
            sse_events(&mut stream, 1)
                .await
                .into_iter()
                .map(|(name, data)| {
                    assert_eq!(name, data["type"].as_str().unwrap(), "event: is the type");
                    data
                }),
        );
    }
    let types: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for want in [
        "kiosk.online",
        "printer.status_changed",
        "print_job.state_changed",
        "cash_session.opened",
        "cash_session.cancelling",
        "kiosk.offline",
    ] {
        assert!(types.contains(&want), "{want} missing from {types:?}");
    }
    let job_steps: Vec<(Value, Value)> = seen
        .iter()
        .filter(|e| e["type"] == "print_job.state_changed" && e["data"]["job_id"] == job.as_str())
        .map(|e| (e["data"]["from"].clone(), e["data"]["to"].clone()))
        .collect();
    // Each step starts where the one before ended (the kiosk may report
    // `printed` without `printing` in between for a quick job).
    assert_eq!(
        job_steps.first().map(|s| &s.0),
        Some(&json!("queued")),
        "{job_steps:?}"
    );
    assert_eq!(
        job_steps.last().map(|s| &s.1),
        Some(&json!("printed")),
        "{job_steps:?}"
    );
    assert!(
        job_steps.windows(2).all(|w| w[0].1 == w[1].0),
        "{job_steps:?}"
    );
    assert!(
        seen.iter().all(|e| e["kiosk_id"] == "k1"),
        "every event here is k1's"
    );
    let ids: Vec<u64> = seen.iter().map(id_of).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing: {ids:?}");

    // Webhooks: the same events, once each, in the same order.
    let last = *ids.last().unwrap();
    assert!(
        wait_for(WAIT, || async {
            delivered.lock().unwrap().iter().any(|e| id_of(e) == last)
        })
        .await,
        "webhooks caught up"
    );
    let hooks: Vec<u64> = delivered.lock().unwrap().iter().map(id_of).collect();
    let from_start: Vec<u64> = hooks.iter().copied().filter(|i| *i >= ids[0]).collect();
    assert_eq!(from_start, ids, "webhooks = stream, each once");

    // After a restart, Last-Event-ID resumes right after that event, with
    // the filters applied.
    fleet.stop_gateway().await;
    fleet.start_gateway().await;
    let mut resumed = open_stream(&fleet, "", Some(&ids[1].to_string())).await;
    let again: Vec<u64> = sse_events(&mut resumed, ids.len() - 2)
        .await
        .iter()
        .map(|(_, d)| id_of(d))
        .collect();
    assert_eq!(again, ids[2..]);
    let jobs_only = seen
        .iter()
        .filter(|e| e["type"] == "print_job.state_changed")
        .count();
    let mut filtered = open_stream(
        &fleet,
        "?type=print_job.*&kiosk_id=k1",
        Some(&ids[0].to_string()),
    )
    .await;
    let got = sse_events(&mut filtered, jobs_only).await;
    assert!(
        got.iter()
            .all(|(name, _)| name == "print_job.state_changed"),
        "{got:?}"
    );
}

#[tokio::test]
async fn bad_stream_requests_are_refused_with_a_reason() {
    let fleet = TestFleet::start(&["k1"]).await;
    for (query, header) in [
        ("?type=nonsense", None),
        ("?colour=red", None),
        ("", Some("yesterday")),
    ] {
        let mut req = fleet
            .request(reqwest::Method::GET, &format!("/v1/events{query}"))
            .bearer_auth(&fleet.api_key);
        if let Some(h) = header {
            req = req.header("last-event-id", h);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 400, "{query} {header:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request");
    }
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/events", fleet.http_base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
