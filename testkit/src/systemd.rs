//! Plays systemd for a `Type=notify` service with `WatchdogSec=`: binds the
//! notification socket, starts the real binary with `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC`, and checks that it says `READY=1`, pings `WATCHDOG=1`
//! and says `STOPPING=1` on SIGTERM before exiting successfully
//! (`sd_notify(3)`).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Longest wait for each notification and for the exit.
const WAIT: Duration = Duration::from_secs(20);

/// Reads notifications until one equals `want`; keeps all read in `seen`.
fn wait_for(socket: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
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
    bail!("no {want:?} within {WAIT:?}; got {seen:?}")
}

/// Runs `command` (the service binary and its arguments) as systemd would
/// with a 400 ms watchdog, the socket in `dir`, and checks the protocol:
/// `READY=1`, two `WATCHDOG=1`, then after SIGTERM `STOPPING=1` and a
/// successful exit.
///
/// # Errors
/// What was missing, with every notification received.
pub fn check_notify_protocol(mut command: Command, dir: &Path) -> anyhow::Result<()> {
    let name = command.get_program().to_string_lossy().into_owned();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut child = command
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name}"))?;

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
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{name} did not exit within {WAIT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    result?;
    anyhow::ensure!(exit.success(), "{name} exited with {exit}");
    Ok(())
}
