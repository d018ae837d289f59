//! Issue 10, finding 4: idle HTTP sockets must not take the process down.
//!
//! Real peers on ephemeral ports: raw TCP sockets that never finish their
//! headers (a slowloris), reqwest bound to other loopback addresses
//! (127.0.0.2, ...) as clients behind other NATs, and an MQTT client of
//! the embedded broker. Waiting is on observable effects (the server
//! closing a socket, a counter in `/metrics`) with generous upper bounds,
//! never on how fast something happened; the timeouts under test are
//! made much shorter or much longer than those bounds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use kiosk_e2e::{FleetOptions, TestFleet, WAIT, sse_events, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Longest wait for the server to close a socket.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// An HTTP client whose connections come from `from`.
fn client_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from)
        .build()
        .expect("reqwest client")
}

/// The value of one line of `/metrics`, asked from `from` (0 when absent).
async fn metric(fleet: &TestFleet, from: IpAddr, series: &str) -> u64 {
    let Ok(resp) = client_from(from)
        .get(format!("{}/metrics", fleet.http_base))
        .send()
        .await
    else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_metric(fleet: &TestFleet, from: IpAddr, series: &str, at_least: u64) {
    let reached = wait_for(WAIT, || async {
        metric(fleet, from, series).await >= at_least
    })
    .await;
    assert!(
        reached,
        "{series} never reached {at_least} (now {})",
        metric(fleet, from, series).await
    );
}

fn refused(reason: &str) -> String {
    format!("kiosk_http_connections_refused_total{{reason=\"{reason}\"}}")
}

/// True when the server closed `stream` (EOF or reset) within
/// [`CLOSE_WAIT`]; whatever it sent before is skipped.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// `GET /healthz` from `from` answers 200.
async fn healthy_from(fleet: &TestFleet, from: IpAddr) -> bool {
    match client_from(from)
        .get(format!("{}/healthz", fleet.http_base))
        .send()
        .await
    {
        Ok(resp) => resp.status() == 200,
        Err(_) => false,
    }
}

/// Opens `n` connections from `from` that send half a request and stop.
async fn slow_clients(from: IpAddr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut flood = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = connect_from(from, to).await.expect("connect");
        // The server may already have closed a refused one.
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        flood.push(s);
    }
    flood
}

/// Lowers this test process's soft open-files limit (nextest runs each
/// test in its own process), as a VPS with a small `LimitNOFILE` would
/// have; the gateway reads it at start.
fn lower_open_files_limit(soft: u64) {
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={soft}:")])
        .output()
        .expect("prlimit (util-linux) is installed");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Test 1: hundreds of sockets that never finish their headers, from one
/// address and then from two more, against a gateway whose open-files
/// limit is 1024. The per-address cap and the overall cap (a quarter of
/// the descriptors, so the broker keeps the rest) refuse the excess at
/// once; `/healthz` from another address and MQTT logins keep working
/// during the flood; the header timeout closes every slow socket.
#[tokio::test]
async fn slow_clients_are_closed_while_healthz_and_mqtt_logins_keep_working() {
    lower_open_files_limit(1024);
    let mut opts = FleetOptions::new(&["k1"]);
    // max_connections is capped to (1024 - 256) / 4 = 192 by the limit.
    opts.http_extra = "header_read_timeout = \"3s\"\nmax_connections = 100000\nmax_connections_per_address = 150\n".into();
    let fleet = TestFleet::start_with(opts).await;
    let http = fleet.gateway_config.http.listen;

    // 200 from 127.0.0.1: 150 held, 50 refused per address.
    let mut flood = slow_clients(loopback(1), http, 200).await;
    assert!(
        healthy_from(&fleet, loopback(2)).await,
        "/healthz from another address during the flood"
    );
    let probe = fleet.mqtt_client("technician-probe-1", "technician").await;
    drop(probe);
    // 220 more from two other addresses: the overall cap (192) refuses
    // at least 28 of them whether or not the first ones are still open.
    flood.extend(slow_clients(loopback(3), http, 110).await);
    flood.extend(slow_clients(loopback(4), http, 110).await);
    let probe = fleet.mqtt_client("technician-probe-2", "technician").await;
    drop(probe);

    // Every socket is closed by the server: refused ones at once, held
    // ones at the header timeout.
    let closed = futures::future::join_all(flood.iter_mut().map(closed_by_server)).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        open, 0,
        "{open} slow sockets still open after {CLOSE_WAIT:?}"
    );

    assert!(
        healthy_from(&fleet, loopback(1)).await,
        "/healthz after the flood"
    );
    let _probe = fleet.mqtt_client("technician-probe-3", "technician").await;
    // The harness's own keep-alive connections from 127.0.0.1 hold a
    // place or two of both caps: lower bounds only.
    wait_metric(&fleet, loopback(5), &refused("per_address"), 48).await;
    wait_metric(&fleet, loopback(5), &refused("max_connections"), 26).await;
    wait_metric(&fleet, loopback(5), &refused("header_timeout"), 185).await;
    let settled = wait_for(WAIT, || async {
        metric(&fleet, loopback(5), "kiosk_http_connections").await <= 2
    })
    .await;
    assert!(settled, "kiosk_http_connections did not go back down");
}

