//! Who may log in to the broker: the credentials file, its in-memory
//! [`CredentialStore`], and the functions that edit the file.
//!
//! # File format
//!
//! UTF-8 text, one user per line, `#` comment lines and blank lines allowed
//! (leading and trailing whitespace is ignored):
//!
//! ```text
//! # <user>:<role>:<hash>
//! gateway:gateway:$sha256$q1x8tWk0ZHR5bS7xW0P3Zg$9h3LzS4nE6Y0J3o7kI5rUqz1+G8m1m0gS0WJb2Zk3xQ
//! demo-1:kiosk:$sha256$B1a3...$k7Xh...
//! alice:technician:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$Zm9v...
//! ```
//!
//! - `user`: 1 to 64 characters of `A-Z a-z 0-9 . _ -`; unique in the file.
//!   Users of role `kiosk` must be valid kiosk ids (`[a-z0-9-]{1,64}`).
//! - `role`: `kiosk`, `gateway`, `backend` or `technician` (see [`Role`]).
//! - `hash`: `$sha256$<salt>$<digest>` for generated secrets or an argon2id
//!   PHC string for chosen passwords (see [`crate::hash`]).
//!
//! A malformed line, a duplicate user or an unknown hash scheme makes the
//! whole file invalid, with an error naming the file and line number.
//!
//! # Reloading
//!
//! The store looks at the file's size, mtime and inode on every lookup (one
//! `stat`, about a microsecond) and reloads it when they changed, so a user
//! added or deleted with `kiosk-broker passwd` counts from the next login,
//! without a restart. A file that becomes unreadable or invalid is logged and
//! ignored: the last good credentials stay in force.
//!
//! # Writing
//!
//! [`set_password`] and [`delete_user`] rewrite the file atomically (a
//! temporary file in the same directory, fsync, rename) with mode `0600`,
//! keeping every other line and comment as it was. The new file belongs to the
//! user who ran the command. Two concurrent writers are not serialized: the
//! last rename wins.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use kiosk_schemas::{IdError, KioskId, Secret};
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::hash::{HashError, StoredHash};

/// Longest accepted user name, in bytes.
pub const MAX_USER_LEN: usize = 64;

/// What a user may do once logged in. Authorization by role is the job of
/// the topic ACL (a later issue); authentication only uses it for the client
/// id rule of [`Role::Kiosk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A kiosk (Raspberry Pi). Its user name is its [`KioskId`] and its MQTT
    /// client id must equal its user name.
    Kiosk,
    /// The gateway's own MQTT client.
    Gateway,
    /// A backend that speaks MQTT itself.
    Backend,
    /// A person reading the fleet's topics, e.g. with `mosquitto_sub`.
    Technician,
}

impl Role {
    /// Every role, in file-format spelling order.
    pub const ALL: [Role; 4] = [Role::Kiosk, Role::Gateway, Role::Backend, Role::Technician];

    /// The role's spelling in the credentials file: `kiosk`, `gateway`,
    /// `backend` or `technician`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Kiosk => "kiosk",
            Role::Gateway => "gateway",
            Role::Backend => "backend",
            Role::Technician => "technician",
        }
    }

    /// The role a new user gets when none is given: the role of the same name
    /// for the users `gateway`, `backend` and `technician`, otherwise
    /// [`Role::Kiosk`].
    pub fn default_for_user(user: &str) -> Role {
        Role::ALL
            .into_iter()
            .find(|role| *role != Role::Kiosk && role.as_str() == user)
            .unwrap_or(Role::Kiosk)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `kiosk`, `gateway`, `backend`, `technician`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected kiosk, gateway, backend or technician")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The answer to a login attempt. A refusal is an expected outcome, not an
/// error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The password matches and the client id is allowed.
    Accepted {
        /// The user's role.
        role: Role,
    },
    /// The login must be refused.
    Refused {
        /// Why; for the log, never for the client.
        reason: RefuseReason,
    },
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// No such user in the credentials file.
    UnknownUser,
    /// The password does not match the user's hash.
    WrongPassword,
    /// The client id is not bound to this identity: a kiosk's must equal
    /// its user name; a role user's must be its user name or
    /// `<user name>-<suffix>`, and must not be (or start with) another
    /// user's name.
    ClientIdMismatch,
    /// The client id is one of the gateway's (`broker.client_id` and its
    /// producer sibling `<client_id>-pub`), reserved to role `gateway`.
    ReservedClientId,
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefuseReason::UnknownUser => "unknown user",
            RefuseReason::WrongPassword => "wrong password",
            RefuseReason::ClientIdMismatch => {
                "client id not bound to this user (a kiosk's is its user name, a role user's is <user> or <user>-<suffix>)"
            }
            RefuseReason::ReservedClientId => "client id reserved to the gateway",
        })
    }
}

