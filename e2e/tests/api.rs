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

/// `GET` `path` with the API key and `query` (encoded by reqwest).
async fn list(fleet: &TestFleet, path: &str, query: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let resp = fleet
        .request(reqwest::Method::GET, path)
        .bearer_auth(&fleet.api_key)
        .query(query)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or_default(),
    )
}

/// The ids of one page's jobs.
fn ids(page: &serde_json::Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs in {page}"))
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of `path` with `query`, `limit` at a time, following
/// `next_cursor` to the end; `between` runs after each page.
async fn all_pages(
    fleet: &TestFleet,
    path: &str,
    query: &[(&str, &str)],
    limit: usize,
    mut between: impl AsyncFnMut(usize),
) -> Vec<String> {
    let (mut out, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    let limit = limit.to_string();
    loop {
        let mut q = query.to_vec();
        q.push(("limit", &limit));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let (status, page) = list(fleet, path, &q).await;
        assert_eq!(status, 200, "{path} {q:?}: {page}");
        let got = ids(&page);
        out.extend(got.iter().cloned());
        pages += 1;
        between(pages).await;
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(got.len().to_string(), limit, "a cursor after a full page");
                cursor = Some(c.to_owned());
            }
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                return out;
            }
        }
    }
}

#[tokio::test]
async fn print_jobs_are_listed_newest_first_with_filters_and_cursors() {
    let fleet = TestFleet::start(&["k1", "k2"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    // Oldest first: k1 prints 3 and fails 2 (no `laser` on it), k2 (no
    // agent) keeps 4 queued, one of them for `label`.
    let mut created = Vec::new();
    for n in 0..3 {
        created.push(fleet.create_job("k1", text_job(&format!("L{n}\n"))).await);
    }
    for n in 0..2 {
        let body =
            json!({"printer": "laser", "document": {"kind": "text", "text": format!("F{n}")}});
        created.push(fleet.create_job("k1", body).await);
    }
    for n in 0..3 {
        created.push(fleet.create_job("k2", text_job(&format!("Q{n}\n"))).await);
    }
    let label = json!({"printer": "label", "document": {"kind": "text", "text": "LBL"}});
    created.push(fleet.create_job("k2", label).await);
    for id in &created[..3] {
        fleet.wait_job(id, "printed").await;
    }
    for id in &created[3..5] {
        fleet.wait_job(id, "failed").await;
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    let pick = |idx: &[usize]| -> Vec<String> {
        let mut v: Vec<String> = idx.iter().map(|i| created[*i].clone()).collect();
        v.reverse();
        v
    };

    // Everything, two at a time, while a job is created after each page:
    // the new ones sort before the cursor and nothing repeats.
    let seen = all_pages(&fleet, "/v1/print-jobs", &[], 2, async |page| {
        fleet
            .create_job("k2", text_job(&format!("NEW{page}\n")))
            .await;
    })
    .await;
    assert_eq!(seen, newest_first);

    // The first page shows whole jobs.
    let (status, page) = list(&fleet, "/v1/print-jobs", &[("limit", "1")]).await;
    assert_eq!(status, 200, "{page}");
    let job = &page["jobs"][0];
    assert_eq!(job["kiosk_id"], "k2");
    assert_eq!(job["document"]["kind"], "text");
    assert!(
        job["accepted_at"].is_string() && job["history"].is_array(),
        "{job}"
    );
    assert!(page["next_cursor"].is_string(), "{page}");
    let (_, one) = list(&fleet, "/v1/print-jobs", &[("limit", "500")]).await;
    assert!(one["next_cursor"].is_null(), "{one}");
    let new = ids(&one).len() - created.len();
    assert!(new >= 5, "jobs created while paging are listed afterwards");

    // Filters, each and together, on both routes.
    let only_old = |mut v: Vec<String>| {
        v.retain(|id| created.contains(id));
        v
    };
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            "/v1/print-jobs",
            vec![("kiosk_id", "k1")],
            pick(&[0, 1, 2, 3, 4]),
        ),
        ("/v1/print-jobs", vec![("state", "failed")], pick(&[3, 4])),
        (
            "/v1/print-jobs",
            vec![("state", "printed"), ("state", "failed")],
            pick(&[0, 1, 2, 3, 4]),
        ),
        ("/v1/print-jobs", vec![("printer", "label")], pick(&[8])),
        ("/v1/print-jobs", vec![("kiosk_id", "nope")], vec![]),
        ("/v1/kiosks/k1/print-jobs", vec![], pick(&[0, 1, 2, 3, 4])),
        (
            "/v1/kiosks/k1/print-jobs",
            vec![("state", "printed"), ("printer", "receipt")],
            pick(&[0, 1, 2]),
        ),
        (
            "/v1/kiosks/k2/print-jobs",
            vec![("state", "queued"), ("printer", "receipt")],
            pick(&[5, 6, 7]),
        ),
    ];
    for (path, query, want) in &cases {
        let got = only_old(all_pages(&fleet, path, query, 2, async |_| {}).await);
        assert_eq!(&got, want, "{path} {query:?}");
    }
    // Times: strictly after the 3rd job and before the 8th, as each shows.
    let at = |i: usize| {
        let id = created[i].clone();
        let fleet = &fleet;
        async move {
            fleet.job(&id).await["accepted_at"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (after, before) = (at(2).await, at(7).await);
    let query = [
        ("created_after", after.as_str()),
        ("created_before", before.as_str()),
    ];
    let got = all_pages(&fleet, "/v1/print-jobs", &query, 2, async |_| {}).await;
    assert_eq!(got, pick(&[3, 4, 5, 6]));
    let query = [("created_after", after.as_str()), ("state", "printed")];
    let got = all_pages(&fleet, "/v1/kiosks/k1/print-jobs", &query, 1, async |_| {}).await;
    assert!(got.is_empty(), "{got:?}");

    // Bad parameters: 400 with the usual error body.
    for (path, query) in [
        ("/v1/print-jobs", vec![("state", "lost")]),
        ("/v1/print-jobs", vec![("created_after", "yesterday")]),
        (
            "/v1/print-jobs",
            vec![("created_before", "2026-13-01T00:00:00Z")],
        ),
        ("/v1/print-jobs", vec![("limit", "0")]),
        ("/v1/print-jobs", vec![("limit", "501")]),
        ("/v1/print-jobs", vec![("limit", "many")]),
        ("/v1/print-jobs", vec![("limit", "5"), ("limit", "6")]),
        ("/v1/print-jobs", vec![("cursor", "not-a-cursor")]),
        ("/v1/print-jobs", vec![("cursor", "")]),
        ("/v1/print-jobs", vec![("kiosk", "k1")]),
        ("/v1/print-jobs", vec![("kiosk_id", "bad id")]),
        ("/v1/kiosks/k1/print-jobs", vec![("kiosk_id", "k1")]),
        ("/v1/kiosks/k1/print-jobs", vec![("state", "Printed")]),
    ] {
        let (status, body) = list(&fleet, path, &query).await;
        assert_eq!(status, 400, "{path} {query:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // An unknown kiosk answers as the other per-kiosk routes do.
    let (status, body) = list(&fleet, "/v1/kiosks/nope/print-jobs", &[]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("kiosk_not_found"))
    );
    let (status, _) = fleet
        .request(reqwest::Method::GET, "/v1/print-jobs")
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401);
    agent.shutdown().await;
}
