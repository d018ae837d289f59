//! The `kiosk-agent` binary speaks `sd_notify(3)` as its systemd unit
//! (`Type=notify`, `WatchdogSec=`) expects: `READY=1` once started,
//! `WATCHDOG=1` at half the watchdog interval, `STOPPING=1` on SIGTERM.
//! The test plays systemd ([`kiosk_testkit::systemd`]) for the real binary.

use std::process::Command;

#[test]
fn ready_watchdog_and_stopping_reach_systemd() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.toml");
    // The broker is unreachable on purpose: the agent is ready once its
    // store is open and its tasks run; the MQTT session retries meanwhile.
    std::fs::write(
        &config,
        format!(
            "kiosk_id = \"notify-1\"\n\
             [broker]\nurl = \"mqtt://127.0.0.1:9\"\npassword = \"x\"\n\
             [store]\npath = {store:?}\n\
             [printers.receipt]\ndriver = \"device\"\naddress = {printer:?}\n",
            store = dir.path().join("store").display().to_string(),
            printer = dir.path().join("receipt.bin").display().to_string(),
        ),
    )?;
    let mut agent = Command::new(env!("CARGO_BIN_EXE_kiosk-agent"));
    agent.arg("--config").arg(&config);
    kiosk_testkit::systemd::check_notify_protocol(agent, dir.path())
}
