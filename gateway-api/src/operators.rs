//! Operators of the fleet page (`/fleet`): people who sign in with a name
//! and a password they chose, kept as argon2id hashes in the file
//! `http.operators` (`name:$argon2id$...` lines, mode 0600), managed with
//! `kiosk-gateway operator add|remove NAME`; and their signed-in sessions.
//!
//! The file is read at every sign-in, so `operator add` and `remove` take
//! effect without a restart (a removed operator's open sessions end at
//! their next request). Sessions live in memory: a restart signs everybody
//! out. A session is a random 256-bit token in the cookie `kiosk_fleet`
//! (`HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` under HTTPS), valid
//! for 12 hours, with its own CSRF token that every state-changing request
//! must carry in `X-CSRF-Token` (the page reads it from a `<meta>` tag).

use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kiosk_schemas::Secret;
use rand::RngCore as _;
use tokio::time::Instant;

/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins per client address in [`FAILURE_WINDOW`] before that
/// address is refused for the rest of the window.
pub const MAX_FAILURES: u32 = 10;
/// See [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Name of the session cookie.
pub const COOKIE: &str = "kiosk_fleet";

/// Why the operators file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Not readable or writable.
    #[error("operators file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A name outside `[a-z0-9._-]{1,64}`.
    #[error("operator name {0:?}: use 1 to 64 of a-z, 0-9, '.', '_', '-'")]
    BadName(String),
    /// An empty password, or one argon2 refuses.
    #[error("password: {0}")]
    BadPassword(String),
    /// A line that is not `name:$argon2id$...`.
    #[error("operators file {path} line {line}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OperatorError + '_ {
    move |source| OperatorError::Io {
        path: path.to_owned(),
        source,
    }
}

fn check_name(name: &str) -> Result<(), OperatorError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(OperatorError::BadName(name.to_owned()))
    }
}

/// The `(name, hash)` entries of the file; none when it does not exist.
fn read(path: &Path) -> Result<Vec<(String, String)>, OperatorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = |reason: &str| OperatorError::Malformed {
            path: path.to_owned(),
            line: i + 1,
            reason: reason.to_owned(),
        };
        let (name, hash) = line
            .split_once(':')
            .ok_or_else(|| malformed("expected name:$argon2id$..."))?;
        check_name(name).map_err(|e| malformed(&e.to_string()))?;
        if !hash.starts_with(kiosk_broker::hash::ARGON2ID_PREFIX) {
            return Err(malformed("the hash must be $argon2id$..."));
        }
        out.push((name.to_owned(), hash.to_owned()));
    }
    Ok(out)
}

/// Writes `entries` to `path` (mode 0600) through a temporary file, so a
/// crash leaves the old file or the new one.
fn write(path: &Path, entries: &[(String, String)]) -> Result<(), OperatorError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        writeln!(
            f,
            "# kiosk-gateway operators: name:argon2id hash (kiosk-gateway operator add|remove)"
        )
        .map_err(io(&tmp))?;
        for (name, hash) in entries {
            writeln!(f, "{name}:{hash}").map_err(io(&tmp))?;
        }
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Adds operator `name` with `password` to the file (creating it), or
/// gives an existing one the new password. Blocks for tens of ms (argon2).
///
/// # Errors
/// [`OperatorError`] for a bad name or password, or an unusable file.
pub fn add(path: &Path, name: &str, password: &Secret) -> Result<(), OperatorError> {
    check_name(name)?;
    if password.expose().is_empty() {
        return Err(OperatorError::BadPassword("must not be empty".to_owned()));
    }
    let hash = kiosk_broker::hash::hash_chosen_password(password)
        .map_err(|e| OperatorError::BadPassword(e.to_string()))?;
    let mut entries = read(path)?;
    entries.retain(|(n, _)| n != name);
    entries.push((name.to_owned(), hash));
    write(path, &entries)
}

/// Removes operator `name`; returns whether it was there.
///
/// # Errors
/// [`OperatorError`] for an unusable file.
pub fn remove(path: &Path, name: &str) -> Result<bool, OperatorError> {
    let mut entries = read(path)?;
    let before = entries.len();
    entries.retain(|(n, _)| n != name);
    if entries.len() == before {
        return Ok(false);
    }
    write(path, &entries)?;
    Ok(true)
}

/// A signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSession {
    /// The operator's name.
    pub name: String,
    /// The token state-changing requests carry in `X-CSRF-Token`.
    pub csrf: String,
    expires: Instant,
}

/// What a sign-in attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// Signed in: set the cookie to `token`.
    Welcome {
        /// The session token (the cookie's value).
        token: String,
    },
    /// Wrong name or password (which one is not said).
    Refused,
    /// Too many failures from this address lately.
    Throttled,
}

