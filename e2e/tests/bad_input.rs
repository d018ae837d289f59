//! Bad input is refused with a reason and breaks nothing; wrong credentials
//! are refused.

use std::time::Duration;

use kiosk_e2e::mqtt::Client;
use kiosk_e2e::{TestFleet, count_with, text_job};
use kiosk_testkit::FakePrinter;
use serde_json::{Value, json};

#[tokio::test]
async fn bad_jobs_on_the_print_topic_fail_with_a_reason_and_break_nothing() {
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let backend = fleet.mqtt_client("backend-bad", "backend").await;

    // Not JSON at all: no job id to answer to, only a log line.
    backend
        .publish_bytes("kiosk/k1/print", b"{\"v\":1,\"job_id\":\"x\"".to_vec())
        .await;
    backend
        .publish_bytes("kiosk/k1/print", vec![0xff, 0x00, 0x13])
        .await;
    // Readable id, unusable job: `failed` with the reason.
    backend
        .publish(
            "kiosk/k1/print",
            &json!({"v": 1, "job_id": "no-doc", "printer": "receipt"}),
        )
        .await;
    backend
        .publish(
            "kiosk/k1/print",
            &json!({"v": 1, "job_id": "bad-kind", "printer": "receipt", "document": {"kind": "pdf"}}),
        )
        .await;
    backend
        .publish(
            "kiosk/k1/print",
            &json!({"v": 1, "job_id": "no-printer", "printer": "laser", "document": {"kind": "text", "text": "x"}}),
        )
        .await;
    backend
        .publish(
            "kiosk/k1/print",
            &json!({"v": 2, "job_id": "future", "printer": "receipt", "document": {"kind": "text", "text": "x"}}),
        )
        .await;
    // Over the agent's 512 KiB job limit, under the broker's 1 MiB.
    let big = "A".repeat(600 * 1024);
    backend
        .publish(
            "kiosk/k1/print",
            &json!({"v": 1, "job_id": "too-big", "printer": "receipt", "document": {"kind": "text", "text": big}}),
        )
        .await;

    for (id, needle) in [
        ("no-doc", "document"),
        ("bad-kind", "pdf"),
        ("no-printer", "laser"),
        ("future", "version 2"),
        ("too-big", "too large"),
    ] {
        let job = fleet.wait_job(id, "failed").await;
        let reason = job["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(needle),
            "{id}: reason {reason:?} should mention {needle:?}"
        );
    }

    // Over the broker's payload limit: the broker drops the publisher.
    let rogue = fleet.mqtt_client("backend-rogue", "backend").await;
    rogue
        .publish_bytes("kiosk/k1/print", vec![b'x'; 1536 * 1024])
        .await;
    let closed = kiosk_e2e::wait_for(Duration::from_secs(5), || async { rogue.is_closed() }).await;
    assert!(
        closed,
        "the broker should close a client sending an oversized payload"
    );

    // Everything still works.
    let ok = fleet.create_job("k1", text_job("STILL-ALIVE\n")).await;
    fleet.wait_job(&ok, "printed").await;
    assert_eq!(count_with(&printer.jobs(), "STILL-ALIVE"), 1);
    assert_eq!(printer.jobs().len(), 1, "none of the bad jobs printed");
    let (status, _) = fleet.get("/healthz").await;
    assert_eq!(status, 200);
    agent.shutdown().await;
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn invalid_http_requests_get_json_errors() {
    let fleet = TestFleet::start(&["k1"]).await;
    let post_raw = |path: &'static str, body: Vec<u8>| {
        let req = fleet
            .request(reqwest::Method::POST, path)
            .bearer_auth(&fleet.api_key)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "/v1/kiosks/k1/print-jobs",
            b"not json".to_vec(),
            400,
            "invalid_request",
            "JSON",
        ),
        (
            "/v1/kiosks/k1/print-jobs",
            br#"{"document":{"kind":"text","text":"x"}}"#.to_vec(),
            400,
            "invalid_request",
            "printer",
        ),
        (
            "/v1/kiosks/k1/print-jobs",
            br#"{"printer":"receipt","document":{"kind":"pdf"}}"#.to_vec(),
            400,
            "invalid_request",
            "pdf",
        ),
        (
            "/v1/kiosks/k1/print-jobs",
            br#"{"printer":"receipt","copies":0,"document":{"kind":"text","text":"x"}}"#.to_vec(),
            400,
            "invalid_request",
            "copies",
        ),
        (
            "/v1/kiosks/k1/print-jobs",
            br#"{"printer":"receipt","document":{"kind":"raw","data":"%%%"}}"#.to_vec(),
            400,
            "invalid_request",
            "base64",
        ),
        (
            "/v1/kiosks/k1/print-jobs",
            br#"{"printer":"Receipt Printer","document":{"kind":"text","text":"x"}}"#.to_vec(),
            400,
            "invalid_request",
            "printer",
        ),
        (
            "/v1/kiosks/k1/print-jobs",
            br#"{"printer":"receipt","expires_in_s":0,"document":{"kind":"text","text":"x"}}"#
                .to_vec(),
            400,
            "invalid_request",
            "expires_in_s",
        ),
        (
            "/v1/kiosks/nope/print-jobs",
            br#"{"printer":"receipt","document":{"kind":"text","text":"x"}}"#.to_vec(),
            404,
            "kiosk_not_found",
            "nope",
        ),
        (
            "/v1/kiosks/k1/print-jobs",
            vec![b' '; 2 * 1024 * 1024],
            413,
            "payload_too_large",
            "bytes",
        ),
    ];
    for (path, body, status, code, needle) in cases {
        let (got, resp) = post_raw(path, body).await;
        assert_eq!(got, status, "{path}: {resp}");
        assert_eq!(error_code(&resp), code, "{resp}");
        let message = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "message {message:?} should mention {needle:?}"
        );
    }
    let (status, resp) = fleet.get("/v1/print-jobs/does-not-exist").await;
    assert_eq!((status, error_code(&resp)), (404, "job_not_found"));
    // The refused body is counted.
    let metrics = fleet
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kiosk_http_refused_total{reason=\"body_too_large\"} 1"),
        "{metrics}"
    );
    // Nothing was stored by any of them.
    let (_, kiosk) = fleet.get("/v1/kiosks/k1").await;
    assert_eq!(kiosk["pending_jobs"], 0);
}

