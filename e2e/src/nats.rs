//! A real one-node nats-server with JetStream and MQTT as a child process,
//! for tests of `kiosk-gateway broker-config --format nats`.
//!
//! Without nats-server installed, [`NatsServer::start`] returns `None` and
//! the test skips with a printed reason, unless `KIOSK_REQUIRE_NATS=1`
//! (exported by `scripts/test.sh`, which installs it) makes that a failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Set to `1` to fail instead of skipping when nats-server is missing.
pub const REQUIRE_ENV: &str = "KIOSK_REQUIRE_NATS";

/// Where Debian installs it, or elsewhere on `PATH`.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

/// [`binary`], or `None` after printing that the test skips.
///
/// # Panics
/// When nats-server is missing and `KIOSK_REQUIRE_NATS=1`.
pub fn binary_or_skip() -> Option<PathBuf> {
    let found = binary();
    if found.is_none() {
        assert!(
            std::env::var(REQUIRE_ENV).map_or(true, |v| v != "1"),
            "nats-server is not installed and {REQUIRE_ENV}=1; run scripts/test.sh"
        );
        eprintln!("SKIP: nats-server is not installed (apt-get install nats-server)");
    }
    found
}

/// A running nats-server on 127.0.0.1; killed on drop.
pub struct NatsServer {
    /// Its MQTT listener.
    pub mqtt_addr: SocketAddr,
    child: Child,
}

impl NatsServer {
    /// Starts nats-server with its configuration and JetStream store in
    /// `dir`, including `include` (a path relative to `dir`, as NATS
    /// resolves includes), with a free client port and a free MQTT port.
    /// `None` (after printing why) when nats-server is not installed.
    ///
    /// # Panics
    /// When nats-server is missing and `KIOSK_REQUIRE_NATS=1`, or when it
    /// does not start within 15 s.
    pub async fn start(dir: &Path, include: &str) -> Option<NatsServer> {
        let binary = binary_or_skip()?;
        let port = kiosk_testkit::free_port().expect("free port");
        let mqtt_port = kiosk_testkit::free_port().expect("free port");
        let conf = dir.join("nats-test.conf");
        let text = format!(
            "server_name: kiosk-test\nlisten: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: \"{}\"\n}}\nmqtt {{\n  listen: \"127.0.0.1:{mqtt_port}\"\n}}\ninclude \"{include}\"\n",
            dir.join("jetstream").display()
        );
        std::fs::write(&conf, text).expect("write nats-test.conf");
        let log = std::fs::File::create(dir.join("nats.log")).expect("nats.log");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nats-server");
        let mqtt_addr = SocketAddr::from(([127, 0, 0, 1], mqtt_port));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(mqtt_addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not start; see {}",
                dir.join("nats.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(NatsServer { mqtt_addr, child })
    }

    /// The server's process id (for its RSS in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}
