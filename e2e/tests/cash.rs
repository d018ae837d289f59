//! Cash payments end to end: a fake acceptor on a real pty pair → agent
//! outbox → broker → gateway session, exactly once.

use std::time::Duration;

use kiosk_agent::{Agent, AgentConfig};
use kiosk_e2e::mqtt::Client;
use kiosk_e2e::{TestFleet, WAIT, credit_amounts, sse_events};
use kiosk_testkit::{CutProxy, FakeAcceptor, FakePrinter};
use serde_json::{Value, json};

struct Kiosk {
    acceptor: FakeAcceptor,
    printer: FakePrinter,
    _dir: tempfile::TempDir,
}

async fn kiosk() -> Kiosk {
    let dir = tempfile::tempdir().unwrap();
    Kiosk {
        acceptor: FakeAcceptor::start(dir.path()).unwrap(),
        printer: FakePrinter::start().await.unwrap(),
        _dir: dir,
    }
}

impl Kiosk {
    /// Kiosk `k1` with this acceptor and printer, through `proxy` when given.
    fn agent_config(&self, fleet: &TestFleet, proxy: Option<&CutProxy>) -> AgentConfig {
        fleet.cash_agent_config(
            "k1",
            self.printer.addr(),
            self.acceptor.path(),
            proxy.map(CutProxy::addr),
        )
    }

    /// Starts kiosk `k1` and waits until its acceptor is connected.
    async fn start_agent(&self, fleet: &TestFleet, proxy: Option<&CutProxy>) -> Agent {
        let agent = fleet
            .start_agent_with(self.agent_config(fleet, proxy))
            .await;
        fleet.wait_cash_connected("k1", true).await;
        agent
    }
}

async fn insert(k: &Kiosk, lines: &[&str]) {
    for line in lines {
        k.acceptor.send(line).await.unwrap();
    }
}