/// Why one line of the credentials file, or a new entry, is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not three `:`-separated fields.
    #[error("expected <user>:<role>:<hash>")]
    Shape,
    /// The user name has characters outside `A-Z a-z 0-9 . _ -` or is empty
    /// or longer than 64 bytes.
    #[error(
        "invalid user name {0:?}: expected 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    User(String),
    /// A user of role `kiosk` whose name is not a kiosk id.
    #[error("a kiosk's user name must be its kiosk id: {0}")]
    KioskId(IdError),
    /// The role field is not a known role.
    #[error(transparent)]
    Role(#[from] UnknownRole),
    /// The hash field is not a supported hash.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The user already appeared on an earlier line.
    #[error("duplicate user {user:?}, first defined on line {first}")]
    Duplicate {
        /// The repeated user name.
        user: String,
        /// 1-based line number of its first definition.
        first: usize,
    },
}

/// Failure to read, parse or write the credentials file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file cannot be read.
    #[error("cannot read credentials file {}: {error}", path.display())]
    Read {
        /// The credentials file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// The file, or its temporary copy, cannot be written.
    #[error("cannot write credentials file {}: {error}", path.display())]
    Write {
        /// The credentials file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// A line of the file is invalid.
    #[error("{}:{line}: {error}", path.display())]
    Line {
        /// The credentials file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        error: LineError,
    },
    /// The entry given to [`set_password`] is invalid.
    #[error("invalid entry: {0}")]
    Entry(LineError),
}

// By hand rather than `#[from]`, which would also make the line error the
// `source` and print its message twice in error chains.
impl From<LineError> for CredentialsError {
    fn from(error: LineError) -> Self {
        CredentialsError::Entry(error)
    }
}

/// One user of the file.
#[derive(Debug)]
struct Entry {
    role: Role,
    hash: StoredHash,
    /// Identifies this version of the user's line (role and hash), to see
    /// that a live session's credentials changed.
    fingerprint: u64,
}

/// The parsed file: user name to entry.
#[derive(Debug, Default)]
struct Table {
    users: HashMap<String, Entry>,
}

/// The identity rule for client ids (DESIGN.md, "Topics", identity): MQTT
/// lets a CONNECT with a live session's client id take that session over
/// (MQTT-3.1.4-2), so no user may pick another identity's client id.
///
/// - A client id in `gateway_ids` is allowed to role `gateway` only.
/// - A kiosk's client id is its user name.
/// - A role user's client id is its user name or `<user name>-<suffix>`
///   (or empty: the broker assigns a unique one, MQTT-3.1.3-6), and the user whose name is the longest such prefix of the client id
///   must be this user: `ops` may not use `ops-team-1` when a user
///   `ops-team` exists, nor `kiosk-b` when kiosk `kiosk-b` exists.
fn client_id_check<V>(
    users: &HashMap<String, V>,
    gateway_ids: &[String],
    role: Role,
    username: &str,
    client_id: &str,
) -> Result<(), RefuseReason> {
    if gateway_ids.iter().any(|id| id == client_id) {
        return if role == Role::Gateway {
            Ok(())
        } else {
            Err(RefuseReason::ReservedClientId)
        };
    }
    if role != Role::Kiosk && client_id.is_empty() {
        // MQTT-3.1.3-6: the broker assigns a unique client id, which can
        // take over nobody's session.
        return Ok(());
    }
    if role == Role::Kiosk {
        return if client_id == username {
            Ok(())
        } else {
            Err(RefuseReason::ClientIdMismatch)
        };
    }
    let owner = owner_candidates(client_id)
        .rev()
        .find(|prefix| users.contains_key(*prefix));
    if owner == Some(username) {
        Ok(())
    } else {
        Err(RefuseReason::ClientIdMismatch)
    }
}

/// The user names whose client ids `client_id` could be, shortest first:
/// every prefix before a `-`, then `client_id` itself.
fn owner_candidates(client_id: &str) -> impl DoubleEndedIterator<Item = &str> {
    client_id
        .match_indices('-')
        .map(|(at, _)| &client_id[..at])
        .chain(std::iter::once(client_id))
}

/// What identifies one version of the file without reading it. An atomic
/// rewrite changes the inode even when size and mtime (1 s resolution on some
/// file systems) do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    dev: u64,
    ino: u64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            dev,
            ino,
        }
    }
}

