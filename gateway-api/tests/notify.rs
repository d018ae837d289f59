//! The `kiosk-gateway` binary speaks `sd_notify(3)` as its systemd unit
//! (`Type=notify`, `WatchdogSec=`) expects: `READY=1` once started,
//! `WATCHDOG=1` at half the watchdog interval, `STOPPING=1` on SIGTERM.
//! The test plays systemd ([`kiosk_testkit::systemd`]) for the real binary.

use std::process::Command;

#[test]
fn ready_watchdog_and_stopping_reach_systemd() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "# no users: the gateway's own login is refused, it keeps retrying\n",
    )?;
    let config = dir.path().join("gateway.toml");
    // Ready means store open and listeners bound; the MQTT session connects
    // in the background (here it never does).
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\
             [broker]\nlisten = \"127.0.0.1:0\"\ncredentials = {credentials:?}\npassword = \"x\"\n\
             [store]\npath = {store:?}\n",
            credentials = credentials.display().to_string(),
            store = dir.path().join("store").display().to_string(),
        ),
    )?;

    let mut gateway = Command::new(env!("CARGO_BIN_EXE_kiosk-gateway"));
    gateway.arg("--config").arg(&config).arg("run");
    kiosk_testkit::systemd::check_notify_protocol(gateway, dir.path())
}
