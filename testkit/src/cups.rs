//! A real, throwaway CUPS scheduler (`cupsd` from Debian's `cups`
//! package) for tests of the agent's `cups` printer driver.
//!
//! [`Cupsd::start`] writes its own `cupsd.conf` and `cups-files.conf` in a
//! temporary directory (spool, cache, state and logs there too), listens
//! on `127.0.0.1` with a port chosen for it, with no browsing, no web
//! interface and no authentication for anything (so a test can add, stop
//! and cancel queues), and runs `cupsd -f` as a child killed on drop. A
//! packaged cupsd on port 631 is not touched. Queues are made with
//! [`Cupsd::add_raw_queue`]: `lpadmin -p NAME -E -v URI` with no model is a
//! raw queue on CUPS 2.4 (`-m raw` is refused there).
//!
//! When `cupsd` or the client programs (`cups`, `cups-client` packages)
//! are missing, [`Cupsd::start`] returns `Ok(None)` and the test skips,
//! unless `KIOSK_REQUIRE_CUPS=1` (set by `scripts/test.sh`) makes that an
//! error.

use std::fmt::Write as _;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable that turns a missing cupsd from a skip into an
/// error.
pub const REQUIRE_ENV: &str = "KIOSK_REQUIRE_CUPS";

/// How long cupsd may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running cupsd of its own; killed, and its directory removed, on drop.
pub struct Cupsd {
    child: Child,
    dir: tempfile::TempDir,
    server: String,
}

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// `name` on `PATH`, or in `/usr/sbin` (where Debian puts `cupsd`,
/// `lpadmin` and `cupsdisable`, often not on a user's `PATH`).
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The CUPS helper directory with the backends (`socket`, `file`).
fn server_bin() -> Option<PathBuf> {
    ["/usr/lib/cups", "/usr/libexec/cups"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("backend").join("socket").is_file())
}

impl Cupsd {
    /// Starts cupsd and waits until it accepts connections.
    ///
    /// Returns `Ok(None)`, after saying why on stderr, when cupsd, its
    /// backends or `lpadmin`/`lpstat`/`cupsdisable`/`cupsenable` are
    /// missing and `KIOSK_REQUIRE_CUPS` is not `1`: the caller skips its
    /// test. Install them with `apt-get install cups cups-client cups-bsd`.
    ///
    /// # Errors
    /// `NotFound` when they are missing and `KIOSK_REQUIRE_CUPS=1`; I/O
    /// errors writing the configuration; an error with cupsd's log when it
    /// exits or does not listen within 15 s.
    pub fn start() -> io::Result<Option<Cupsd>> {
        let missing: Vec<&str> = ["cupsd", "lpadmin", "lpstat", "cupsdisable", "cupsenable"]
            .into_iter()
            .filter(|p| program(p).is_none())
            .collect();
        let (Some(cupsd), Some(bin), true) = (program("cupsd"), server_bin(), missing.is_empty())
        else {
            let what = format!(
                "CUPS not installed (missing: {}); apt-get install cups cups-client cups-bsd",
                if missing.is_empty() {
                    "backends".to_owned()
                } else {
                    missing.join(", ")
                }
            );
            if required() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{what} ({REQUIRE_ENV} is set)"),
                ));
            }
            eprintln!("skipping: {what}");
            return Ok(None);
        };

        let dir = tempfile::Builder::new().prefix("kiosk-cupsd").tempdir()?;
        let root = dir.path();
        for sub in ["spool", "spool/tmp", "cache", "state", "log"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let port = crate::free_port()?;
        let server = format!("127.0.0.1:{port}");
        std::fs::write(root.join("cupsd.conf"), cupsd_conf(&server))?;
        std::fs::write(root.join("cups-files.conf"), cups_files_conf(root, &bin))?;

        let child = Command::new(cupsd)
            .arg("-f")
            .arg("-c")
            .arg(root.join("cupsd.conf"))
            .arg("-s")
            .arg(root.join("cups-files.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut cupsd = Cupsd { child, dir, server };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(&cupsd.server).is_ok() {
                return Ok(Some(cupsd));
            }
            let exited = cupsd.child.try_wait()?;
            if exited.is_some() || Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "cupsd did not start ({}); log:\n{}",
                    exited.map_or("no listener within 15 s".to_owned(), |s| s.to_string()),
                    cupsd.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`, for the driver's `server` key or `lp -h`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// cupsd's error log so far (debug level), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/error_log")).unwrap_or_default()
    }

    /// Runs a CUPS client program against this server and returns its
    /// standard output.
    ///
    /// # Errors
    /// The spawn error, or an error with its stderr when it fails.
    pub fn run(&self, name: &str, args: &[&str]) -> io::Result<String> {
        let path = program(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name} not found")))?;
        let out = Command::new(path)
            .arg("-h")
            .arg(&self.server)
            .args(args)
            .env_remove("CUPS_SERVER")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{name} {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds an enabled, accepting raw queue `name` whose device is
    /// `device_uri` (e.g. `socket://127.0.0.1:9100`).
    ///
    /// # Errors
    /// As [`Cupsd::run`].
    pub fn add_raw_queue(&self, name: &str, device_uri: &str) -> io::Result<()> {
        self.run("lpadmin", &["-p", name, "-E", "-v", device_uri])
            .map(drop)
    }

    /// `cupsdisable -r reason`: the queue stops (jobs stay pending).
    ///
    /// # Errors
    /// As [`Cupsd::run`].
    pub fn disable(&self, name: &str, reason: &str) -> io::Result<()> {
        self.run("cupsdisable", &["-r", reason, name]).map(drop)
    }

    /// `cupsenable`: the queue runs its pending jobs again.
    ///
    /// # Errors
    /// As [`Cupsd::run`].
    pub fn enable(&self, name: &str) -> io::Result<()> {
        self.run("cupsenable", &[name]).map(drop)
    }

    /// `lpstat -W not-completed -o name`: the queue's jobs that could
    /// still print, one line each (empty when none).
    ///
    /// # Errors
    /// As [`Cupsd::run`].
    pub fn pending_jobs(&self, name: &str) -> io::Result<String> {
        self.run("lpstat", &["-W", "not-completed", "-o", name])
    }

    /// The temporary directory (configuration, spool, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cupsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cupsd_conf(server: &str) -> String {
    let mut conf = String::new();
    let _ = writeln!(conf, "Listen {server}");
    conf.push_str(
        "Browsing No\n\
         WebInterface No\n\
         DefaultAuthType None\n\
         LogLevel debug\n\
         <Location />\n  Order allow,deny\n  Allow all\n</Location>\n\
         <Policy default>\n  <Limit All>\n    Order deny,allow\n  </Limit>\n</Policy>\n",
    );
    conf
}

fn cups_files_conf(root: &Path, server_bin: &Path) -> String {
    let r = root.display();
    format!(
        "ServerRoot {r}\n\
         RequestRoot {r}/spool\n\
         TempDir {r}/spool/tmp\n\
         CacheDir {r}/cache\n\
         StateDir {r}/state\n\
         AccessLog {r}/log/access_log\n\
         ErrorLog {r}/log/error_log\n\
         PageLog {r}/log/page_log\n\
         ServerBin {}\n\
         DataDir /usr/share/cups\n\
         Sandboxing relaxed\n",
        server_bin.display()
    )
}