/// Test 2: over `max_connections_per_address` a new connection is closed
/// right after accept (the header timeout is 5 minutes, so it is not
/// what closed it) and counted; over `max_sse_streams` the event stream
/// is answered `503 too_many_streams`, and a place frees when a stream
/// ends.
#[tokio::test]
async fn caps_refuse_excess_connections_at_once_and_excess_event_streams_with_503() {
    let mut opts = FleetOptions::new(&["k1"]);
    opts.http_extra =
        "header_read_timeout = \"5m\"\nmax_connections_per_address = 3\nmax_sse_streams = 1\n"
            .into();
    let fleet = TestFleet::start_with(opts).await;
    let http = fleet.gateway_config.http.listen;
    let other = loopback(2);

    // Event streams first (reqwest from 127.0.0.2, one connection each).
    let s = fleet.open_session("k1", 1000).await;
    let url = format!(
        "{}/v1/cash-sessions/{}/events?token={}",
        fleet.http_base,
        s["session_id"].as_str().expect("session_id"),
        s["view_token"].as_str().expect("view_token"),
    );
    let mut first = client_from(other)
        .get(&url)
        .send()
        .await
        .expect("GET events");
    assert_eq!(first.status(), 200);
    assert_eq!(sse_events(&mut first, 1).await[0].0, "session");
    let second = client_from(other)
        .get(&url)
        .send()
        .await
        .expect("GET events");
    assert_eq!(second.status(), 503);
    assert_eq!(
        second.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    let body: serde_json::Value = second.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(metric(&fleet, other, "kiosk_http_sse_streams").await, 1);
    drop(first);
    let freed = wait_for(WAIT, || async {
        client_from(other)
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(freed, "the stream's place was not given back");
    wait_metric(&fleet, other, &refused("max_sse_streams"), 1).await;

    // Three idle connections from 127.0.0.7 (the harness's own client
    // keeps connections from 127.0.0.1) are held; the fourth is closed at
    // once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(loopback(7), http).await.expect("connect"));
    }
    wait_for(WAIT, || async {
        metric(&fleet, other, "kiosk_http_connections").await >= 3
    })
    .await;
    let mut over = connect_from(loopback(7), http).await.expect("connect");
    assert!(
        closed_by_server(&mut over).await,
        "the connection over the per-address cap stayed open"
    );
    wait_metric(&fleet, other, &refused("per_address"), 1).await;
    // The held ones are still open, and other addresses are served.
    for s in &mut held {
        let mut buf = [0u8; 1];
        let still = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
        assert!(still.is_err(), "a held connection was closed: {still:?}");
    }
    assert!(healthy_from(&fleet, other).await);
}

/// Test 3: a client that made one request and then stays idle on the
/// keep-alive connection is closed after `idle_timeout` (1 s; the header
/// timeout is 5 minutes), and counted.
#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let mut opts = FleetOptions::new(&["k1"]);
    opts.http_extra = "header_read_timeout = \"5m\"\nidle_timeout = \"1s\"\n".into();
    let fleet = TestFleet::start_with(opts).await;
    let mut stream = TcpStream::connect(fleet.gateway_config.http.listen)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    // The whole response: headers, then Content-Length bytes.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = |got: &[u8]| {
        let text = String::from_utf8_lossy(got);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })?
            .parse()
            .ok()?;
        (body.len() >= len).then(|| head.lines().next().unwrap_or_default().to_owned())
    };
    let status = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(status) = complete(&got) {
                return status;
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the response was complete");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("response in time");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(
        !text.contains("connection: close"),
        "not kept alive: {text}"
    );
    assert!(
        closed_by_server(&mut stream).await,
        "the idle keep-alive connection stayed open"
    );
    wait_metric(
        &fleet,
        loopback(1),
        "kiosk_http_connections_idle_closed_total",
        1,
    )
    .await;
}

/// Test 4: on HTTPS, a client that never sends its ClientHello is closed
/// after the header timeout, and the API keeps answering over TLS.
#[tokio::test]
async fn https_handshake_that_never_finishes_is_closed_at_the_header_timeout() {
    let mut opts = FleetOptions::new(&["k1"]);
    opts.tls = true;
    let mut fleet = TestFleet::start_with(opts).await;
    let (cert, key, ca) = {
        let pki = fleet.pki.as_ref().expect("pki");
        (
            pki.server_cert.clone(),
            pki.server_key.clone(),
            pki.ca_cert.clone(),
        )
    };
    fleet.stop_gateway().await;
    let mut config = fleet.gateway_config.clone();
    config.http.listen = "127.0.0.1:0".parse().expect("address");
    config.http.tls_cert = Some(cert);
    config.http.tls_key = Some(key);
    config.http.header_read_timeout = Duration::from_secs(1);
    let gateway = kiosk_gateway::Gateway::start(config)
        .await
        .expect("HTTPS gateway");
    let addr = gateway.http_addr();

    let mut silent = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_by_server(&mut silent).await,
        "a socket without a TLS handshake stayed open"
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).expect("CA file")).expect("CA");
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("client");
    let text = client
        .get(format!("https://localhost:{}/metrics", addr.port()))
        .send()
        .await
        .expect("GET /metrics over HTTPS")
        .text()
        .await
        .expect("metrics");
    assert!(
        text.contains(&format!("{} 1", refused("header_timeout"))),
        "{text}"
    );
    gateway.shutdown().await;
}
