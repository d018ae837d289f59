//! Cash sessions against the gateway alone, with the test acting as the
//! kiosk over MQTT (its own client id and credentials): late credits,
//! two-phase cancel and paid, controls re-sent to a kiosk that reconnects,
//! unassigned credits resolved through the API, and all of it across a
//! gateway restart (DESIGN.md, "Cash credits", steps 4-5).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use kiosk_e2e::mqtt::Client;
use kiosk_e2e::{FleetOptions, TestFleet, WAIT, sse_events};
use serde_json::{Value, json};

const OUTBOX: &str = "00000000000000c1";

/// Webhook bodies the backend received, in order.
type Hooks = Arc<Mutex<Vec<Value>>>;

async fn hook(State(h): State<Hooks>, body: Bytes) -> StatusCode {
    h.lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or_default());
    StatusCode::NO_CONTENT
}

async fn receiver(hooks: Hooks) -> SocketAddr {
    let app = Router::new().route("/hooks", post(hook)).with_state(hooks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A fleet with kiosks `k1`, `k2` and a webhook receiver.
async fn fleet_with_hooks() -> (TestFleet, Hooks) {
    let hooks = Hooks::default();
    let addr = receiver(hooks.clone()).await;
    let mut opts = FleetOptions::new(&["k1", "k2"]);
    opts.webhook_url = Some(format!("http://{addr}/hooks"));
    (TestFleet::start_with(opts).await, hooks)
}

fn of_type(hooks: &Hooks, kind: &str) -> Vec<Value> {
    hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h["type"] == kind)
        .cloned()
        .collect()
}

async fn wait_hook(hooks: &Hooks, kind: &str, n: usize) -> Vec<Value> {
    let ok = kiosk_e2e::wait_for(WAIT, || async { of_type(hooks, kind).len() >= n }).await;
    let got = of_type(hooks, kind);
    assert!(ok, "never got {n} {kind}; got {:?}", hooks.lock().unwrap());
    got
}

/// A credit as the kiosk publishes it on `kiosk/<id>/cash`.
fn credit(seq: u64, amount: i64, session: Option<&str>) -> Value {
    let mut c = json!({"v": 1, "outbox": OUTBOX, "seq": seq, "kind": "bill", "amount": amount,
        "currency": "EUR", "at": "2026-11-21T10:00:00Z"});
    if let Some(s) = session {
        c["session_id"] = json!(s);
    }
    c
}

/// The kiosk's confirmation that acceptance for `session` ended.
fn ended(session: &str, last_seq: u64) -> Value {
    json!({"v": 1, "outbox": OUTBOX, "session_id": session, "enabled": false,
        "last_seq": last_seq, "inserted": 0, "at": "2026-11-21T10:00:05Z"})
}

async fn send_credit(kiosk: &Client, seq: u64, amount: i64, session: Option<&str>) {
    kiosk
        .publish("kiosk/k1/cash", &credit(seq, amount, session))
        .await;
}

async fn confirm(kiosk: &Client, session: &str, last_seq: u64) {
    kiosk
        .publish("kiosk/k1/cash/state", &ended(session, last_seq))
        .await;
}

/// `GET` the session now.
async fn session(fleet: &TestFleet, id: &str) -> Value {
    let (status, s) = fleet.get(&format!("/v1/cash-sessions/{id}")).await;
    assert_eq!(status, 200, "{s}");
    s
}

/// Asserts the session stays as `check` says for `d` (polling).
async fn stays(fleet: &TestFleet, id: &str, d: Duration, check: impl Fn(&Value) -> bool) {
    let end = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < end {
        let s = session(fleet, id).await;
        assert!(check(&s), "changed too early: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn events_stream(fleet: &TestFleet, s: &Value) -> reqwest::Response {
    let (id, token) = (
        s["session_id"].as_str().unwrap(),
        s["view_token"].as_str().unwrap(),
    );
    let resp = fleet
        .request(
            reqwest::Method::GET,
            &format!("/v1/cash-sessions/{id}/events?token={token}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

#[tokio::test]
async fn a_late_credit_on_a_paid_session_is_change_and_paid_is_final_only_once_confirmed() {
    let (fleet, hooks) = fleet_with_hooks().await;
    let kiosk = fleet.mqtt_client("k1", "k1").await;
    let s = fleet.open_session("k1", 1000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    let mut sse = events_stream(&fleet, &s).await;
    assert_eq!(sse_events(&mut sse, 1).await[0].0, "session");

    send_credit(&kiosk, 1, 1000, Some(&id)).await;
    let ev = sse_events(&mut sse, 2).await;
    assert_eq!((ev[0].0.as_str(), ev[1].0.as_str()), ("credit", "paid"));
    assert_eq!(ev[1].1["session"]["final"], false);
    // The acceptor kept taking money while the gateway was out of reach:
    // the note belongs to this session, as change.
    send_credit(&kiosk, 2, 500, Some(&id)).await;
    let ev = sse_events(&mut sse, 1).await;
    assert_eq!(ev[0].0, "late_credit", "{ev:?}");
    assert_eq!(ev[0].1["credit"]["amount"], 500);
    assert_eq!(ev[0].1["credit"]["origin"], "late");
    assert_eq!(ev[0].1["session"]["change_due"], 500);
    let late = wait_hook(&hooks, "cash_session.late_credit", 1).await;
    assert_eq!(late[0]["data"]["session"]["change_due"], 500);
    assert_eq!(late[0]["data"]["session"]["amount_inserted"], 1500);
    assert_eq!(late[0]["data"]["credit"]["amount"], 500);
    assert!(
        fleet.get("/v1/kiosks/k1/unassigned-credits").await.1["credits"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing unassigned"
    );

    // Not final until the kiosk confirms the end of acceptance.
    stays(&fleet, &id, Duration::from_millis(800), |s| {
        s["state"] == "paid" && s["final"] == false
    })
    .await;
    assert!(of_type(&hooks, "cash_session.settled").is_empty());
    confirm(&kiosk, &id, 2).await;
    let ev = sse_events(&mut sse, 1).await;
    assert_eq!(ev[0].0, "settled");
    assert_eq!(ev[0].1["session"]["final"], true);
    assert_eq!(ev[0].1["session"]["change_due"], 500);
    // The stream ends once final.
    let rest = tokio::time::timeout(WAIT, sse.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_none(), "stream closed");
    let s = session(&fleet, &id).await;
    assert_eq!(
        (&s["state"], &s["final"], &s["confirmation"]["last_seq"]),
        (&json!("paid"), &json!(true), &json!(2))
    );
    assert!(s["settled_at"].is_string(), "{s}");
    let settled = wait_hook(&hooks, "cash_session.settled", 1).await;
    assert_eq!(settled[0]["data"]["session"]["change_due"], 500);
}

#[tokio::test]
async fn cancel_waits_for_the_kiosk_and_every_credit_up_to_its_last_seq() {
    let (fleet, hooks) = fleet_with_hooks().await;
    let kiosk = fleet.mqtt_client("k1", "k1").await;
    let s = fleet.open_session("k1", 5000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    send_credit(&kiosk, 1, 1000, Some(&id)).await;
    fleet
        .wait_session(&id, |s| s["amount_inserted"] == 1000)
        .await;

    let cancel = format!("/v1/cash-sessions/{id}/cancel");
    let (status, s) = fleet.post(&cancel, &json!({})).await;
    assert_eq!(status, 202, "{s}");
    assert_eq!(
        (&s["state"], &s["refund_due"], &s["final"]),
        (&json!("cancelling"), &json!(1000), &json!(false))
    );
    let (status, again) = fleet.post(&cancel, &json!({})).await;
    assert_eq!(
        (status, &again["state"]),
        (202, &json!("cancelling")),
        "a repeated cancel: {again}"
    );
    wait_hook(&hooks, "cash_session.cancelling", 1).await;
    // The kiosk is offline: nothing confirms.
    stays(&fleet, &id, Duration::from_millis(800), |s| {
        s["state"] == "cancelling" && s["refund_due"] == 1000
    })
    .await;

    // It comes back: acceptance ended at seq 3, but 2 and 3 are still in
    // its outbox.
    confirm(&kiosk, &id, 3).await;
    fleet
        .wait_session(&id, |s| s["confirmation"]["last_seq"] == 3)
        .await;
    stays(&fleet, &id, Duration::from_millis(500), |s| {
        s["state"] == "cancelling"
    })
    .await;
    send_credit(&kiosk, 3, 500, Some(&id)).await;
    fleet.wait_session(&id, |s| s["refund_due"] == 1500).await;
    stays(&fleet, &id, Duration::from_millis(500), |s| {
        s["state"] == "cancelling"
    })
    .await;
    assert!(of_type(&hooks, "cash_session.cancelled").is_empty());
    send_credit(&kiosk, 2, 200, Some(&id)).await;
    let s = fleet.wait_session(&id, |s| s["state"] == "cancelled").await;
    assert_eq!(
        (&s["refund_due"], &s["final"]),
        (&json!(1700), &json!(true))
    );
    assert_eq!(
        s["credits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["origin"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["kiosk", "late", "late"]
    );
    let cancelled = wait_hook(&hooks, "cash_session.cancelled", 1).await;
    assert_eq!(cancelled[0]["data"]["session"]["refund_due"], 1700);
    assert_eq!(
        wait_hook(&hooks, "cash_session.late_credit", 2).await.len(),
        2
    );
    // The confirmation again (the kiosk re-sends it on every connection):
    // nothing changes, no second event.
    confirm(&kiosk, &id, 3).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(of_type(&hooks, "cash_session.cancelled").len(), 1);
    let (status, body) = fleet.post(&cancel, &json!({})).await;
    assert_eq!(status, 409, "{body}");
    // Even a credit after that still goes to its session, as refund.
    send_credit(&kiosk, 4, 100, Some(&id)).await;
    fleet.wait_session(&id, |s| s["refund_due"] == 1800).await;
    let unassigned = fleet.get("/v1/kiosks/k1/unassigned-credits").await.1;
    assert!(
        unassigned["credits"].as_array().unwrap().is_empty(),
        "{unassigned}"
    );
}

/// Every `cash/control` the watcher receives during `d`, as `(action,
/// session_id)`.
async fn controls(watcher: &mut Client, d: Duration) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + d;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let Some(p) = watcher.recv(left).await else {
            break;
        };
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        out.push((
            v["action"].as_str().unwrap_or("?").to_owned(),
            v["session_id"].as_str().unwrap_or("").to_owned(),
        ));
    }
    out
}

fn online_status(connected_at: &str) -> Value {
    json!({"v": 1, "state": "online", "agent_version": "test", "at": connected_at,
        "connected_at": connected_at, "cash": {"connected": true, "enabled": false, "unacked": 0}})
}

#[tokio::test]
async fn a_reconnecting_kiosk_gets_disable_for_each_awaiting_session_then_enable() {
    let fleet = TestFleet::start(&["k1"]).await;
    let kiosk = fleet.mqtt_client("k1", "k1").await;
    let mut watcher = fleet.mqtt_client("technician-1", "technician").await;
    watcher.subscribe("kiosk/k1/cash/control").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let s1 = fleet.open_session("k1", 1000).await;
    let s1 = s1["session_id"].as_str().unwrap().to_owned();
    let (status, _) = fleet
        .post(&format!("/v1/cash-sessions/{s1}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 202);
    // A new session may open while the old one awaits its confirmation.
    let s2 = fleet.open_session("k1", 2000).await;
    let s2 = s2["session_id"].as_str().unwrap().to_owned();
    let _ = controls(&mut watcher, Duration::from_millis(300)).await;

    kiosk
        .publish("kiosk/k1/status", &online_status("2026-11-21T10:00:00Z"))
        .await;
    let got = controls(&mut watcher, Duration::from_millis(1500)).await;
    let disable_s1 = ("disable".to_owned(), s1.clone());
    let enable_s2 = ("enable".to_owned(), s2.clone());
    assert!(
        got.windows(2)
            .any(|w| w[0] == disable_s1 && w[1] == enable_s2),
        "on connect: disable(S1) then enable(S2); got {got:?}"
    );
    assert!(
        got.iter().filter(|c| **c == disable_s1).count() >= 2,
        "disable(S1) is re-sent while the kiosk is online: {got:?}"
    );
    assert!(!got.contains(&("disable".to_owned(), s2.clone())));

    // A new connection gets them again.
    kiosk
        .publish("kiosk/k1/status", &online_status("2026-11-21T10:05:00Z"))
        .await;
    let got = controls(&mut watcher, Duration::from_millis(600)).await;
    assert!(
        got.windows(2)
            .any(|w| w[0] == disable_s1 && w[1] == enable_s2),
        "after a reconnect: {got:?}"
    );

    // Confirmed (no credit taken): cancelled at once, no more disables.
    confirm(&kiosk, &s1, 0).await;
    let s = fleet.wait_session(&s1, |s| s["state"] == "cancelled").await;
    assert_eq!(s["refund_due"], 0);
    let _ = controls(&mut watcher, Duration::from_millis(300)).await;
    let got = controls(&mut watcher, Duration::from_millis(1500)).await;
    assert!(!got.contains(&disable_s1), "{got:?}");
}

#[tokio::test]
async fn unassigned_credits_are_kept_whole_and_resolved_once() {
    let (fleet, hooks) = fleet_with_hooks().await;
    let kiosk = fleet.mqtt_client("k1", "k1").await;
    // Taken with acceptance off (one from a v2 board), one for a session
    // nobody knows, one in another currency.
    let mut c1 = credit(1, 300, None);
    c1["board_boot_id"] = json!("0a1b2c3d");
    c1["board_seq"] = json!(17);
    kiosk.publish("kiosk/k1/cash", &c1).await;
    send_credit(&kiosk, 2, 200, None).await;
    send_credit(&kiosk, 3, 100, Some("01NOSUCHSESSION")).await;
    let mut usd = credit(4, 100, None);
    usd["currency"] = json!("USD");
    kiosk.publish("kiosk/k1/cash", &usd).await;
    let list = fleet
        .wait_get("/v1/kiosks/k1/unassigned-credits", |l| {
            l["credits"].as_array().is_some_and(|c| c.len() == 4)
        })
        .await
        .expect("four unassigned credits");
    let by_id = |list: &Value, id: &str| -> Value {
        list["credits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["credit_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
    };
    let id1 = format!("{OUTBOX}-1");
    let first = by_id(&list, &id1);
    assert_eq!(
        (
            &first["kiosk_id"],
            &first["outbox"],
            &first["seq"],
            &first["board_boot_id"],
            &first["board_seq"],
            &first["unassigned_reason"],
            &first["resolution"],
        ),
        (
            &json!("k1"),
            &json!(OUTBOX),
            &json!(1),
            &json!("0a1b2c3d"),
            &json!(17),
            &json!("no_session"),
            &Value::Null
        ),
        "{first}"
    );
    assert!(first["at"].is_string() && first["received_at"].is_string());
    let third = by_id(&list, &format!("{OUTBOX}-3"));
    assert_eq!(
        (&third["unassigned_reason"], &third["taken_for"]),
        (&json!("unknown_session"), &json!("01NOSUCHSESSION"))
    );
    wait_hook(&hooks, "cash_credit.unassigned", 4).await;

    let s = fleet.open_session("k1", 1000).await;
    let sid = s["session_id"].as_str().unwrap().to_owned();
    let other = fleet.open_session("k2", 1000).await;
    let other = other["session_id"].as_str().unwrap().to_owned();
    let base = "/v1/kiosks/k1/unassigned-credits";
    let post_key = |path: String, body: Value, key: &'static str| {
        let req = fleet
            .request(reqwest::Method::POST, &path)
            .bearer_auth(&fleet.api_key)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let assign1 = format!("{base}/{id1}/assign");
    let (status, a) = post_key(assign1.clone(), json!({"session_id": sid}), "assign-1").await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["credit"]["resolution"]["action"], "assigned");
    assert_eq!(a["credit"]["resolution"]["session_id"], sid.as_str());
    assert_eq!(a["credit"]["resolution"]["by"], "test");
    assert_eq!(a["session"]["amount_inserted"], 300);
    assert_eq!(a["session"]["credits"][0]["origin"], "assigned");
    // Replayed with its key: the same answer, applied once.
    let (status, replay) = post_key(assign1.clone(), json!({"session_id": sid}), "assign-1").await;
    assert_eq!((status, &replay["credit"]), (200, &a["credit"]));
    // The same assignment again without a key: the same, nothing changes.
    let (status, same) = fleet.post(&assign1, &json!({"session_id": sid})).await;
    assert_eq!((status, &same["credit"]), (200, &a["credit"]));
    assert_eq!(session(&fleet, &sid).await["amount_inserted"], 300);
    // The key with another request.
    let (status, body) = post_key(
        format!("{base}/{id1}/refund"),
        json!({"reason": "x"}),
        "assign-1",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // Resolved differently before.
    for (path, body) in [
        (assign1.clone(), json!({"session_id": other})),
        (
            format!("{base}/{id1}/refund"),
            json!({"reason": "given back"}),
        ),
    ] {
        let (status, resp) = fleet.post(&path, &body).await;
        assert_eq!(
            (status, resp["error"]["code"].as_str()),
            (409, Some("credit_already_resolved")),
            "{path}: {resp}"
        );
    }
    // Another kiosk's session, another currency, unknown credit or session.
    let id3 = format!("{OUTBOX}-3");
    let refusals = [
        (
            format!("{base}/{id3}/assign"),
            json!({"session_id": other}),
            422,
            "session_of_other_kiosk",
        ),
        (
            format!("{base}/{OUTBOX}-4/assign"),
            json!({"session_id": sid}),
            422,
            "currency_mismatch",
        ),
        (
            format!("{base}/{OUTBOX}-99/assign"),
            json!({"session_id": sid}),
            404,
            "credit_not_found",
        ),
        (
            format!("{base}/nonsense/refund"),
            json!({"reason": "x"}),
            404,
            "credit_not_found",
        ),
        (
            format!("{base}/{id3}/assign"),
            json!({"session_id": "nope"}),
            404,
            "session_not_found",
        ),
        (
            format!("{base}/{id3}/refund"),
            json!({"reason": ""}),
            400,
            "invalid_request",
        ),
        (
            format!("/v1/kiosks/nope/unassigned-credits/{id3}/refund"),
            json!({"reason": "x"}),
            404,
            "kiosk_not_found",
        ),
    ];
    for (path, body, want, code) in refusals {
        let (status, resp) = fleet.post(&path, &body).await;
        assert_eq!(
            (status, resp["error"]["code"].as_str()),
            (want, Some(code)),
            "{path}: {resp}"
        );
    }

    // Refund, replayed.
    let id2 = format!("{OUTBOX}-2");
    let refund2 = format!("{base}/{id2}/refund");
    let (status, r) = post_key(
        refund2.clone(),
        json!({"reason": "given back at the counter"}),
        "refund-2",
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (
            &r["credit"]["resolution"]["action"],
            &r["credit"]["resolution"]["reason"]
        ),
        (&json!("refunded"), &json!("given back at the counter"))
    );
    let (status, again) = post_key(
        refund2,
        json!({"reason": "given back at the counter"}),
        "refund-2",
    )
    .await;
    assert_eq!((status, &again["credit"]), (200, &r["credit"]));

    // The listing shows every resolution; the events went out once each.
    let (_, list) = fleet.get(base).await;
    assert_eq!(by_id(&list, &id1)["resolution"], a["credit"]["resolution"]);
    assert_eq!(by_id(&list, &id1)["session_id"], sid.as_str());
    assert_eq!(by_id(&list, &id2)["resolution"], r["credit"]["resolution"]);
    assert_eq!(by_id(&list, &id3)["resolution"], Value::Null);
    let assigned = wait_hook(&hooks, "cash_credit.assigned", 1).await;
    assert_eq!(assigned[0]["data"]["session"]["amount_inserted"], 300);
    assert_eq!(assigned[0]["data"]["credit"]["credit_id"], id1.as_str());
    wait_hook(&hooks, "cash_credit.refunded", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(of_type(&hooks, "cash_credit.assigned").len(), 1);
    assert_eq!(of_type(&hooks, "cash_credit.refunded").len(), 1);
    let metrics = reqwest::get(format!("{}/metrics", fleet.http_base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "kiosk_cash_unassigned_resolved_total{action=\"assigned\"} 1",
        "kiosk_cash_unassigned_resolved_total{action=\"refunded\"} 1",
        "kiosk_cash_credits_total{outcome=\"unassigned\"} 4",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_gateway_restart_keeps_awaiting_sessions_confirmations_and_resolutions() {
    let mut fleet = TestFleet::start(&["k1"]).await;
    let kiosk = fleet.mqtt_client("k1", "k1").await;
    let s = fleet.open_session("k1", 5000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    send_credit(&kiosk, 1, 1000, Some(&id)).await;
    send_credit(&kiosk, 3, 50, None).await;
    fleet
        .wait_session(&id, |s| s["amount_inserted"] == 1000)
        .await;
    let (status, _) = fleet
        .post(&format!("/v1/cash-sessions/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 202);
    confirm(&kiosk, &id, 2).await;
    fleet
        .wait_session(&id, |s| s["confirmation"]["last_seq"] == 2)
        .await;
    let paid = fleet.open_session("k1", 500).await;
    let paid = paid["session_id"].as_str().unwrap().to_owned();
    kiosk
        .publish(
            "kiosk/k1/cash",
            &json!({"v": 1, "outbox": "00000000000000c2", "seq": 1,
            "kind": "bill", "amount": 500, "currency": "EUR", "at": "2026-11-21T10:00:00Z",
            "session_id": paid}),
        )
        .await;
    fleet.wait_session(&paid, |s| s["state"] == "paid").await;
    let credit3 = format!("{OUTBOX}-3");
    let (status, r) = fleet
        .post(
            &format!("/v1/kiosks/k1/unassigned-credits/{credit3}/refund"),
            &json!({"reason": "counter"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    drop(kiosk);

    fleet.stop_gateway().await;
    fleet.start_gateway().await;
    let kiosk = fleet.mqtt_client("k1", "k1").await;
    let s = session(&fleet, &id).await;
    assert_eq!(
        (
            &s["state"],
            &s["refund_due"],
            &s["confirmation"]["last_seq"]
        ),
        (&json!("cancelling"), &json!(1000), &json!(2)),
        "{s}"
    );
    let p = session(&fleet, &paid).await;
    assert_eq!((&p["state"], &p["final"]), (&json!("paid"), &json!(false)));
    let (_, list) = fleet.get("/v1/kiosks/k1/unassigned-credits").await;
    assert_eq!(
        list["credits"][0]["resolution"]["action"], "refunded",
        "{list}"
    );
    // The missing credit arrives after the restart: final, everything in.
    send_credit(&kiosk, 2, 200, Some(&id)).await;
    let s = fleet.wait_session(&id, |s| s["state"] == "cancelled").await;
    assert_eq!(s["refund_due"], 1200);
    kiosk
        .publish(
            "kiosk/k1/cash/state",
            &json!({"v": 1, "outbox": "00000000000000c2", "session_id": paid, "enabled": false,
                "last_seq": 1, "inserted": 500, "at": "2026-11-21T10:00:05Z"}),
        )
        .await;
    fleet.wait_session(&paid, |s| s["final"] == true).await;
}