/// The credentials file in memory, reloaded when the file changes (see the
/// module docs). Cheap to share: wrap it in an [`Arc`]; every method takes
/// `&self`.
pub struct CredentialStore {
    path: PathBuf,
    table: RwLock<Arc<Table>>,
    /// Stamp of the file version last looked at (loaded or rejected); `None`
    /// while the file is missing or unreadable, so that is logged once.
    seen: Mutex<Option<FileStamp>>,
    /// Counts successful reloads, so watchers see that the file changed.
    generation: AtomicU64,
    /// Bounds concurrent argon2 checks: each takes 19 MiB and tens of ms, and
    /// a flood of logins to an argon2 user must not exhaust memory or starve
    /// the blocking pool.
    slow_checks: Semaphore,
    /// Client ids only role `gateway` may use.
    gateway_client_ids: Vec<String>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialStore")
            .field("path", &self.path)
            .field("users", &self.table().users.len())
            .finish()
    }
}

impl CredentialStore {
    /// Loads the credentials file at `path`.
    ///
    /// # Errors
    /// [`CredentialsError::Read`] when the file cannot be read (missing
    /// included), [`CredentialsError::Line`] naming the first invalid line.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, CredentialsError> {
        let path = path.into();
        let stamp = fs::metadata(&path)
            .map(|meta| FileStamp::of(&meta))
            .map_err(|error| CredentialsError::Read {
                path: path.clone(),
                error,
            })?;
        let table = load(&path)?;
        if table.users.is_empty() {
            warn!(path = %path.display(), "credentials file has no users: every login will be refused");
        }
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(CredentialStore {
            path,
            table: RwLock::new(Arc::new(table)),
            seen: Mutex::new(Some(stamp)),
            generation: AtomicU64::new(0),
            slow_checks: Semaphore::new(parallelism),
            gateway_client_ids: Vec::new(),
        })
    }

    /// Reserves `ids` (the gateway's client ids) to users of role
    /// [`Role::Gateway`]: they may use them besides their own user name, and
    /// nobody else may.
    #[must_use]
    pub fn with_gateway_client_ids(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.gateway_client_ids = ids.into_iter().collect();
        self
    }

    /// The client ids reserved to role `gateway`.
    pub fn gateway_client_ids(&self) -> &[String] {
        &self.gateway_client_ids
    }

    /// The credentials file this store reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks one login. `client_id` and `username` come from the MQTT
    /// CONNECT packet as is.
    ///
    /// Refuses unknown users and wrong passwords, and client ids not bound
    /// to the user (see [`client_id_check`]). `$sha256$` hashes are checked inline in about
    /// a microsecond, in constant time; argon2 hashes on the blocking pool,
    /// at most one per CPU at a time. An unknown user costs the same as a
    /// `$sha256$` check.
    pub async fn verify(&self, client_id: &str, username: &str, password: &Secret) -> AuthOutcome {
        self.refresh();
        let table = self.table();
        let Some(entry) = table.users.get(username) else {
            StoredHash::burn_fast(password);
            return AuthOutcome::Refused {
                reason: RefuseReason::UnknownUser,
            };
        };
        let password_ok = if entry.hash.is_slow() {
            self.verify_slow(&entry.hash, password).await
        } else {
            entry.hash.verify(password)
        };
        if !password_ok {
            return AuthOutcome::Refused {
                reason: RefuseReason::WrongPassword,
            };
        }
        match client_id_check(
            &table.users,
            &self.gateway_client_ids,
            entry.role,
            username,
            client_id,
        ) {
            Ok(()) => AuthOutcome::Accepted { role: entry.role },
            Err(reason) => AuthOutcome::Refused { reason },
        }
    }

    async fn verify_slow(&self, hash: &StoredHash, password: &Secret) -> bool {
        // The semaphore is never closed, so acquire cannot fail.
        let Ok(_permit) = self.slow_checks.acquire().await else {
            return false;
        };
        let (hash, password) = (hash.clone(), password.clone());
        match tokio::task::spawn_blocking(move || hash.verify(&password)).await {
            Ok(ok) => ok,
            Err(e) => {
                error!(error = %e, "password check task failed");
                false
            }
        }
    }

    /// The role of `user`, or `None` if the file does not list it.
    pub fn role(&self, user: &str) -> Option<Role> {
        self.refresh();
        self.table().users.get(user).map(|entry| entry.role)
    }

    /// An opaque value that changes whenever `user`'s line changes (new
    /// password or role); `None` when the file does not list `user`. Does
    /// not re-read the file: call [`CredentialStore::refresh`] first.
    pub fn fingerprint(&self, user: &str) -> Option<u64> {
        self.table().users.get(user).map(|entry| entry.fingerprint)
    }

    /// Counts the reloads of the file since [`CredentialStore::open`]; a
    /// change means users may have been added, removed or changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Every user of role `kiosk`, sorted.
    pub fn kiosks(&self) -> Vec<KioskId> {
        self.refresh();
        let mut kiosks: Vec<KioskId> = self
            .table()
            .users
            .iter()
            .filter(|(_, entry)| entry.role == Role::Kiosk)
            // Kiosk user names were checked to be kiosk ids when loaded.
            .filter_map(|(user, _)| KioskId::new(user.as_str()).ok())
            .collect();
        kiosks.sort();
        kiosks
    }

    /// The role user (not a kiosk) whose client ids `client_id` would fall
    /// under: one named `client_id`, or the longest name `n` with
    /// `client_id` starting with `n-`; with its role. `kiosk add` refuses
    /// such kiosk ids, which a role user could otherwise log in as.
    pub fn role_user_owning(&self, client_id: &str) -> Option<(String, Role)> {
        self.refresh();
        let table = self.table();
        owner_candidates(client_id).rev().find_map(|prefix| {
            let entry = table.users.get(prefix)?;
            (entry.role != Role::Kiosk).then(|| (prefix.to_owned(), entry.role))
        })
    }

    /// True when `kiosk` is a user of role `kiosk`.
    pub fn is_kiosk(&self, kiosk: &KioskId) -> bool {
        self.role(kiosk.as_str()) == Some(Role::Kiosk)
    }

    /// Number of users currently loaded.
    pub fn len(&self) -> usize {
        self.refresh();
        self.table().users.len()
    }

    /// True when no user is loaded: every login is refused.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reloads the file if its size, mtime or inode changed since it was last
    /// looked at. Every lookup calls it; a failure is logged and leaves the
    /// previous credentials in force.
    pub fn refresh(&self) {
        let stamp = fs::metadata(&self.path).map(|meta| FileStamp::of(&meta));
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = match stamp {
            Ok(stamp) if *seen == Some(stamp) => return,
            Ok(stamp) => stamp,
            Err(e) => {
                if seen.take().is_some() {
                    warn!(path = %self.path.display(), error = %e, "credentials file unreadable; keeping the credentials loaded before");
                }
                return;
            }
        };
        // Recorded before reading: if the file changes again meanwhile, the
        // next lookup sees a new stamp and reads it again.
        *seen = Some(stamp);
        match load(&self.path) {
            Ok(table) => {
                info!(path = %self.path.display(), users = table.users.len(), "credentials reloaded");
                *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                warn!(error = %e, "credentials file changed but is invalid; keeping the credentials loaded before");
            }
        }
    }

    fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn load(path: &Path) -> Result<Table, CredentialsError> {
    let text = fs::read_to_string(path).map_err(|error| CredentialsError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse(&text).map_err(|(line, error)| CredentialsError::Line {
        path: path.to_owned(),
        line,
        error,
    })
}

/// Parses a whole file; the error carries the 1-based line number.
fn parse(text: &str) -> Result<Table, (usize, LineError)> {
    let mut table = Table::default();
    let mut first_line = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let Some(line) = entry_text(raw) else {
            continue;
        };
        let (user, entry) = parse_line(line).map_err(|e| (number, e))?;
        if let Some(&first) = first_line.get(user) {
            let user = user.to_owned();
            return Err((number, LineError::Duplicate { user, first }));
        }
        first_line.insert(user, number);
        table.users.insert(user.to_owned(), entry);
    }
    Ok(table)
}

