//! The `kiosk-gateway broker-config` command itself: the config file's
//! `broker.credentials`, kiosks added with `kiosk add --out`, secrets from
//! their provisioning files and from stdin, the files it prints, and that
//! no secret shows in its output. (The brokers configured by it are in
//! `e2e/tests/broker_config.rs`.)

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn gateway(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiosk-gateway"))
        .arg("--config")
        .arg(dir.join("gateway.toml"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn broker_config_from_provisioning_files_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("gateway.toml"),
        format!(
            "[broker]\nembedded = false\nurl = \"mqtt://127.0.0.1:1883\"\ncredentials = \"{}\"\npassword = \"gw\"\n[store]\npath = \"{}\"\n",
            d.join("credentials").display(),
            d.join("store").display()
        ),
    )
    .unwrap();
    std::fs::create_dir(d.join("prov")).unwrap();
    for kiosk in ["kiosk-7", "kiosk-8"] {
        let out = format!("prov/{kiosk}.credentials.json");
        let add = gateway(d, &["kiosk", "add", kiosk, "--out", &out], "");
        assert!(add.status.success(), "{}", text(&add.stderr));
    }
    let gw_hash = kiosk_broker::hash_generated_secret(&kiosk_schemas::Secret::new("gw"));
    kiosk_broker::set_password(
        &d.join("credentials"),
        "gateway",
        kiosk_broker::Role::Gateway,
        &gw_hash,
    )
    .unwrap();

    // Without the gateway's secret: an error naming it, nothing written.
    let out = gateway(
        d,
        &[
            "broker-config",
            "--format",
            "nats",
            "--out",
            "nats",
            "--secrets",
            "prov",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no secret for gateway:"),
        "{}",
        text(&out.stderr)
    );
    assert!(!d.join("nats").exists());

    let out = gateway(
        d,
        &[
            "broker-config",
            "--format",
            "mosquitto",
            "--out",
            "mq",
            "--secrets",
            "prov",
            "--secrets",
            "-",
        ],
        "gateway:gw\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in ["password_file", "acl_file", "mosquitto.conf", "README.txt"] {
        assert!(
            stdout.contains(&d.join("mq").join(name).display().to_string()),
            "{stdout}"
        );
    }
    assert!(
        text(&out.stderr).contains("mosquitto configuration of 3 users"),
        "{}",
        text(&out.stderr)
    );
    let passwords = std::fs::read_to_string(d.join("mq/password_file")).unwrap();
    assert!(passwords.contains("\nkiosk-7:$7$101$"), "{passwords}");
    // No secret in the output or the files.
    for kiosk in ["kiosk-7", "kiosk-8"] {
        let prov =
            std::fs::read_to_string(d.join(format!("prov/{kiosk}.credentials.json"))).unwrap();
        let json: serde_json::Value = serde_json::from_str(&prov).unwrap();
        let secret = json["password"].as_str().unwrap();
        for shown in [&stdout, &text(&out.stderr), &passwords] {
            assert!(!shown.contains(secret));
        }
    }
    let bad = gateway(d, &["broker-config", "--format", "emqx", "--out", "x"], "");
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("expected mosquitto or nats"));
}
