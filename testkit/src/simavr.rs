//! The real cash-acceptor firmware (`firmware/cash-acceptor/`) running in
//! simavr, with its UART on a pseudo-terminal.
//!
//! [`SimAcceptor::start`] spawns the C harness
//! (`firmware/cash-acceptor/sim/harness.c`, built with the sketch by
//! `scripts/firmware.sh`) and links `dir/cash` to the board's serial port,
//! the way [`crate::FakeAcceptor`] does for its scripted pty. Whoever opens
//! that port (the agent, or a test with tokio-serial at 9600 baud) talks to
//! the compiled sketch: protocol v2, `READY:v2:<boot id>`, `CREDIT:...`,
//! `ACK:<seq>`, the 3 s lease. The test plays the validators
//! ([`SimAcceptor::coin`], [`SimAcceptor::bill`]) and watches the inhibit
//! lines ([`SimAcceptor::inhibited`]).
//!
//! The simulation runs paced to wall-clock time, so tests that use it run
//! in real time: wait with deadlines, never `tokio::time::pause()`.
//!
//! Artifacts are found through `KIOSK_FIRMWARE_ELF` and
//! `KIOSK_SIMAVR_HARNESS` (what `scripts/firmware.sh` prints and
//! `scripts/test.sh` exports), else at their build paths under the
//! workspace's `target/firmware/`. When they are missing, tests skip unless
//! `KIOSK_REQUIRE_FIRMWARE=1` (CI) makes that an error.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Environment variable with the path of the compiled sketch
/// (`cash-acceptor.elf`).
pub const FIRMWARE_ELF_ENV: &str = "KIOSK_FIRMWARE_ELF";
/// Environment variable with the path of the simavr harness binary.
pub const HARNESS_ENV: &str = "KIOSK_SIMAVR_HARNESS";
/// Environment variable that turns missing artifacts from a skip into an
/// error: set to `1` by `scripts/test.sh` after `scripts/firmware.sh`.
pub const REQUIRE_ENV: &str = "KIOSK_REQUIRE_FIRMWARE";

/// How long the harness may take to load the ELF and open its pty.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Harness stderr lines kept for the error when it fails to start.
const STDERR_KEPT: usize = 20;

/// The levels of the two inhibit lines, from the harness's last
/// `INHIBIT coin=<0|1> bill=<0|1>` line (`true` = high = inhibited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inhibit {
    coin: bool,
    bill: bool,
}

/// The compiled cash-acceptor sketch on a simulated ATmega328P (16 MHz),
/// serial port on a pty linked at [`SimAcceptor::path`].
///
/// Dropping it kills the harness and removes the link.
pub struct SimAcceptor {
    link: PathBuf,
    pty: PathBuf,
    stdin: tokio::sync::Mutex<ChildStdin>,
    inhibit: watch::Receiver<Option<Inhibit>>,
    tasks: Vec<JoinHandle<()>>,
    // Held for kill_on_drop.
    _child: Child,
}

/// Where the ELF and the harness should be: the environment's paths, else
/// the build paths of `scripts/firmware.sh`.
fn find_artifacts() -> (PathBuf, PathBuf) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("target/firmware");
    let elf = std::env::var_os(FIRMWARE_ELF_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("cash-acceptor/cash-acceptor.elf"));
    let harness = std::env::var_os(HARNESS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("sim/harness"));
    (elf, harness)
}

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Parses `INHIBIT coin=<0|1> bill=<0|1>`.
fn parse_inhibit(line: &str) -> Option<Inhibit> {
    let rest = line.strip_prefix("INHIBIT ")?;
    let mut words = rest.split_whitespace();
    let level = |word: Option<&str>, name: &str| match word?.strip_prefix(name)? {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    };
    let coin = level(words.next(), "coin=")?;
    let bill = level(words.next(), "bill=")?;
    Some(Inhibit { coin, bill })
}

