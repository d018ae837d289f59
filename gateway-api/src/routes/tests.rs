//! Tests of the router's middleware, through the real [`router`] in memory
//! (no sockets), so time can be paused.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower_service::Service;

use super::*;
use crate::config::{CLIENT_DEFAULTS, Checked as _};

/// The gateway's HTTP application over a store in `dir`, with the API keys
/// `names` (returned in that order) and `[http]` lines `http`; its MQTT
/// session is never started.
fn app(dir: &std::path::Path, names: &[&str], http: &str) -> (Router, Vec<String>) {
    let (router, keys, _) = app_and_store(dir, names, http);
    (router, keys)
}

/// [`app`] and its store.
fn app_and_store(
    dir: &std::path::Path,
    names: &[&str],
    http: &str,
) -> (Router, Vec<String>, Store) {
    let keys_file = dir.join("api-keys");
    let keys = names
        .iter()
        .map(|n| crate::api_keys::add_key(&keys_file, n).unwrap())
        .collect();
    let toml = format!(
        "[http]\napi_keys = \"{}\"\n{http}\n[broker]\nembedded = false\nurl = \"mqtt://127.0.0.1:1\"\npassword = \"pw\"\n[store]\npath = \"{}\"\n",
        keys_file.display(),
        dir.join("store").display(),
    );
    let config = Arc::new(GatewayConfig::from_toml(&toml).unwrap());
    let store = Store::open(&config.store.path).unwrap();
    let client = &config.broker.client;
    let (link, _consumer, _producer) = crate::mqtt::connect(&crate::mqtt::MqttSettings {
        brokers: vec![("127.0.0.1".into(), 1)],
        client_id: config.broker.client_id.clone(),
        username: client.username(CLIENT_DEFAULTS).to_owned(),
        password: client.password.clone(),
        keep_alive: client.keep_alive,
        backoff: client.backoff(CLIENT_DEFAULTS),
        tls: None,
        max_packet_bytes: 1 << 20,
    });
    let fleet = Arc::new(Fleet::new(store.clone(), None, [], config.fleet.heartbeat));
    let metrics = Arc::new(Metrics::new());
    let delivery = Arc::new(Delivery::new(
        store.clone(),
        fleet.clone(),
        link.clone(),
        config.delivery.clone(),
        config.store.retention,
        Arc::default(),
    ));
    let handle = store.clone();
    let state = AppState::new(AppInner {
        cash: crate::cash::store::CashStore::open(&store).unwrap(),
        tokens: crate::cash::token::ViewTokens::open(&store).unwrap(),
        store,
        fleet,
        delivery,
        api_keys: ApiKeys::open(config.http.api_keys.as_deref()).unwrap(),
        rate_limits: RateLimits::new(
            config.http.rate_limit_per_second,
            config.http.rate_limit_burst,
        ),
        http_limits: crate::http_server::Limits::new(&config.http, 16, metrics.clone()),
        metrics,
        link,
        config,
        live: Arc::default(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        operators: Arc::new(crate::operators::Operators::new(None)),
    });
    (router(state), keys, handle)
}

/// Answers `req`: status, `Retry-After` and body.
async fn send(app: &mut Router, req: Request<Body>) -> (StatusCode, Option<String>, Vec<u8>) {
    std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(app, cx))
        .await
        .unwrap();
    let resp = app.call(req).await.unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, retry_after, body.to_vec())
}

/// `GET path` with `key` as Bearer; status, `Retry-After` and JSON body.
async fn get(app: &mut Router, path: &str, key: &str) -> (StatusCode, Option<String>, Value) {
    let req = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let (status, retry_after, body) = send(app, req).await;
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, retry_after, body)
}

