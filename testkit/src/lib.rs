//! kiosk-testkit: peers and helpers for kiosk-fleet's tests.
//!
//! - [`FakePrinter`]: a raw-TCP (port 9100) ESC/POS printer that records
//!   jobs and answers `DLE EOT` status requests; also the `fake-printer`
//!   binary.
//! - [`FakeDevicePrinter`]: a printer on a device node (a pty, as a USB or
//!   serial printer with a read side) that answers `DLE EOT` there.
//! - [`FakeAcceptor`]: the Arduino end of a cash acceptor's serial line,
//!   on a real pseudo-terminal pair (protocol v1: `BILL:1000` lines).
//! - [`FakeBoard`]: a protocol-v2 cash acceptor board (`READY:v2`,
//!   numbered `CREDIT` lines re-sent until `ACK`ed, a lease renewed by the
//!   host) on a pty, or on any stream for paused-time tests.
//! - [`SimAcceptor`]: the real cash-acceptor firmware in simavr, its UART
//!   on a pty (needs `scripts/firmware.sh`; skips without it).
//! - [`escpos::decode`] and [`escpos::lines`]: an ESC/POS decoder written
//!   from the Epson command reference, for asserting on what a printer got.
//! - [`Cupsd`]: a real, throwaway CUPS scheduler on its own port with raw
//!   queues, for the agent's `cups` driver (skips without CUPS).
//! - [`CutProxy`]: a TCP relay a test can cut, like a flaky network.
//! - [`systemd::check_notify_protocol`]: plays systemd for a `Type=notify`
//!   service binary.
//! - [`reserve_local_addr`], [`wait_until`], [`init_test_tracing`]: the
//!   small things every integration test needs.
//!
//! Independent of the fleet's own crates, so any of them can use it as a
//! dev-dependency.

pub mod acceptor;
pub mod board;
pub mod cups;
pub mod device_printer;
pub mod escpos;
pub mod printer;
pub mod proxy;
mod pty;
pub mod simavr;
pub mod systemd;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

pub use acceptor::FakeAcceptor;
pub use board::{BoardCredit, BoardTimings, FakeBoard, Money};
pub use cups::Cupsd;
pub use device_printer::FakeDevicePrinter;
pub use printer::{FakePaper, FakePrinter, FakeStatus, JobsTimeout};
pub use proxy::CutProxy;
pub use simavr::SimAcceptor;

/// A free `127.0.0.1` address: bound with port 0 and released at once, for
/// servers that cannot report the port they bound (rumqttd). Another
/// process could take the port in between; the window is short.
///
/// # Errors
/// The bind error.
pub fn reserve_local_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind(("127.0.0.1", 0))?.local_addr()
}

/// The port of [`reserve_local_addr`].
///
/// # Errors
/// The bind error.
pub fn free_port() -> std::io::Result<u16> {
    reserve_local_addr().map(|addr| addr.port())
}

/// Calls `condition` every `poll_every` until it returns true (then returns
/// true) or `timeout` has passed (then returns false). Uses tokio time, so
/// it works with `tokio::time::pause()`.
pub async fn wait_until<F: FnMut() -> bool>(
    timeout: Duration,
    poll_every: Duration,
    mut condition: F,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(poll_every.min(deadline - now)).await;
    }
}

/// Debian's Noto Sans Arabic (`fonts-noto-core`), what the agent's
/// fallback lines are drawn with in tests.
pub const NOTO_ARABIC: &str = "/usr/share/fonts/truetype/noto/NotoSansArabic-Regular.ttf";

/// Whether `fonts-noto-core` is installed, for tests that draw lines with
/// it: `false` (after printing that the test skips that part) when it is
/// not.
///
/// # Panics
/// When it is missing and `KIOSK_REQUIRE_FONTS=1` (set by
/// `scripts/test.sh`, which installs it).
pub fn noto_fonts_installed() -> bool {
    let installed = std::path::Path::new(NOTO_ARABIC).exists();
    if !installed {
        assert!(
            std::env::var("KIOSK_REQUIRE_FONTS").as_deref() != Ok("1"),
            "KIOSK_REQUIRE_FONTS=1 but fonts-noto-core is not installed"
        );
        eprintln!("SKIP: fonts-noto-core is not installed: lines drawn with fonts are not checked");
    }
    installed
}

/// Installs a tracing subscriber writing to the test output, only when the
/// environment variable `TEST_LOG` is set: `TEST_LOG=1` logs at `RUST_LOG`
/// or `debug`, any other value is used as the filter itself
/// (`TEST_LOG=kiosk_agent=trace`). Quiet otherwise. Safe to call from every
/// test: only the first call installs.
pub fn init_test_tracing() {
    use tracing_subscriber::EnvFilter;

    let Some(value) = std::env::var_os("TEST_LOG") else {
        return;
    };
    let value = value.to_string_lossy();
    let filter = match value.as_ref() {
        "" | "1" | "true" => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug"))
        }
        directives => EnvFilter::new(directives),
    };
    // Err means another test installed one already: fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_addresses_are_local_and_bindable() {
        let addr = reserve_local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
        TcpListener::bind(addr).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_polls_until_true_or_timeout() {
        let mut calls = 0;
        assert!(
            wait_until(Duration::from_secs(1), Duration::from_millis(10), || {
                calls += 1;
                calls == 3
            })
            .await
        );
        let start = tokio::time::Instant::now();
        assert!(!wait_until(Duration::from_secs(1), Duration::from_millis(300), || false).await);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