impl SimAcceptor {
    /// Starts the harness on the compiled sketch and links `dir/cash` to the
    /// board's pty (replacing an existing `dir/cash`). Must run inside a
    /// tokio runtime. The board boots at once: it prints `READY:v2:<boot
    /// id>`, which waits in the pty until someone opens and reads it.
    ///
    /// Returns `Ok(None)`, after saying so on stderr, when the ELF or the
    /// harness is missing and `KIOSK_REQUIRE_FIRMWARE` is unset (or `0`):
    /// the caller skips its test. Build them with `scripts/firmware.sh`.
    ///
    /// # Errors
    /// `NotFound` when the artifacts are missing and `KIOSK_REQUIRE_FIRMWARE=1`;
    /// the spawn error; an error with the harness's last stderr lines when it
    /// exits or says nothing within 20 s instead of `PTY <path>`; the
    /// symlink error.
    pub async fn start(dir: &Path) -> io::Result<Option<SimAcceptor>> {
        let (elf, harness) = find_artifacts();
        if !elf.is_file() || !harness.is_file() {
            let what = format!(
                "cash-acceptor firmware or simavr harness not built ({} / {}); run scripts/firmware.sh",
                elf.display(),
                harness.display()
            );
            if required() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{what} ({REQUIRE_ENV} is set)"),
                ));
            }
            eprintln!("skipping: {what}");
            return Ok(None);
        }

        let mut child = Command::new(&harness)
            .arg(&elf)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(io::Error::other("harness spawned without pipes"));
        };

        let kept = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_task = tokio::spawn(forward_stderr(stderr, kept.clone()));

        let mut lines = BufReader::new(stdout).lines();
        let pty = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with("PTY ") => PathBuf::from(&line[4..]),
            outcome => {
                // Let the stderr task catch up with a dying harness.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let said: Vec<String> = kept
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .cloned()
                    .collect();
                let got = match outcome {
                    Ok(Ok(Some(line))) => format!("first line {line:?}"),
                    Ok(Ok(None)) => "exit".to_owned(),
                    Ok(Err(e)) => format!("read error {e}"),
                    Err(_) => "no line within 20 s".to_owned(),
                };
                return Err(io::Error::other(format!(
                    "{} did not report its pty ({got}); stderr: {}",
                    harness.display(),
                    said.join(" | ")
                )));
            }
        };

        let link = dir.join("cash");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&pty, &link)?;

        let (tx, inhibit) = watch::channel(None);
        let stdout_task = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                match parse_inhibit(&line) {
                    Some(state) => {
                        tracing::debug!(target: "simavr", "{line}");
                        tx.send_replace(Some(state));
                    }
                    None => tracing::warn!(target: "simavr", "unexpected harness line {line:?}"),
                }
            }
        });

        Ok(Some(SimAcceptor {
            link,
            pty,
            stdin: tokio::sync::Mutex::new(stdin),
            inhibit,
            tasks: vec![stderr_task, stdout_task],
            _child: child,
        }))
    }

    /// The port name to open (`dir/cash`, a symlink to the pty), as the
    /// agent's `cash.port`.
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// The pty itself (`/dev/pts/<n>`).
    pub fn pty(&self) -> &Path {
        &self.pty
    }

    async fn command(&self, line: &str) -> io::Result<()> {
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await
    }

    /// Inserts a coin: `pulses` falling edges on pin 2, 50 ms low and 50 ms
    /// high each in simulated time. The sketch reports
    /// `pulses × COIN_PULSE_VALUE` (10) minor units 200 ms after the last
    /// one. Trains queue behind each other, one credit per call. Returns once
    /// the harness has the command, not when the pulses are done.
    ///
    /// # Errors
    /// When the harness is gone (broken pipe).
    pub async fn coin(&self, pulses: u32) -> io::Result<()> {
        self.command(&format!("coin {pulses}")).await
    }

    /// Inserts a bank note: `pulses` falling edges on pin 3, worth
    /// `BILL_PULSE_VALUE` (500) minor units each; otherwise as
    /// [`SimAcceptor::coin`].
    ///
    /// # Errors
    /// When the harness is gone (broken pipe).
    pub async fn bill(&self, pulses: u32) -> io::Result<()> {
        self.command(&format!("bill {pulses}")).await
    }

    /// Resets the AVR, as the reset button or an Uno's DTR line does: the
    /// sketch starts over with a new boot id and no credits; the pty stays
    /// open. Pulse trains not yet played are dropped.
    ///
    /// # Errors
    /// When the harness is gone (broken pipe).
    pub async fn reset(&self) -> io::Result<()> {
        self.command("reset").await
    }

    /// `Some(true)` when both inhibit lines (pins 4 and 5) are high, i.e.
    /// the board refuses money; `Some(false)` when at least one is low;
    /// `None` before the sketch has driven them.
    pub fn inhibited(&self) -> Option<bool> {
        self.inhibit.borrow().map(|s| s.coin && s.bill)
    }

    /// Waits until [`SimAcceptor::inhibited`] is `Some(want)`; true when it
    /// got there within `timeout`, false otherwise (or when the harness
    /// exited).
    pub async fn wait_inhibited(&self, want: bool, timeout: Duration) -> bool {
        let mut rx = self.inhibit.clone();
        tokio::time::timeout(
            timeout,
            rx.wait_for(|s| s.map(|s| s.coin && s.bill) == Some(want)),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }
}

async fn forward_stderr(stderr: tokio::process::ChildStderr, kept: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "simavr", "harness: {line}");
        let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() == STDERR_KEPT {
            kept.pop_front();
        }
        kept.push_back(line);
    }
}

impl Drop for SimAcceptor {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inhibit_lines_parse() {
        assert_eq!(
            parse_inhibit("INHIBIT coin=1 bill=0"),
            Some(Inhibit {
                coin: true,
                bill: false
            })
        );
        assert_eq!(parse_inhibit("INHIBIT coin=2 bill=0"), None);
        assert_eq!(parse_inhibit("INHIBIT bill=0 coin=0"), None);
        assert_eq!(parse_inhibit("PTY /dev/pts/3"), None);
    }
}