/// The entry on a raw line, trimmed; `None` for blank and comment lines.
fn entry_text(raw: &str) -> Option<&str> {
    let line = raw.trim();
    (!line.is_empty() && !line.starts_with('#')).then_some(line)
}

fn parse_line(line: &str) -> Result<(&str, Entry), LineError> {
    let mut fields = line.splitn(3, ':');
    let (Some(user), Some(role), Some(hash)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(LineError::Shape);
    };
    let role: Role = role.parse()?;
    check_user(user, role)?;
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (role.as_str(), hash).hash(&mut hasher);
        hasher.finish()
    };
    let hash = hash.parse()?;
    Ok((
        user,
        Entry {
            role,
            hash,
            fingerprint,
        },
    ))
}

fn check_user(user: &str, role: Role) -> Result<(), LineError> {
    let valid = !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(LineError::User(user.to_owned()));
    }
    if role == Role::Kiosk {
        KioskId::new(user).map_err(LineError::KioskId)?;
    }
    Ok(())
}

/// What [`set_password`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new line was appended.
    Added,
    /// The user's line was replaced in place.
    Updated,
}

/// Adds `user` with `role` and `hash` to the credentials file at `path`, or
/// replaces its line if it is there. Creates the file if missing. `hash` is a
/// complete hash field, as made by
/// [`hash_generated_secret`](crate::hash_generated_secret) or
/// [`hash_chosen_password`](crate::hash_chosen_password). Other lines and
/// comments are kept byte for byte (line endings become `\n`); the write is
/// atomic, with mode `0600`.
///
/// # Errors
/// [`CredentialsError::Entry`] for an invalid user, role/user combination or
/// hash; [`CredentialsError::Line`] if the existing file is invalid (fix it
/// first: the broker would not load it either); [`CredentialsError::Read`] /
/// [`CredentialsError::Write`] on I/O failure.
pub fn set_password(
    path: &Path,
    user: &str,
    role: Role,
    hash: &str,
) -> Result<Change, CredentialsError> {
    let new_line = format!("{user}:{role}:{hash}");
    // The same check as when loading, so what is written can be read back.
    parse_line(&new_line)?;
    let text = read_for_update(path)?;
    let mut change = Change::Added;
    let mut out = String::with_capacity(text.len() + new_line.len() + 1);
    for raw in text.lines() {
        if line_user(raw) == Some(user) {
            out.push_str(&new_line);
            change = Change::Updated;
        } else {
            out.push_str(raw);
        }
        out.push('\n');
    }
    if change == Change::Added {
        out.push_str(&new_line);
        out.push('\n');
    }
    write_atomic(path, &out)?;
    Ok(change)
}