/// The operators file and the open sessions.
#[derive(Debug)]
pub struct Operators {
    path: Option<PathBuf>,
    sessions: Mutex<HashMap<String, OperatorSession>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Operators {
    /// Operators from `path` (`http.operators`); without one, nobody can
    /// sign in and `/fleet` says so.
    pub fn new(path: Option<PathBuf>) -> Self {
        Operators {
            path,
            sessions: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// True when `http.operators` is set.
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Checks `name` and `password` against the file and opens a session.
    /// Blocks for tens of ms (argon2): call it on the blocking pool. An
    /// unknown name costs the same time as a wrong password.
    ///
    /// # Errors
    /// [`OperatorError`] when the file is unusable.
    pub fn sign_in(
        &self,
        from: IpAddr,
        name: &str,
        password: &Secret,
        now: Instant,
    ) -> Result<SignIn, OperatorError> {
        let Some(path) = &self.path else {
            return Ok(SignIn::Refused);
        };
        if self.throttled(from, now) {
            return Ok(SignIn::Throttled);
        }
        let entries = read(path)?;
        let hash = entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h.as_str());
        let ok = match hash {
            Some(h) => kiosk_broker::hash::verify_password(h, password).unwrap_or(false),
            None => {
                // Spend what a real check costs.
                let _ = kiosk_broker::hash::hash_chosen_password(password);
                false
            }
        };
        if !ok {
            self.failed(from, now);
            return Ok(SignIn::Refused);
        }
        let token = random_token();
        let session = OperatorSession {
            name: name.to_owned(),
            csrf: random_token(),
            expires: now + SESSION_TTL,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(token.clone(), session);
        Ok(SignIn::Welcome { token })
    }

    /// The session of `token`, unless it expired or its operator was
    /// removed from the file.
    pub fn session(&self, token: &str, now: Instant) -> Option<OperatorSession> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let session = sessions.get(token)?.clone();
        let still_there = self
            .path
            .as_deref()
            .and_then(|p| read(p).ok())
            .is_some_and(|entries| entries.iter().any(|(n, _)| *n == session.name));
        if session.expires <= now || !still_there {
            sessions.remove(token);
            return None;
        }
        Some(session)
    }

    /// Ends the session of `token`.
    pub fn sign_out(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    fn throttled(&self, from: IpAddr, now: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures
            .get(&from)
            .is_some_and(|(since, n)| now < *since + FAILURE_WINDOW && *n >= MAX_FAILURES)
    }

    fn failed(&self, from: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, (since, _)| now < *since + FAILURE_WINDOW);
        let entry = failures.entry(from).or_insert((now, 0));
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn add_sign_in_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operators");
        add(&path, "ana", &Secret::new("pw-ana")).unwrap();
        add(&path, "bo", &Secret::new("pw-bo")).unwrap();
        add(&path, "ana", &Secret::new("pw-ana-2")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let ops = Operators::new(Some(path.clone()));
        let now = Instant::now();
        assert_eq!(
            ops.sign_in(HERE, "ana", &Secret::new("pw-ana"), now)
                .unwrap(),
            SignIn::Refused,
            "old password"
        );
        let SignIn::Welcome { token } = ops
            .sign_in(HERE, "ana", &Secret::new("pw-ana-2"), now)
            .unwrap()
        else {
            panic!("new password refused");
        };
        let s = ops.session(&token, now).unwrap();
        assert_eq!(s.name, "ana");
        assert_ne!(s.csrf, token);
        assert!(ops.session(&token, now + SESSION_TTL).is_none(), "expired");
        let SignIn::Welcome { token } =
            ops.sign_in(HERE, "bo", &Secret::new("pw-bo"), now).unwrap()
        else {
            panic!("bo refused");
        };
        assert!(remove(&path, "bo").unwrap());
        assert!(!remove(&path, "bo").unwrap());
        assert!(
            ops.session(&token, now).is_none(),
            "a removed operator is signed out"
        );
        assert!(ops.session("made-up", now).is_none());
        assert!(matches!(
            add(&path, "Ana!", &Secret::new("x")),
            Err(OperatorError::BadName(_))
        ));
        assert!(matches!(
            add(&path, "cy", &Secret::new("")),
            Err(OperatorError::BadPassword(_))
        ));
    }

    #[test]
    fn failures_from_an_address_are_throttled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operators");
        add(&path, "ana", &Secret::new("pw")).unwrap();
        let ops = Operators::new(Some(path));
        let now = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                ops.sign_in(HERE, "ana", &Secret::new("guess"), now)
                    .unwrap(),
                SignIn::Refused
            );
        }
        assert_eq!(
            ops.sign_in(HERE, "ana", &Secret::new("pw"), now).unwrap(),
            SignIn::Throttled
        );
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert!(matches!(
            ops.sign_in(other, "ana", &Secret::new("pw"), now).unwrap(),
            SignIn::Welcome { .. }
        ));
        let later = now + FAILURE_WINDOW;
        assert!(matches!(
            ops.sign_in(HERE, "ana", &Secret::new("pw"), later).unwrap(),
            SignIn::Welcome { .. }
        ));
    }

    #[test]
    fn a_malformed_file_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operators");
        std::fs::write(&path, "# c\nana:$sha256$x$y\n").unwrap();
        let err = Operators::new(Some(path))
            .sign_in(HERE, "ana", &Secret::new("x"), Instant::now())
            .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
