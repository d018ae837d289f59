//! A real mosquitto broker as a child process, for tests of
//! `broker.embedded = false` (installed by `scripts/test.sh`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Where Debian installs the broker.
const CANDIDATES: [&str; 3] = [
    "/usr/sbin/mosquitto",
    "/usr/bin/mosquitto",
    "/usr/local/sbin/mosquitto",
];

/// A running mosquitto on 127.0.0.1, anonymous access, no persistence (so a
/// restart forgets sessions and queued messages, the worst case for
/// delivery).
pub struct Mosquitto {
    binary: PathBuf,
    conf: PathBuf,
    /// Where it listens (plain MQTT).
    pub addr: SocketAddr,
    /// Its TLS listener, when started with [`Mosquitto::start_with_tls`].
    pub tls_addr: Option<SocketAddr>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    kiosk_testkit::free_port().expect("free port")
}

/// The mosquitto binary, if installed.
pub fn binary() -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists())
}

impl Mosquitto {
    /// Starts mosquitto with its config in `dir` on a free port.
    ///
    /// # Panics
    /// When mosquitto is not installed or does not start: run
    /// `scripts/test.sh`, which installs it.
    pub async fn start(dir: &Path) -> Mosquitto {
        Self::start_inner(dir, None).await
    }

    /// Like [`Mosquitto::start`], plus a TLS listener with `cert` and `key`
    /// (PEM) on another free port.
    ///
    /// # Panics
    /// As [`Mosquitto::start`].
    pub async fn start_with_tls(dir: &Path, cert: &Path, key: &Path) -> Mosquitto {
        Self::start_inner(dir, Some((cert, key))).await
    }

    /// Starts mosquitto on a free port with the configuration `auth`
    /// (e.g. the `mosquitto.conf` of `kiosk-gateway broker-config`: users,
    /// ACL, no anonymous access) instead of anonymous access.
    ///
    /// # Panics
    /// As [`Mosquitto::start`].
    pub async fn start_with_auth(dir: &Path, auth: &str) -> Mosquitto {
        Self::start_with_auth_listener(dir, auth, "").await
    }

    /// Like [`Mosquitto::start_with_auth`], with `listener_settings`
    /// (e.g. `use_username_as_clientid true`) for its listener.
    ///
    /// # Panics
    /// As [`Mosquitto::start`].
    pub async fn start_with_auth_listener(
        dir: &Path,
        auth: &str,
        listener_settings: &str,
    ) -> Mosquitto {
        // As root, mosquitto drops to user `mosquitto`, which could not
        // read the 0600 password file; `user` is ignored otherwise.
        let settings = format!("{auth}\nuser root\npersistence false\n");
        Self::start_conf(dir, settings, listener_settings, None).await
    }

    /// Like [`Mosquitto::start`], bridged to the mosquitto at `peer`: every
    /// `kiosk/#` message crosses in both directions at QoS 1, so clients on
    /// either broker reach each other (a standby pair without shared
    /// sessions). The bridge reconnects within a second of the peer's
    /// return.
    ///
    /// # Panics
    /// As [`Mosquitto::start`].
    pub async fn start_bridged(dir: &Path, peer: SocketAddr) -> Mosquitto {
        let settings = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\nmax_inflight_messages 20\nmax_queued_messages 10000\n\
             connection peer\naddress {peer}\ntopic kiosk/# both 1\nbridge_protocol_version mqttv311\nrestart_timeout 1\n"
        );
        Self::start_conf(dir, settings, "", None).await
    }

    async fn start_inner(dir: &Path, tls: Option<(&Path, &Path)>) -> Mosquitto {
        let settings = "per_listener_settings false\nallow_anonymous true\npersistence false\nmax_inflight_messages 20\nmax_queued_messages 10000\n".to_owned();
        Self::start_conf(dir, settings, "", tls).await
    }

    async fn start_conf(
        dir: &Path,
        settings: String,
        listener_settings: &str,
        tls: Option<(&Path, &Path)>,
    ) -> Mosquitto {
        let binary = binary().expect("mosquitto is not installed; run scripts/test.sh");
        let port = free_port();
        let conf = dir.join("mosquitto-test.conf");
        let mut text = format!("{settings}listener {port} 127.0.0.1\n{listener_settings}\n");
        let tls_addr = tls.map(|(cert, key)| {
            let tls_port = free_port();
            text.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                cert.display(),
                key.display()
            ));
            SocketAddr::from(([127, 0, 0, 1], tls_port))
        });
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut m = Mosquitto {
            binary,
            conf,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls_addr,
            child: None,
        };
        m.spawn().await;
        m
    }

    async fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it (SIGKILL: sessions and queued messages are lost).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Kills it and starts it again on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}