#[tokio::test]
async fn exact_payment_and_overpayment_with_enable_then_disable() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let agent = k.start_agent(&fleet, None).await;

    let s = fleet.open_session("k1", 2000).await;
    let id = s["session_id"].as_str().unwrap();
    assert_eq!(s["amount_inserted"], 0);
    assert!(k.acceptor.wait_last_command("ENABLE", WAIT).await);
    insert(&k, &["BILL:1000", "BILL:500", "BILL:500"]).await;
    let s = fleet.wait_session(id, |s| s["state"] == "paid").await;
    assert_eq!(credit_amounts(&s), [1000, 500, 500]);
    assert_eq!(
        (s["amount_inserted"].as_i64(), s["change_due"].as_i64()),
        (Some(2000), Some(0))
    );
    assert!(k.acceptor.wait_last_command("DISABLE", WAIT).await);

    let s = fleet.open_session("k1", 2000).await;
    let id = s["session_id"].as_str().unwrap();
    assert!(k.acceptor.wait_last_command("ENABLE", WAIT).await);
    insert(&k, &["BILL:1000", "BILL:2000"]).await;
    let s = fleet.wait_session(id, |s| s["state"] == "paid").await;
    assert_eq!(credit_amounts(&s), [1000, 2000]);
    assert_eq!(s["change_due"], 1000);
    assert!(k.acceptor.wait_last_command("DISABLE", WAIT).await);
    // The board hears the state on opening (DISABLE), then each change;
    // ENABLE repeats every second while enabled (the v2 lease, harmless to
    // a v1 board) and HELLO asks a silent board who it is.
    let mut changes = k.acceptor.commands();
    changes.retain(|c| c != "HELLO");
    changes.dedup();
    if changes.first().map(String::as_str) == Some("DISABLE") {
        // Told before the session's enable arrived.
        changes.remove(0);
    }
    assert_eq!(
        changes,
        ["ENABLE", "DISABLE", "ENABLE", "DISABLE"],
        "{:?}",
        k.acceptor.commands()
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn broker_link_cut_while_50_credits_go_in_loses_and_repeats_nothing() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let proxy = CutProxy::start(fleet.mqtt_addr).await.unwrap();
    let agent = k.start_agent(&fleet, Some(&proxy)).await;
    let s = fleet.open_session("k1", 1_000_000).await;
    let id = s["session_id"].as_str().unwrap();
    assert!(k.acceptor.wait_last_command("ENABLE", WAIT).await);

    let stats = agent.cash_stats().unwrap();
    for i in 0..50u64 {
        if i == 10 {
            proxy.cut();
        }
        if i == 40 {
            proxy.restore();
        }
        k.acceptor.send("COIN:100").await.unwrap();
    }
    assert!(
        kiosk_e2e::wait_for(WAIT, || async {
            stats.credits.load(std::sync::atomic::Ordering::Relaxed) == 50
        })
        .await,
        "the agent recorded all 50"
    );
    let s = fleet
        .wait_session(id, |s| s["amount_inserted"] == 5000)
        .await;
    assert_eq!(credit_amounts(&s).len(), 50);
    // Re-sends after the reconnect changed nothing more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = fleet.wait_session(id, |_| true).await;
    assert_eq!(s["amount_inserted"], 5000);
    let seqs: std::collections::BTreeSet<u64> = s["credits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 50, "each seq once");
    fleet
        .wait_get("/v1/kiosks/k1", |k| k["cash"]["unacked"] == 0)
        .await
        .expect("every credit acknowledged");
    agent.shutdown().await;
}

#[tokio::test]
async fn credits_buffered_beyond_one_send_window_drain_on_acknowledgements_alone() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let proxy = CutProxy::start(fleet.mqtt_addr).await.unwrap();
    let mut config = k.agent_config(&fleet, Some(&proxy));
    // No timer re-send within the test: only acknowledgements move the
    // window past its first SEND_WINDOW credits.
    config.cash.as_mut().unwrap().resend_interval = Duration::from_secs(3600);
    let agent = fleet.start_agent_with(config).await;
    fleet.wait_cash_connected("k1", true).await;
    proxy.cut();
    fleet.wait_kiosk("k1", "offline").await;

    let n = 2 * kiosk_agent::cash::SEND_WINDOW + 50;
    let stats = agent.cash_stats().unwrap();
    for _ in 0..n {
        k.acceptor.send("COIN:1").await.unwrap();
    }
    assert!(
        kiosk_e2e::wait_for(WAIT, || async {
            stats.credits.load(std::sync::atomic::Ordering::Relaxed) == n as u64
        })
        .await,
        "the agent recorded all {n} while offline"
    );
    proxy.restore();
    let list = fleet
        .wait_get("/v1/kiosks/k1/unassigned-credits", |l| {
            l["credits"].as_array().map_or(0, Vec::len) >= n
        })
        .await
        .expect("every buffered credit reaches the gateway");
    let seqs: std::collections::BTreeSet<u64> = list["credits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), n, "each seq once");
    assert_eq!(list["credits"].as_array().unwrap().len(), n, "none twice");
    fleet
        .wait_get("/v1/kiosks/k1", |k| k["cash"]["unacked"] == 0)
        .await
        .expect("every credit acknowledged");
    agent.shutdown().await;
}

/// Every `cash/control` message that arrives within `quiet` of the last.
async fn controls(watcher: &mut Client, quiet: Duration) -> Vec<String> {
    let mut actions = Vec::new();
    while let Some(p) = watcher.recv(quiet).await {
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        actions.push(v["action"].as_str().unwrap_or("?").to_owned());
    }
    actions
}

#[tokio::test]
async fn cash_control_is_sent_again_on_a_reconnect_not_on_every_status() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let proxy = CutProxy::start(fleet.mqtt_addr).await.unwrap();
    let agent = k.start_agent(&fleet, Some(&proxy)).await;
    let mut watcher = fleet.mqtt_client("technician-1", "technician").await;
    watcher.subscribe("kiosk/k1/cash/control").await;
    // Let the subscription settle and the connect-time control pass.
    let _ = controls(&mut watcher, Duration::from_millis(500)).await;

    let s = fleet.open_session("k1", 1_000_000).await;
    let id = s["session_id"].as_str().unwrap();
    assert!(k.acceptor.wait_last_command("ENABLE", WAIT).await);
    // Each credit changes the kiosk's status (unacknowledged count) twice.
    for _ in 0..5 {
        k.acceptor.send("COIN:100").await.unwrap();
        fleet
            .wait_session(id, |s| s["credits"].as_array().map_or(0, Vec::len) >= 1)
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    fleet
        .wait_session(id, |s| s["amount_inserted"] == 500)
        .await;
    fleet
        .wait_get("/v1/kiosks/k1", |k| k["cash"]["unacked"] == 0)
        .await
        .expect("acknowledged");
    assert_eq!(
        controls(&mut watcher, Duration::from_millis(500)).await,
        ["enable"],
        "one enable for the session, none for statuses of the same connection"
    );

    proxy.cut();
    fleet.wait_kiosk("k1", "offline").await;
    proxy.restore();
    fleet.wait_kiosk("k1", "online").await;
    let again = controls(&mut watcher, Duration::from_millis(1000)).await;
    assert_eq!(
        again,
        ["enable"],
        "a new connection gets the current control"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn agent_killed_after_reading_credits_loses_none_and_counts_none_twice() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let proxy = CutProxy::start(fleet.mqtt_addr).await.unwrap();
    let config = k.agent_config(&fleet, Some(&proxy));
    let agent = fleet.start_agent_with(config.clone()).await;
    fleet.wait_cash_connected("k1", true).await;
    let s = fleet.open_session("k1", 100_000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    assert!(k.acceptor.wait_last_command("ENABLE", WAIT).await);

    // Three credits that reach the gateway and are acknowledged.
    insert(&k, &["BILL:1000", "BILL:1000", "BILL:1000"]).await;
    fleet
        .wait_session(&id, |s| s["amount_inserted"] == 3000)
        .await;
    // Five more, read and recorded while the link is down; then the agent
    // dies before it could send them.
    proxy.cut();
    let stats = agent.cash_stats().unwrap();
    insert(
        &k,
        &["COIN:200", "COIN:200", "COIN:200", "COIN:200", "COIN:200"],
    )
    .await;
    assert!(
        kiosk_e2e::wait_for(WAIT, || async {
            stats.credits.load(std::sync::atomic::Ordering::Relaxed) == 8
        })
        .await
    );
    agent.kill().await;
    proxy.restore();

    let agent = fleet.start_agent_with(config).await;
    let s = fleet
        .wait_session(&id, |s| s["amount_inserted"] == 4000)
        .await;
    assert_eq!(
        credit_amounts(&s),
        [1000, 1000, 1000, 200, 200, 200, 200, 200]
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fleet.wait_session(&id, |_| true).await["amount_inserted"],
        4000
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn gateway_restart_mid_session_keeps_session_and_credits() {
    let mut fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let agent = k.start_agent(&fleet, None).await;
    let s = fleet.open_session("k1", 5000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    assert!(k.acceptor.wait_last_command("ENABLE", WAIT).await);
    insert(&k, &["BILL:1000", "BILL:1000"]).await;
    fleet
        .wait_session(&id, |s| s["amount_inserted"] == 2000)
        .await;

    fleet.stop_gateway().await;
    // Money keeps going in while the VPS is down.
    insert(&k, &["BILL:1000"]).await;
    fleet.start_gateway().await;
    let s = fleet
        .wait_session(&id, |s| s["amount_inserted"] == 3000)
        .await;
    assert_eq!(s["state"], "open");
    assert_eq!(credit_amounts(&s), [1000, 1000, 1000]);
    insert(&k, &["BILL:2000"]).await;
    let s = fleet.wait_session(&id, |s| s["state"] == "paid").await;
    assert_eq!(credit_amounts(&s), [1000, 1000, 1000, 2000]);
    assert_eq!(s["change_due"], 0);
    agent.shutdown().await;
}

#[tokio::test]
async fn the_same_cash_event_delivered_three_times_counts_once() {
    let fleet = TestFleet::start(&["k1"]).await;
    let s = fleet.open_session("k1", 5000).await;
    let id = s["session_id"].as_str().unwrap();
    // Acting as the kiosk itself (its client id and credentials).
    let mut kiosk = fleet.mqtt_client("k1", "k1").await;
    kiosk.subscribe("kiosk/k1/cash/ack").await;
    let event = json!({"v": 1, "outbox": "0123456789abcdef", "seq": 1, "kind": "bill",
        "amount": 1000, "currency": "EUR", "at": "2026-11-21T10:00:00Z", "session_id": id});
    for _ in 0..3 {
        kiosk.publish("kiosk/k1/cash", &event).await;
    }
    let s = fleet
        .wait_session(id, |s| s["amount_inserted"] == 1000)
        .await;
    assert_eq!(credit_amounts(&s), [1000]);
    // Acknowledged (copies handled in one batch share one ack), always
    // with the same watermark.
    let ack = kiosk.recv(WAIT).await.expect("cash ack");
    let ack: Value = serde_json::from_slice(&ack.payload).unwrap();
    assert_eq!(
        ack,
        json!({"v": 1, "outbox": "0123456789abcdef", "up_to_seq": 1})
    );
    while let Some(more) = kiosk.recv(Duration::from_millis(300)).await {
        let more: Value = serde_json::from_slice(&more.payload).unwrap();
        assert_eq!(more, ack);
    }
    assert_eq!(
        fleet.wait_session(id, |_| true).await["amount_inserted"],
        1000
    );
    // A later copy, in its own batch, is acknowledged again and counts nothing.
    kiosk.publish("kiosk/k1/cash", &event).await;
    let again = kiosk.recv(WAIT).await.expect("ack of the late copy");
    assert_eq!(
        serde_json::from_slice::<Value>(&again.payload).unwrap(),
        ack
    );
    assert_eq!(
        fleet.wait_session(id, |_| true).await["amount_inserted"],
        1000
    );
    // Operators see it too: one credit counted, the copies as duplicates.
    let metrics = reqwest::get(format!("{}/metrics", fleet.http_base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome: &str| -> u64 {
        let prefix = format!("kiosk_cash_credits_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    assert_eq!(count("session"), 1, "{metrics}");
    assert!(count("duplicate") >= 3, "{metrics}");
}

/// A v1 board does not hold a lease and may still report money after
/// `DISABLE`: a note read within the grace after it is the cancelled
/// session's refund (a late credit), one read later is unassigned.
#[tokio::test]
async fn a_credit_during_the_cancel_is_refunded_and_one_after_it_is_unassigned() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let agent = k.start_agent(&fleet, None).await;
    let s = fleet.open_session("k1", 5000).await;
    let id = s["session_id"].as_str().unwrap();
    assert!(k.acceptor.wait_last_command("ENABLE", WAIT).await);
    insert(&k, &["BILL:1000"]).await;
    fleet
        .wait_session(id, |s| s["amount_inserted"] == 1000)
        .await;
    let (status, s) = fleet
        .post(&format!("/v1/cash-sessions/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 202, "{s}");
    assert_eq!(s["refund_due"], 1000, "{s}");
    assert!(k.acceptor.wait_last_command("DISABLE", WAIT).await);
    // A note pushed in during the cancel.
    insert(&k, &["BILL:500"]).await;
    let s = fleet
        .wait_session(id, |s| s["state"] == "cancelled" && s["refund_due"] == 1500)
        .await;
    assert_eq!(credit_amounts(&s), [1000, 500]);
    // Long after the acceptor was told to stop.
    tokio::time::sleep(kiosk_agent::cash::DISABLE_GRACE * 2).await;
    insert(&k, &["COIN:200"]).await;
    let list = fleet
        .wait_get("/v1/kiosks/k1/unassigned-credits", |l| {
            l["credits"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await
        .expect("unassigned credit");
    assert_eq!(list["credits"][0]["amount"], 200);
    assert_eq!(list["credits"][0]["session_id"], Value::Null);
    assert_eq!(fleet.wait_session(id, |_| true).await["refund_due"], 1500);
    let (status, _) = fleet
        .post(&format!("/v1/cash-sessions/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409, "cancelling a cancelled session is a conflict");
    agent.shutdown().await;
}

#[tokio::test]
async fn garbled_lines_make_no_credit_and_a_replugged_port_is_picked_up() {
    let fleet = TestFleet::start(&["k1"]).await;
    let mut k = kiosk().await;
    let agent = k.start_agent(&fleet, None).await;
    let s = fleet.open_session("k1", 5000).await;
    let id = s["session_id"].as_str().unwrap();
    assert!(k.acceptor.wait_last_command("ENABLE", WAIT).await);
    let stats = agent.cash_stats().unwrap();
    k.acceptor.send("BILL:abc").await.unwrap();
    k.acceptor.send("FOO").await.unwrap();
    k.acceptor.send("BILL:-100").await.unwrap();
    k.acceptor.send_bytes(b"\x00\xff\x13\x37\n").await.unwrap();
    k.acceptor.send_bytes(&[b'7'; 300]).await.unwrap();
    k.acceptor.send_bytes(b"\nCOIN:200\n").await.unwrap();
    let s = fleet
        .wait_session(id, |s| s["amount_inserted"] == 200)
        .await;
    assert_eq!(credit_amounts(&s), [200], "only the valid line counted");
    assert_eq!(
        stats.malformed.load(std::sync::atomic::Ordering::Relaxed),
        5
    );

    k.acceptor.unplug();
    fleet.wait_cash_connected("k1", false).await;
    k.acceptor.replug().unwrap();
    fleet.wait_cash_connected("k1", true).await;
    // The new port is told the current state again.
    assert!(k.acceptor.wait_last_command("ENABLE", WAIT).await);
    k.acceptor.send("BILL:500").await.unwrap();
    let s = fleet
        .wait_session(id, |s| s["amount_inserted"] == 700)
        .await;
    assert_eq!(credit_amounts(&s), [200, 500]);
    agent.shutdown().await;
}

#[tokio::test]
async fn sse_stream_delivers_credit_and_paid() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let agent = k.start_agent(&fleet, None).await;
    let s = fleet.open_session("k1", 1500).await;
    let id = s["session_id"].as_str().unwrap();
    let token = s["view_token"].as_str().unwrap();
    let mut resp = fleet
        .request(
            reqwest::Method::GET,
            &format!("/v1/cash-sessions/{id}/events?token={token}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = sse_events(&mut resp, 1).await;
    assert_eq!(first[0].0, "session");
    assert_eq!(first[0].1["session"]["amount_inserted"], 0);
    // Money only goes in once the acceptor is enabled for this session.
    assert!(k.acceptor.wait_last_command("ENABLE", WAIT).await);
    insert(&k, &["BILL:1000"]).await;
    let ev = sse_events(&mut resp, 1).await;
    assert_eq!(ev[0].0, "credit");
    assert_eq!(ev[0].1["credit"]["amount"], 1000);
    assert_eq!(ev[0].1["session"]["amount_inserted"], 1000);
    assert_eq!(ev[0].1["session"]["remaining"], 500);
    insert(&k, &["BILL:1000"]).await;
    let ev = sse_events(&mut resp, 2).await;
    assert_eq!((ev[0].0.as_str(), ev[1].0.as_str()), ("credit", "paid"));
    assert_eq!(ev[1].1["session"]["change_due"], 500);
    // The kiosk confirms the disable: the totals are final.
    let ev = sse_events(&mut resp, 1).await;
    assert_eq!(ev[0].0, "settled");
    assert_eq!(ev[0].1["session"]["final"], true);
    // The stream ends once the session is final.
    let rest = tokio::time::timeout(WAIT, resp.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_none(), "stream closed");
    agent.shutdown().await;
}

#[tokio::test]
async fn pay_page_and_events_need_the_sessions_own_view_token() {
    let fleet = TestFleet::start(&["k1", "k2"]).await;
    let a = fleet.open_session("k1", 1000).await;
    let b = fleet.open_session("k2", 1000).await;
    let (ida, ta) = (
        a["session_id"].as_str().unwrap(),
        a["view_token"].as_str().unwrap(),
    );
    let tb = b["view_token"].as_str().unwrap();
    let get = |path: String| {
        let req = fleet.request(reqwest::Method::GET, &path);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
    };
    for path in [
        format!("/pay/{ida}"),
        format!("/pay/{ida}?token={tb}"),
        format!("/pay/{ida}?token={}", fleet.api_key),
        format!("/pay/{ida}?token="),
        format!("/v1/cash-sessions/{ida}/events"),
        format!("/v1/cash-sessions/{ida}/events?token={tb}"),
    ] {
        let (status, body) = get(path.clone()).await;
        assert_eq!(status, 401, "{path}");
        assert!(
            !body.contains("1000") && !body.contains("order"),
            "{path} shows nothing: {body}"
        );
    }
    let (status, body) = get(format!("/pay/{ida}?token={ta}")).await;
    assert_eq!(status, 200);
    assert!(body.contains("0.00 EUR of 10.00 EUR inserted"), "{body}");
    // The backend's API key opens the stream but never the page.
    let resp = fleet
        .request(
            reqwest::Method::GET,
            &format!("/v1/cash-sessions/{ida}/events"),
        )
        .bearer_auth(&fleet.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The view token does not open the backend API.
    let resp = fleet
        .request(reqwest::Method::GET, &format!("/v1/cash-sessions/{ida}"))
        .bearer_auth(ta)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn session_api_errors() {
    let fleet = TestFleet::start(&["k1"]).await;
    for (body, status) in [
        (
            json!({"kiosk_id": "k1", "order_id": "1", "amount_due": 0, "currency": "EUR"}),
            400,
        ),
        (
            json!({"kiosk_id": "k1", "order_id": "1", "amount_due": 100, "currency": "eur"}),
            400,
        ),
        (
            json!({"kiosk_id": "nope", "order_id": "1", "amount_due": 100, "currency": "EUR"}),
            404,
        ),
        (
            json!({"kiosk_id": "k1", "amount_due": 100, "currency": "EUR"}),
            400,
        ),
    ] {
        let (got, resp) = fleet.post("/v1/cash-sessions", &body).await;
        assert_eq!(got, status, "{body} → {resp}");
    }
    fleet.open_session("k1", 100).await;
    let (got, resp) = fleet
        .post(
            "/v1/cash-sessions",
            &json!({"kiosk_id": "k1", "order_id": "2", "amount_due": 100, "currency": "EUR"}),
        )
        .await;
    assert_eq!(got, 409, "one open session per kiosk: {resp}");
    let (got, resp) = fleet.get("/v1/cash-sessions/nope").await;
    assert_eq!(
        (got, resp["error"]["code"].as_str()),
        (404, Some("session_not_found"))
    );
}
