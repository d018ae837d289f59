//! API keys of the HTTP API: a file of `name:sha256-hex` lines.
//!
//! ```text
//! # kiosk-gateway API keys: <name>:<hex SHA-256 of the key>
//! pos-backend:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
//! ```
//!
//! Keys are generated (`kiosk-gateway apikey add <name>`, 256 random bits),
//! so an unsalted SHA-256 is enough to make a stolen file useless, and a
//! lookup costs one hash. Only the key's name ever appears in logs. The
//! file is re-read when it changes, so keys can be added without a restart.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// The file could not be read or written.
    #[error("API key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not `name:64-hex-digits`.
    #[error("API key file {path}, line {line}: expected `name:<64 hex digits>`")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The name is not `[A-Za-z0-9._-]{1,64}` or exists already.
    #[error("invalid API key name {0:?}: expected 1 to 64 of A-Z a-z 0-9 . _ -, not already used")]
    Name(String),
}

type Keys = HashMap<[u8; 32], String>;

/// The set of valid API keys, by SHA-256.
pub struct ApiKeys {
    path: Option<PathBuf>,
    state: Mutex<(Keys, Option<(SystemTime, u64)>)>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse(path: &Path, text: &str) -> Result<Keys, ApiKeyError> {
    let mut keys = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = || ApiKeyError::Malformed {
            path: path.to_owned(),
            line: i + 1,
        };
        let (name, hash) = line.split_once(':').ok_or_else(malformed)?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hash.trim(), &mut digest).map_err(|_| malformed())?;
        if !valid_name(name.trim()) {
            return Err(malformed());
        }
        keys.insert(digest, name.trim().to_owned());
    }
    Ok(keys)
}

fn load(path: &Path) -> Result<Keys, ApiKeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| ApiKeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

impl ApiKeys {
    /// Loads the key file. `None`: no file configured, every `/v1` request
    /// is refused (there is no anonymous access).
    ///
    /// # Errors
    /// [`ApiKeyError`] when the file is unreadable or malformed.
    pub fn open(path: Option<&Path>) -> Result<Self, ApiKeyError> {
        let (keys, st) = match path {
            Some(p) => (load(p)?, stamp(p)),
            None => (HashMap::new(), None),
        };
        Ok(ApiKeys {
            path: path.map(Path::to_owned),
            state: Mutex::new((keys, st)),
        })
    }

    /// The name of the key `presented`, if it is valid. Re-reads the file
    /// first when it changed on disk; a file that became malformed keeps the
    /// previous keys (and is logged), so a bad edit does not lock everyone out.
    pub fn authenticate(&self, presented: &str) -> Option<String> {
        let digest = sha256(presented);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path {
            let now = stamp(path);
            if now != state.1 {
                match load(path) {
                    Ok(keys) => *state = (keys, now),
                    Err(e) => {
                        tracing::error!(error = %e, "keeping previous API keys");
                        state.1 = now;
                    }
                }
            }
        }
        state.0.get(&digest).cloned()
    }
}

fn sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Creates a new random key (256 bits, URL-safe base64), appends
/// `name:sha256` to `path` (created with mode 0600 if missing) and returns
/// the key, which is shown once and never stored.
///
/// # Errors
/// [`ApiKeyError::Name`] for an invalid or taken name, [`ApiKeyError::Io`]
/// when the file cannot be written.
pub fn add_key(path: &Path, name: &str) -> Result<String, ApiKeyError> {
    if !valid_name(name) {
        return Err(ApiKeyError::Name(name.to_owned()));
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => parse(path, &t)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
        Err(source) => {
            return Err(ApiKeyError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    if existing.values().any(|n| n == name) {
        return Err(ApiKeyError::Name(name.to_owned()));
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let key = format!(
        "kf_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let io = |source| ApiKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(io)?;
    writeln!(f, "{name}:{}", hex::encode(sha256(&key))).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_authenticate_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-keys");
        let k1 = add_key(&path, "backend").unwrap();
        let keys = ApiKeys::open(Some(&path)).unwrap();
        assert_eq!(keys.authenticate(&k1).as_deref(), Some("backend"));
        assert_eq!(keys.authenticate("nope"), None);
        assert!(matches!(
            add_key(&path, "backend"),
            Err(ApiKeyError::Name(_))
        ));
        // A key added later works without reopening.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let k2 = add_key(&path, "pos-2").unwrap();
        assert_eq!(keys.authenticate(&k2).as_deref(), Some("pos-2"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&k1) && !text.contains(&k2));
    }

    #[test]
    fn malformed_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-keys");
        std::fs::write(
            &path,
            "# c\n\nok:".to_owned() + &"a".repeat(64) + "\nbad line\n",
        )
        .unwrap();
        let err = ApiKeys::open(Some(&path)).err().unwrap().to_string();
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn no_file_means_no_access() {
        let keys = ApiKeys::open(None).unwrap();
        assert_eq!(keys.authenticate(""), None);
    }
}
