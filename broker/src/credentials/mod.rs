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
//!
//! # Layout
//!
//! This module holds the roles, the outcomes of a login and the identity
//! rule for client ids; `file` the file format, `store` the live
//! [`CredentialStore`], `edit` the functions that rewrite the file
//! ([`set_password`], [`delete_user`]).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

mod edit;
mod file;
mod store;

pub use edit::{Change, delete_user, set_password};
pub use file::LineError;
pub use store::CredentialStore;

/// Longest accepted user name, in bytes.
pub const MAX_USER_LEN: usize = 64;

/// What a user may do once logged in. Authorization by role is the job of
/// the topic ACL (a later issue); authentication only uses it for the client
/// id rule of [`Role::Kiosk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A kiosk (Raspberry Pi). Its user name is its
    /// [`KioskId`](kiosk_schemas::KioskId) and its MQTT client id must
    /// equal its user name.
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

/// One user of the credentials file as [`read_users`] lists it: for tools
/// that hand the fleet's users to another broker.
pub struct UserEntry {
    /// The user name.
    pub name: String,
    /// Its role.
    pub role: Role,
    hash: crate::hash::StoredHash,
}

impl UserEntry {
    /// True when the stored hash is `$sha256$`, i.e. the password is a
    /// generated secret (192 random bits); false for argon2id (chosen by a
    /// person).
    pub fn generated(&self) -> bool {
        !self.hash.is_slow()
    }

    /// Checks `secret` against the stored hash. Blocks for tens of ms on
    /// argon2id hashes.
    pub fn verify(&self, secret: &kiosk_schemas::Secret) -> bool {
        self.hash.verify(secret)
    }
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("hash", &self.hash)
            .finish()
    }
}

/// Every user of the credentials file at `path`, sorted by name.
///
/// # Errors
/// As [`CredentialStore::open`].
pub fn read_users(path: &std::path::Path) -> Result<Vec<UserEntry>, CredentialsError> {
    let table = file::load(path)?;
    let mut users: Vec<UserEntry> = table
        .users
        .into_iter()
        .map(|(name, entry)| UserEntry {
            name,
            role: entry.role,
            hash: entry.hash,
        })
        .collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
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

/// Helpers shared by the tests of the submodules.
#[cfg(test)]
mod test_support {
    use std::fs;
    use std::path::PathBuf;

    use kiosk_schemas::Secret;

    use crate::hash::{generate_secret, hash_generated_secret};

    /// A `<user>:<role>:<hash>` line with a fresh generated secret, and the
    /// secret.
    pub(super) fn sha_line(user: &str, role: &str) -> (String, Secret) {
        let secret = generate_secret();
        let line = format!("{user}:{role}:{}", hash_generated_secret(&secret));
        (line, secret)
    }

    /// Writes `text` as the file `credentials` in `dir`.
    pub(super) fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("credentials");
        fs::write(&path, text).unwrap();
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