#[tokio::test]
async fn missing_or_wrong_api_key_is_401() {
    let fleet = TestFleet::start(&["k1"]).await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic dXNlcjpwYXNz"),
        Some(fleet.api_key.as_str()),
    ] {
        let mut req = fleet.request(reqwest::Method::GET, "/v1/kiosks");
        if let Some(a) = auth {
            let value = if a == fleet.api_key {
                format!("Bearer {a}")
            } else {
                a.to_owned()
            };
            req = req.header("authorization", value);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if auth == Some(fleet.api_key.as_str()) {
            assert_eq!(status, 200, "{body}");
        } else {
            assert_eq!(status, 401, "{auth:?}");
            assert_eq!(error_code(&body), "unauthorized");
        }
    }
    // Health and metrics are open, for load balancers and Prometheus.
    let resp = fleet
        .request(reqwest::Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn wrong_mqtt_password_or_anonymous_is_refused() {
    let fleet = TestFleet::start(&["k1"]).await;
    assert!(
        Client::connect(fleet.mqtt_addr, "k1", "k1", "wrong")
            .await
            .is_err()
    );
    assert!(
        Client::connect(fleet.mqtt_addr, "x", "nobody", "x")
            .await
            .is_err()
    );
    // A kiosk must use its own id as client id.
    assert!(
        Client::connect(fleet.mqtt_addr, "k2", "k1", &fleet.secrets["k1"])
            .await
            .is_err()
    );
    let mut anon = rumqttc::MqttOptions::new("anon", "127.0.0.1", fleet.mqtt_addr.port());
    anon.set_keep_alive(Duration::from_secs(5));
    assert!(Client::connect_with(anon).await.is_err());
    // The real password works.
    assert!(
        Client::connect(fleet.mqtt_addr, "k1", "k1", &fleet.secrets["k1"])
            .await
            .is_ok()
    );

    // mosquitto_sub with a wrong password gives up with an error.
    let out = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &fleet.mqtt_addr.port().to_string()])
        .args([
            "-u",
            "technician",
            "-P",
            "wrong",
            "-t",
            "kiosk/#",
            "-C",
            "1",
            "-W",
            "3",
        ])
        .output()
        .await
        .expect("mosquitto_sub is installed (scripts/test.sh)");
    assert!(!out.status.success());
}
