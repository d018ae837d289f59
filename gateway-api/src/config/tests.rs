//! Tests of the gateway configuration.

use super::broker::default_mqtt_listen;
use super::http::default_http_listen;
use super::*;

const MINIMAL: &str = r#"
        [broker]
        credentials = "credentials"
        password = "pw"
        [store]
        path = "/tmp/store"
    "#;

#[test]
fn defaults() {
    let c = GatewayConfig::from_toml(MINIMAL).unwrap();
    let b = c.broker.embedded();
    assert!(b.is_some());
    let b = b.unwrap();
    assert_eq!(c.http.listen, default_http_listen());
    assert_eq!(b.listen, default_mqtt_listen());
    assert_eq!(c.broker.client.username(CLIENT_DEFAULTS), "gateway");
    assert_eq!(b.connections_per_second, 1000);
    assert_eq!(b.failed_logins_per_minute, 10);
    assert_eq!(c.fleet.heartbeat, Duration::from_secs(30));
    assert!(c.http.tls_cert.is_none() && b.tls_cert.is_none());
    assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.http.max_connections, 2048);
    assert_eq!(c.http.max_connections_per_address, 256);
    assert_eq!(c.http.max_sse_streams, 1024);
    assert_eq!(c.http.rate_limit_per_second, 10);
    assert_eq!(c.http.rate_limit_burst, 20);
    assert!(!format!("{c:?}").contains("pw\""));
}

#[test]
fn env_overrides_named_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, MINIMAL).unwrap();
    let env = [
        ("KIOSK_GATEWAY__HTTP__LISTEN", "0.0.0.0:9000"),
        ("KIOSK_GATEWAY__BROKER__LISTEN", "0.0.0.0:1884"),
        ("KIOSK_GATEWAY__HTTP__HEADER_READ_TIMEOUT", "2s 500ms"),
        ("KIOSK_GATEWAY__HTTP__IDLE_TIMEOUT", "90s"),
        ("KIOSK_GATEWAY__HTTP__MAX_CONNECTIONS", "100"),
        ("KIOSK_GATEWAY__HTTP__MAX_CONNECTIONS_PER_ADDRESS", "10"),
        ("KIOSK_GATEWAY__HTTP__MAX_SSE_STREAMS", "5"),
        ("KIOSK_GATEWAY__HTTP__RATE_LIMIT_PER_SECOND", "0"),
        ("KIOSK_GATEWAY__HTTP__RATE_LIMIT_BURST", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let c = GatewayConfig::load_with_env(&file, Some(env)).unwrap();
    assert_eq!(c.http.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(
        c.broker.embedded().unwrap().listen,
        Some("0.0.0.0:1884".parse().unwrap())
    );
    assert_eq!(c.http.header_read_timeout, Duration::from_millis(2500));
    assert_eq!(c.http.idle_timeout, Duration::from_secs(90));
    assert_eq!(c.http.max_connections, 100);
    assert_eq!(c.http.max_connections_per_address, 10);
    assert_eq!(c.http.max_sse_streams, 5);
    // 0 turns the limit off; then the burst does not matter.
    assert_eq!(c.http.rate_limit_per_second, 0);
    assert_eq!(c.http.rate_limit_burst, 0);
}

#[test]
fn tls_keys() {
    let tls = MINIMAL.replace(
        "[broker]",
        "[broker]\nlisten = \"off\"\ntls_cert = \"s.crt\"\ntls_key = \"s.key\"",
    );
    let c = GatewayConfig::from_toml(&tls).unwrap();
    let b = c.broker.embedded().unwrap();
    assert_eq!(b.listen, None);
    assert_eq!(b.tls_listen_addr(), Some("0.0.0.0:8883".parse().unwrap()));

    let ext = MINIMAL.replace(
        "[broker]",
        "[broker]\nembedded = false\nurl = \"mqtts://vps.example.com\"\nca_file = \"ca.crt\"",
    );
    let c = GatewayConfig::from_toml(&ext).unwrap();
    assert_eq!(c.broker.external().unwrap().urls[0].port, 8883);
}

#[test]
fn errors_name_the_key() {
    let ext = MINIMAL.replace("[broker]", "[broker]\nembedded = false");
    let err = GatewayConfig::from_toml(&ext).unwrap_err().to_string();
    assert!(err.contains("broker.url"), "{err}");

    let bad = ext.replace("embedded = false", "embedded = false\nurl = \"http://x\"");
    let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
    assert!(err.contains("broker.url"), "{err}");

    let bad = MINIMAL.replace("credentials = \"credentials\"", "");
    let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
    assert!(err.contains("broker.credentials"), "{err}");

    for (extra, key) in [
        ("listen = \"off\"", "broker.listen"),
        ("tls_cert = \"a\"", "broker.tls_key"),
        (
            "connections_per_second = 0",
            "broker.connections_per_second",
        ),
        (
            "failed_logins_per_minute = 0",
            "broker.failed_logins_per_minute",
        ),
    ] {
        let bad = MINIMAL.replace("[broker]", &format!("[broker]\n{extra}"));
        let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    for (extra, key) in [
        ("header_read_timeout = \"10ms\"", "http.header_read_timeout"),
        ("idle_timeout = \"0s\"", "http.idle_timeout"),
        ("max_connections = 0", "http.max_connections"),
        (
            "max_connections_per_address = 0",
            "http.max_connections_per_address",
        ),
        ("max_sse_streams = 0", "http.max_sse_streams"),
        ("rate_limit_burst = 0", "http.rate_limit_burst"),
        ("rate_limit_per_second = -1", "http.rate_limit_per_second"),
    ] {
        let bad = MINIMAL.replace("[broker]", &format!("[http]\n{extra}\n[broker]"));
        let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    let bad = MINIMAL.replace("[broker]", "[http]\ntls_cert = \"a\"\n[broker]");
    let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
    assert!(err.contains("http.tls_key"), "{err}");
}