#[tokio::test(start_paused = true)]
async fn rate_limit_gives_429_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut app, keys) = app(
        dir.path(),
        &["pos-1", "pos-2"],
        "rate_limit_per_second = 2\nrate_limit_burst = 3",
    );
    let (pos1, pos2) = (&keys[0], &keys[1]);
    for i in 0..3 {
        let (status, _, _) = get(&mut app, "/v1/kiosks", pos1).await;
        assert_eq!(status, StatusCode::OK, "request {i} of the burst");
    }
    let (status, retry_after, body) = get(&mut app, "/v1/kiosks", pos1).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // A token comes back every 500 ms: rounded up to whole seconds.
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");

    // Another key, unknown keys and the routes without a key are not
    // limited by pos-1's bucket.
    let (status, _, _) = get(&mut app, "/v1/kiosks", pos2).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = get(&mut app, "/v1/kiosks", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _, _) = get(&mut app, "/healthz", pos1).await;
    assert_ne!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = get(&mut app, "/metrics", pos1).await;
    assert_eq!(status, StatusCode::OK);

    tokio::time::advance(Duration::from_millis(500)).await;
    let (status, _, _) = get(&mut app, "/v1/kiosks", pos1).await;
    assert_eq!(status, StatusCode::OK, "a token came back");
    let (status, _, _) = get(&mut app, "/v1/kiosks", pos1).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(Duration::from_secs(2)).await;
    for i in 0..3 {
        let (status, _, _) = get(&mut app, "/v1/kiosks", pos1).await;
        assert_eq!(status, StatusCode::OK, "request {i} of the new burst");
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limit_is_counted_by_key_name() {
    let dir = tempfile::tempdir().unwrap();
    let (mut app, keys) = app(
        dir.path(),
        &["pos-1"],
        "rate_limit_per_second = 1\nrate_limit_burst = 1",
    );
    assert_eq!(
        get(&mut app, "/v1/kiosks", &keys[0]).await.0,
        StatusCode::OK
    );
    for _ in 0..2 {
        let (status, _, _) = get(&mut app, "/v1/kiosks", &keys[0]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let (_, _, text) = send(&mut app, req).await;
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("kiosk_http_rate_limited_total{api_key=\"pos-1\"} 2"),
        "{text}"
    );
    assert!(!text.contains(&keys[0]));
}

#[tokio::test(start_paused = true)]
async fn zero_rate_is_no_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut app, keys) = app(dir.path(), &["pos-1"], "rate_limit_per_second = 0");
    for i in 0..100 {
        let (status, _, _) = get(&mut app, "/v1/kiosks", &keys[0]).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
    }
}

/// `POST path` without a body, with `key` as Bearer; status and JSON body.
async fn post_empty(app: &mut Router, path: &str, key: &str) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(app, req).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn cancel_answers_by_the_jobs_state() {
    use crate::store::{JobRecord, Origin, Source};
    use kiosk_schemas::{JobId, JobState, KioskId, PrintJob};

    let dir = tempfile::tempdir().unwrap();
    let (mut app, keys, store) = app_and_store(dir.path(), &["pos"], "rate_limit_per_second = 0");
    let key = &keys[0];
    let kiosk = KioskId::new("k1").unwrap();
    let add = |id: &str| {
        let payload = format!(
            r#"{{"v":1,"job_id":"{id}","printer":"receipt","document":{{"kind":"text","text":"x"}}}}"#
        );
        let job: PrintJob = serde_json::from_str(&payload).unwrap();
        let rec = JobRecord::queued(&kiosk, &job, Origin::Mqtt, None, chrono::Utc::now());
        store.create_job(rec, payload.as_bytes(), None).unwrap();
    };
    let report = |id: &str, state: JobState| {
        let id = JobId::new(id).unwrap();
        store
            .apply_report(
                &kiosk,
                &id,
                state,
                chrono::Utc::now(),
                None,
                None,
                Source::Kiosk,
            )
            .unwrap();
    };

    // Queued: cancelled at once; the kiosk is still to confirm.
    add("q");
    let (status, body) = post_empty(&mut app, "/v1/print-jobs/q/cancel", key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["cancel_pending"], true);
    let (status, _, body) = get(&mut app, "/v1/print-jobs/q", key).await;
    assert_eq!(
        (status, &body["state"]),
        (StatusCode::OK, &Value::from("cancelled"))
    );
    // Again: the same answer.
    let (status, body) = post_empty(&mut app, "/v1/print-jobs/q/cancel", key).await;
    assert_eq!(
        (status, &body["state"]),
        (StatusCode::OK, &Value::from("cancelled"))
    );
    // Confirmed by the kiosk: nothing pending any more.
    report("q", JobState::Cancelled);
    let (_, _, body) = get(&mut app, "/v1/print-jobs/q", key).await;
    assert!(body.get("cancel_pending").is_none(), "{body}");

    // Received: the kiosk is asked.
    add("r");
    report("r", JobState::Received);
    let (status, body) = post_empty(&mut app, "/v1/print-jobs/r/cancel", key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["state"], "received");
    assert_eq!(body["cancel_pending"], true);
    report("r", JobState::Cancelled);
    let (_, _, body) = get(&mut app, "/v1/print-jobs/r", key).await;
    assert_eq!(body["state"], "cancelled");

    // Finished: 409 with the state.
    for (id, end) in [
        ("p", JobState::Printed),
        ("f", JobState::Failed),
        ("e", JobState::Expired),
    ] {
        add(id);
        report(id, end);
        let (status, body) =
            post_empty(&mut app, &format!("/v1/print-jobs/{id}/cancel"), key).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "not_cancellable");
        assert_eq!(body["error"]["state"], end.as_str());
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(end.as_str()), "{message}");
    }

    let (status, body) = post_empty(&mut app, "/v1/print-jobs/nope/cancel", key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "job_not_found");
}