/// Removes `user` from the credentials file at `path`, keeping every other
/// line. Returns whether the user was there; a missing file has no users.
///
/// # Errors
/// As [`set_password`], except [`CredentialsError::Entry`].
pub fn delete_user(path: &Path, user: &str) -> Result<bool, CredentialsError> {
    let text = read_for_update(path)?;
    let mut found = false;
    let mut out = String::with_capacity(text.len());
    for raw in text.lines() {
        if line_user(raw) == Some(user) {
            found = true;
        } else {
            out.push_str(raw);
            out.push('\n');
        }
    }
    if found {
        write_atomic(path, &out)?;
    }
    Ok(found)
}

/// The file's text (empty if missing), checked to be valid.
fn read_for_update(path: &Path) -> Result<String, CredentialsError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(CredentialsError::Read {
                path: path.to_owned(),
                error,
            });
        }
    };
    parse(&text).map_err(|(line, error)| CredentialsError::Line {
        path: path.to_owned(),
        line,
        error,
    })?;
    Ok(text)
}

fn line_user(raw: &str) -> Option<&str> {
    entry_text(raw).and_then(|line| line.split(':').next())
}

/// Replaces `path` with `contents`: temp file in the same directory (so the
/// rename stays on one file system), fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, contents: &str) -> Result<(), CredentialsError> {
    let write_error = |error| CredentialsError::Write {
        path: path.to_owned(),
        error,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        write_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let written = write_new_private(&tmp, contents).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(write_error(e));
    }
    // Makes the rename itself durable; failure only risks the old version
    // reappearing after a power cut, so it is not worth failing for.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn write_new_private(path: &Path, contents: &str) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{generate_secret, hash_chosen_password, hash_generated_secret};

    fn sha_line(user: &str, role: &str) -> (String, Secret) {
        let secret = generate_secret();
        let line = format!("{user}:{role}:{}", hash_generated_secret(&secret));
        (line, secret)
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("credentials");
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn client_ids_are_bound_to_identities() {
        let users: HashMap<String, ()> = ["kiosk-b", "ops", "ops-team", "tech", "gateway"]
            .into_iter()
            .map(|u| (u.to_owned(), ()))
            .collect();
        let gateway_ids = ["kiosk-gateway".to_owned(), "kiosk-gateway-pub".to_owned()];
        let check = |role, user: &str, client_id: &str| {
            client_id_check(&users, &gateway_ids, role, user, client_id)
        };
        let mismatch = Err(RefuseReason::ClientIdMismatch);
        let reserved = Err(RefuseReason::ReservedClientId);
        // (role, user, client id, outcome)
        let cases = [
            (Role::Kiosk, "kiosk-b", "kiosk-b", Ok(())),
            (Role::Kiosk, "kiosk-b", "kiosk-b-2", mismatch),
            (Role::Technician, "tech", "tech", Ok(())),
            (Role::Technician, "tech", "tech-laptop", Ok(())),
            (Role::Technician, "tech", "kiosk-b", mismatch),
            (Role::Technician, "tech", "techx", mismatch),
            (Role::Technician, "tech", "", Ok(())),
            (Role::Kiosk, "kiosk-b", "", mismatch),
            (Role::Technician, "tech", "kiosk-gateway", reserved),
            (Role::Backend, "ops", "ops-1", Ok(())),
            (Role::Backend, "ops", "ops-team", mismatch),
            (Role::Backend, "ops", "ops-team-1", mismatch),
            (Role::Backend, "ops-team", "ops-team-1", Ok(())),
            (Role::Backend, "ops", "kiosk-gateway-pub", reserved),
            (Role::Kiosk, "kiosk-b", "kiosk-gateway", reserved),
            (Role::Gateway, "gateway", "kiosk-gateway", Ok(())),
            (Role::Gateway, "gateway", "kiosk-gateway-pub", Ok(())),
            (Role::Gateway, "gateway", "gateway-2", Ok(())),
            (Role::Gateway, "gateway", "kiosk-b", mismatch),
        ];
        for (role, user, client_id, expected) in cases {
            assert_eq!(
                check(role, user, client_id),
                expected,
                "{role} {user} as {client_id:?}"
            );
        }
    }

    #[test]
    fn roles() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("Kiosk".parse::<Role>().is_err());
        assert_eq!(Role::default_for_user("gateway"), Role::Gateway);
        assert_eq!(Role::default_for_user("backend"), Role::Backend);
        assert_eq!(Role::default_for_user("technician"), Role::Technician);
        assert_eq!(Role::default_for_user("kiosk"), Role::Kiosk);
        assert_eq!(Role::default_for_user("demo-1"), Role::Kiosk);
    }

    #[test]
    fn parses_good_lines_comments_and_blanks() {
        let (kiosk, _) = sha_line("demo-1", "kiosk");
        let (gateway, _) = sha_line("gateway", "gateway");
        let (backend, _) = sha_line("Backend_2.x", "backend");
        let text =
            format!("# header\n\n   \n{kiosk}\n  {gateway}  \r\n\t# indented comment\n{backend}\n");
        let table = parse(&text).unwrap();
        assert_eq!(table.users.len(), 3);
        assert_eq!(table.users["demo-1"].role, Role::Kiosk);
        assert_eq!(table.users["gateway"].role, Role::Gateway);
        assert_eq!(table.users["Backend_2.x"].role, Role::Backend);
    }

    #[test]
    fn malformed_lines_name_their_number() {
        let (good, _) = sha_line("demo-1", "kiosk");
        let (dup, _) = sha_line("demo-1", "kiosk");
        let cases: Vec<(String, usize, &str)> = vec![
            ("demo-2".into(), 3, "expected <user>:<role>:<hash>"),
            ("demo-2:kiosk".into(), 3, "expected <user>:<role>:<hash>"),
            (
                "demo-2:admin:$sha256$x$y".into(),
                3,
                "unknown role \"admin\"",
            ),
            (":backend:$sha256$x$y".into(), 3, "invalid user name \"\""),
            (
                "bad user:backend:$sha256$x$y".into(),
                3,
                "invalid user name",
            ),
            (
                "Demo:kiosk:$sha256$x$y".into(),
                3,
                "kiosk's user name must be its kiosk id",
            ),
            ("demo-2:kiosk:plain".into(), 3, "unknown hash scheme"),
            (
                "demo-2:kiosk:$md5$a$b".into(),
                3,
                "unknown hash scheme \"$md5$\"",
            ),
            (
                "demo-2:kiosk:$sha256$AAAA".into(),
                3,
                "malformed $sha256$ hash",
            ),
            (
                "demo-2:kiosk:$argon2id$zzz".into(),
                3,
                "malformed $argon2id$ hash",
            ),
            (dup, 3, "duplicate user \"demo-1\", first defined on line 2"),
        ];
        for (bad, line, expected) in cases {
            let text = format!("# comment\n{good}\n{bad}\n");
            let (number, error) = parse(&text).unwrap_err();
            assert_eq!(number, line, "{bad}");
            assert!(error.to_string().contains(expected), "{bad}: {error}");
        }
    }

    #[test]
    fn open_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "# one\n\nnope\n");
        let err = CredentialStore::open(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}:3: expected <user>:<role>:<hash>", path.display())
        );
        let missing = dir.path().join("missing");
        let err = CredentialStore::open(&missing).unwrap_err().to_string();
        assert!(err.contains("cannot read credentials file"), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[tokio::test]
    async fn verify_sha256_users_and_client_id_rule() {
        let dir = tempfile::tempdir().unwrap();
        let (kiosk, kiosk_secret) = sha_line("demo-1", "kiosk");
        let (tech, tech_secret) = sha_line("technician", "technician");
        let path = write(&dir, &format!("{kiosk}\n{tech}\n"));
        let store = CredentialStore::open(&path).unwrap();
        let accepted = |role| AuthOutcome::Accepted { role };
        let refused = |reason| AuthOutcome::Refused { reason };

        assert_eq!(
            store.verify("demo-1", "demo-1", &kiosk_secret).await,
            accepted(Role::Kiosk)
        );
        assert_eq!(
            store.verify("demo-1", "demo-1", &tech_secret).await,
            refused(RefuseReason::WrongPassword)
        );
        assert_eq!(
            store.verify("other", "demo-1", &kiosk_secret).await,
            refused(RefuseReason::ClientIdMismatch)
        );
        assert_eq!(
            store.verify("", "demo-1", &kiosk_secret).await,
            refused(RefuseReason::ClientIdMismatch)
        );
        assert_eq!(
            store.verify("demo-2", "demo-2", &kiosk_secret).await,
            refused(RefuseReason::UnknownUser)
        );
        assert_eq!(
            store.verify("", "", &Secret::default()).await,
            refused(RefuseReason::UnknownUser)
        );
        // Role users: their name, <name>-<suffix>, or none (MQTT-3.1.3-6:
        // the broker assigns a unique one).
        for client_id in ["technician-laptop", "", "technician"] {
            assert_eq!(
                store.verify(client_id, "technician", &tech_secret).await,
                accepted(Role::Technician)
            );
        }
        for client_id in ["mosqsub|1234-host", "demo-1", "technicianx"] {
            assert_eq!(
                store.verify(client_id, "technician", &tech_secret).await,
                refused(RefuseReason::ClientIdMismatch)
            );
        }
    }

    #[tokio::test]
    async fn verify_argon2_users() {
        let dir = tempfile::tempdir().unwrap();
        let pw = Secret::new("a long chosen password");
        let hash = hash_chosen_password(&pw).unwrap();
        let path = write(&dir, &format!("alice:technician:{hash}\n"));
        let store = CredentialStore::open(&path).unwrap();
        assert_eq!(
            store.verify("alice-x", "alice", &pw).await,
            AuthOutcome::Accepted {
                role: Role::Technician
            }
        );
        assert_eq!(
            store
                .verify("alice-x", "alice", &Secret::new("guess"))
                .await,
            AuthOutcome::Refused {
                reason: RefuseReason::WrongPassword
            }
        );
    }

    #[test]
    fn lookups() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = sha_line("kiosk-b", "kiosk");
        let (b, _) = sha_line("kiosk-a", "kiosk");
        let (c, _) = sha_line("gateway", "gateway");
        let path = write(&dir, &format!("{a}\n{b}\n{c}\n"));
        let store = CredentialStore::open(&path).unwrap();
        let ids: Vec<String> = store.kiosks().into_iter().map(String::from).collect();
        assert_eq!(ids, ["kiosk-a", "kiosk-b"]);
        assert!(store.is_kiosk(&KioskId::new("kiosk-a").unwrap()));
        assert!(!store.is_kiosk(&KioskId::new("gateway").unwrap()));
        assert!(!store.is_kiosk(&KioskId::new("kiosk-c").unwrap()));
        assert_eq!(store.role("gateway"), Some(Role::Gateway));
        assert_eq!(store.role("nobody"), None);
        assert_eq!(store.len(), 3);
    }

    #[tokio::test]
    async fn reloads_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_secret) = sha_line("demo-1", "kiosk");
        let path = write(&dir, &format!("{a}\n"));
        let store = CredentialStore::open(&path).unwrap();
        assert_eq!(store.role("demo-2"), None);

        let b_secret = generate_secret();
        set_password(
            &path,
            "demo-2",
            Role::Kiosk,
            &hash_generated_secret(&b_secret),
        )
        .unwrap();
        assert_eq!(
            store.verify("demo-2", "demo-2", &b_secret).await,
            AuthOutcome::Accepted { role: Role::Kiosk }
        );

        // An invalid file is ignored; the last good table stays.
        fs::write(&path, "garbage\n").unwrap();
        assert_eq!(store.role("demo-2"), Some(Role::Kiosk));
        // A missing file too.
        fs::remove_file(&path).unwrap();
        assert_eq!(store.role("demo-2"), Some(Role::Kiosk));

        // Back to a valid file with only demo-1: demo-2 is gone.
        fs::write(&path, format!("{a}\n")).unwrap();
        assert_eq!(store.role("demo-2"), None);
        assert_eq!(
            store.verify("demo-1", "demo-1", &a_secret).await,
            AuthOutcome::Accepted { role: Role::Kiosk }
        );
    }

    #[test]
    fn set_and_delete_keep_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = sha_line("demo-1", "kiosk");
        let (b, _) = sha_line("demo-2", "kiosk");
        let original = format!("# fleet credentials\n{a}\n\n# second kiosk\n{b}\n");
        let path = write(&dir, &original);

        let new_hash = hash_generated_secret(&generate_secret());
        let change = set_password(&path, "demo-1", Role::Kiosk, &new_hash).unwrap();
        assert_eq!(change, Change::Updated);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("# fleet credentials\ndemo-1:kiosk:{new_hash}\n\n# second kiosk\n{b}\n")
        );

        let change = set_password(&path, "backend", Role::Backend, &new_hash).unwrap();
        assert_eq!(change, Change::Added);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with(&format!("{b}\nbackend:backend:{new_hash}\n")),
            "{text}"
        );

        assert!(delete_user(&path, "demo-1").unwrap());
        assert!(!delete_user(&path, "demo-1").unwrap());
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("# fleet credentials\n\n# second kiosk\n{b}\nbackend:backend:{new_hash}\n")
        );
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn creates_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new-credentials");
        let hash = hash_generated_secret(&generate_secret());
        assert_eq!(
            set_password(&path, "demo-1", Role::Kiosk, &hash).unwrap(),
            Change::Added
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            CredentialStore::open(&path)
                .unwrap()
                .is_kiosk(&KioskId::new("demo-1").unwrap())
        );
        assert!(!delete_user(&dir.path().join("absent"), "x").unwrap());
    }

    #[test]
    fn refuses_invalid_entries_and_invalid_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let hash = hash_generated_secret(&generate_secret());
        for (user, role, hash) in [
            ("Demo", Role::Kiosk, hash.as_str()),
            ("a:b", Role::Backend, hash.as_str()),
            ("demo-1", Role::Kiosk, "$md5$x$y"),
            (
                "demo-1",
                Role::Kiosk,
                &format!("{hash}\nevil:backend:{hash}"),
            ),
        ] {
            let err = set_password(&path, user, role, hash).unwrap_err();
            assert!(matches!(err, CredentialsError::Entry(_)), "{user}: {err}");
        }
        assert!(!path.exists());

        fs::write(&path, "broken line\n").unwrap();
        let err = set_password(&path, "demo-1", Role::Kiosk, &hash).unwrap_err();
        assert!(
            matches!(err, CredentialsError::Line { line: 1, .. }),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "broken line\n");
    }
}
