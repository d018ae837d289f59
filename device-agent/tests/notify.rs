//! The `kiosk-agent` binary speaks `sd_notify(3)` as its systemd unit
//! (`Type=notify`, `WatchdogSec=`) expects: `READY=1` once started,
//! `WATCHDOG=1` at half the watchdog interval, `STOPPING=1` on SIGTERM.
//! The test plays systemd: it binds the notification socket and passes it
//! in `NOTIFY_SOCKET`, with `WATCHDOG_USEC`, to the real binary.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Reads notifications until one equals `want`; returns all read so far.
fn wait_for(socket: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
                let found = message.lines().any(|line| line == want);
                seen.push(message);
                if found {
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading the notification socket"),
        }
    }
    bail!("no {want:?} within 20 s; got {seen:?}")
}

#[test]
fn ready_watchdog_and_stopping_reach_systemd() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
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

    let mut child = Command::new(env!("CARGO_BIN_EXE_kiosk-agent"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting kiosk-agent")?;

    let mut seen = Vec::new();
    let result = (|| {
        wait_for(&socket, "READY=1", &mut seen)?;
        // 400 ms watchdog: a ping every 200 ms; wait for two.
        wait_for(&socket, "WATCHDOG=1", &mut seen)?;
        wait_for(&socket, "WATCHDOG=1", &mut seen)?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        wait_for(&socket, "STOPPING=1", &mut seen)
    })();
    if result.is_err() {
        let _ = child.kill();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("kiosk-agent did not exit within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    result?;
    anyhow::ensure!(exit.success(), "kiosk-agent exited with {exit}");
    Ok(())
}
