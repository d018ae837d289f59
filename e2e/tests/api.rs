//! The rest of the HTTP API: idempotency, reprint, kiosks, metrics, the
//! rate limit per API key.

use kiosk_e2e::{FleetOptions, TestFleet, count_with, text_job};
use kiosk_testkit::FakePrinter;
use serde_json::json;

#[tokio::test]
async fn idempotency_key_returns_the_same_job_and_prints_once() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    let body = text_job("ONCE-ONLY\n");
    let send = |body: serde_json::Value, key: &'static str| {
        let req = fleet
            .request(reqwest::Method::POST, "/v1/kiosks/k1/print-jobs")
            .bearer_auth(&fleet.api_key)
            .header("idempotency-key", key)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (s1, a) = send(body.clone(), "order-42").await;
    let (s2, b) = send(body.clone(), "order-42").await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(a["job_id"], b["job_id"]);
    fleet
        .wait_job(a["job_id"].as_str().unwrap(), "printed")
        .await;
    let (s3, c) = send(body, "order-42").await;
    assert_eq!(s3, 202);
    assert_eq!(c["job_id"], a["job_id"]);
    assert_eq!(c["state"], "printed");
    let (s4, d) = send(text_job("OTHER\n"), "order-42").await;
    assert_eq!(s4, 422, "{d}");
    assert_eq!(d["error"]["code"], "idempotency_key_reused");
    assert_eq!(count_with(&printer.jobs(), "ONCE-ONLY"), 1);
    agent.shutdown().await;
}

#[tokio::test]
async fn reprint_creates_a_new_job_with_the_same_document() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    let original = fleet.create_job("k1", text_job("PRINT-AGAIN\n")).await;
    fleet.wait_job(&original, "printed").await;
    let (status, copy) = fleet
        .post(&format!("/v1/print-jobs/{original}/reprint"), &json!({}))
        .await;
    assert_eq!(status, 202, "{copy}");
    assert_ne!(copy["job_id"], original.as_str());
    assert_eq!(copy["reprint_of"], original.as_str());
    fleet
        .wait_job(copy["job_id"].as_str().unwrap(), "printed")
        .await;
    assert_eq!(count_with(&printer.jobs(), "PRINT-AGAIN"), 2);
    agent.shutdown().await;
}

#[tokio::test]
async fn kiosks_are_listed_with_status_printers_and_pending_jobs() {
    let fleet = TestFleet::start(&["k1", "k2"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    fleet.create_job("k2", text_job("for k2\n")).await;
    let (status, list) = fleet.get("/v1/kiosks").await;
    assert_eq!(status, 200);
    let kiosks = list["kiosks"].as_array().unwrap();
    let ids: Vec<_> = kiosks
        .iter()
        .map(|k| k["kiosk_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["k1", "k2"]);
    let k1 = fleet
        .wait_get("/v1/kiosks/k1", |k| {
            k["printers"]["receipt"]["ready"] == true
        })
        .await
        .unwrap();
    assert_eq!(k1["status"], "online");
    assert_eq!(k1["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(k1["last_seen"].is_string());
    assert_eq!(kiosks[1]["status"], "unknown");
    assert_eq!(kiosks[1]["pending_jobs"], 1);
    let (status, _) = fleet.get("/v1/kiosks/k3").await;
    assert_eq!(status, 404);
    agent.shutdown().await;
    fleet.wait_kiosk("k1", "offline").await;
}

#[tokio::test]
async fn metrics_count_jobs_latency_and_kiosks() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let id = fleet.create_job("k1", text_job("METRICS\n")).await;
    fleet.wait_job(&id, "printed").await;
    let text = fleet
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "kiosk_print_jobs{state=\"printed\"} 1",
        "kiosk_print_jobs{state=\"queued\"} 0",
        "kiosk_print_job_latency_seconds_count 1",
        "kiosk_kiosks_online 1",
        "kiosk_mqtt_connected 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn test_print_command_prints_a_test_page() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let backend = fleet.mqtt_client("backend-cmd", "backend").await;
    backend
        .publish(
            "kiosk/k1/cmd",
            &json!({"v": 1, "kind": "test_print", "printer": "receipt"}),
        )
        .await;
    let jobs = printer
        .wait_for_jobs(1, kiosk_e2e::WAIT)
        .await
        .expect("a test page");
    assert!(kiosk_e2e::contains(&jobs[0], b"k1"), "names the kiosk");
    assert!(
        kiosk_e2e::contains(&jobs[0], b"receipt"),
        "names the printer"
    );
    agent.shutdown().await;
}

/// `http.rate_limit_per_second` over real HTTP: the burst passes, then
/// `429 rate_limited` with `Retry-After` and the error body, counted by key
/// name; another key, `/healthz` and `/metrics` are not limited; after
/// `Retry-After` seconds the key gets in again. The gateway runs on real
/// time (sockets, sled, MQTT), so this waits those seconds for real; the
/// paused-time tests are in `kiosk-gateway` (`routes::tests`,
/// `rate_limit::tests`).
#[tokio::test]
async fn rate_limit_gives_429_then_recovers() {
    let mut opts = FleetOptions::new(&["k1"]);
    // A token a second, so the burst cannot refill while it is sent.
    opts.rate_limit = Some((1, 3));
    let fleet = TestFleet::start_with(opts).await;
    let other =
        kiosk_gateway::api_keys::add_key(&fleet.dir.path().join("api-keys"), "other").unwrap();
    let get = |key: &str| {
        let req = fleet
            .request(reqwest::Method::GET, "/v1/kiosks")
            .bearer_auth(key);
        async move {
            let resp = req.send().await.unwrap();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let status = resp.status().as_u16();
            let body = resp.json::<serde_json::Value>().await.unwrap();
            (status, retry_after, body)
        }
    };
    for i in 0..3 {
        let (status, _, body) = get(&fleet.api_key).await;
        assert_eq!(status, 200, "request {i} of the burst: {body}");
    }
    // Tokens come back while requests are sent; the bucket still runs dry
    // within a few requests, whatever the machine's speed.
    let mut refused = None;
    for _ in 0..20 {
        let answer = get(&fleet.api_key).await;
        if answer.0 != 200 {
            refused = Some(answer);
            break;
        }
    }
    let (status, retry_after, body) = refused.expect("never rate limited");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    // Less than one interval (1 s) to the next token, rounded up.
    assert_eq!(retry_after, 1);

    let (status, _, body) = get(&other).await;
    assert_eq!(status, 200, "another key: {body}");
    assert_ne!(fleet.get("/healthz").await.0, 429);
    let metrics = fleet
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kiosk_http_rate_limited_total{api_key=\"test\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("api_key=\"other\""), "{metrics}");

    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let (status, _, body) = get(&fleet.api_key).await;
    assert_eq!(status, 200, "after Retry-After: {body}");
}
