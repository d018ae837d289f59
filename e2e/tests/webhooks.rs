//! Webhooks: signed, in order, retried until a 2xx, durable across a
//! gateway restart.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use kiosk_e2e::{FleetOptions, TestFleet, WAIT, WEBHOOK_SECRET};
use serde_json::{Value, json};
use sha2::Sha256;

#[derive(Default)]
struct Receiver {
    /// Answer 500 to this many requests first.
    fail_next: usize,
    /// Delivered (2xx) events: (headers, body).
    delivered: Vec<(HeaderMap, Value)>,
    attempts: usize,
}

type Shared = Arc<Mutex<Receiver>>;

async fn hook(State(r): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut r = r.lock().unwrap();
    r.attempts += 1;
    // Verify the signature like a backend would.
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if headers
        .get("x-kiosk-signature")
        .and_then(|v| v.to_str().ok())
        != Some(want.as_str())
    {
        return StatusCode::UNAUTHORIZED;
    }
    if r.fail_next > 0 {
        r.fail_next -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.delivered
        .push((headers, serde_json::from_slice(&body).unwrap_or_default()));
    StatusCode::NO_CONTENT
}

async fn receiver(state: Shared) -> SocketAddr {
    let app = Router::new().route("/hooks", post(hook)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn types(r: &Shared) -> Vec<String> {
    r.lock()
        .unwrap()
        .delivered
        .iter()
        .map(|(_, b)| b["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test]
async fn webhooks_are_signed_ordered_retried_and_survive_a_restart() {
    let state: Shared = Arc::new(Mutex::new(Receiver {
        fail_next: 2,
        ..Receiver::default()
    }));
    let addr = receiver(state.clone()).await;
    let mut opts = FleetOptions::new(&["k1"]);
    opts.webhook_url = Some(format!("http://{addr}/hooks"));
    let mut fleet = TestFleet::start_with(opts).await;

    let s = fleet.open_session("k1", 1000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    let kiosk = fleet.mqtt_client("k1", "k1").await;
    kiosk
        .publish(
            "kiosk/k1/cash",
            &json!({"v": 1, "outbox": "00000000000000aa", "seq": 1, "kind": "bill",
                    "amount": 1000, "currency": "EUR", "at": "2026-11-21T10:00:00Z",
                    "session_id": id}),
        )
        .await;
    let delivered = kiosk_e2e::wait_for(WAIT, || async { types(&state).len() == 3 }).await;
    assert!(delivered, "got {:?}", types(&state));
    assert_eq!(
        types(&state),
        [
            "cash_session.opened",
            "cash_session.credit",
            "cash_session.paid"
        ]
    );
    {
        let r = state.lock().unwrap();
        assert!(r.attempts >= 5, "two failures were retried");
        let ids: Vec<u64> = r
            .delivered
            .iter()
            .map(|(h, b)| {
                let header = h["x-kiosk-delivery"].to_str().unwrap().to_owned();
                assert_eq!(b["id"].as_str(), Some(header.as_str()));
                assert_eq!(
                    h["x-kiosk-event"].to_str().unwrap(),
                    b["type"].as_str().unwrap()
                );
                header.parse().unwrap()
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
        let paid = &r.delivered[2].1;
        assert_eq!(paid["data"]["session"]["session_id"], id.as_str());
        assert_eq!(paid["data"]["session"]["state"], "paid");
        assert_eq!(r.delivered[1].1["data"]["credit"]["amount"], 1000);
    }

    // The backend is down: the next event waits in the store through a
    // gateway restart, and goes out once the backend is back.
    state.lock().unwrap().fail_next = usize::MAX;
    let s2 = fleet.open_session("k1", 500).await;
    kiosk_e2e::wait_for(WAIT, || async { state.lock().unwrap().attempts >= 7 }).await;
    drop(kiosk);
    fleet.stop_gateway().await;
    fleet.start_gateway().await;
    state.lock().unwrap().fail_next = 0;
    let delivered = kiosk_e2e::wait_for(WAIT, || async { types(&state).len() == 4 }).await;
    assert!(delivered, "got {:?}", types(&state));
    let r = state.lock().unwrap();
    assert_eq!(r.delivered[3].1["type"], "cash_session.opened");
    assert_eq!(
        r.delivered[3].1["data"]["session"]["session_id"],
        s2["session_id"]
    );
}
