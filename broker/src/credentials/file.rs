//! The credentials file's format (see the [module docs](super)): parsing
//! a whole file into a [`Table`], one line into an [`Entry`], and the
//! [`LineError`] naming what is wrong with a line.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use kiosk_schemas::{IdError, KioskId};

use super::{CredentialsError, MAX_USER_LEN, Role, UnknownRole};
use crate::hash::{HashError, StoredHash};

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

/// One user of the file.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) role: Role,
    pub(super) hash: StoredHash,
    /// Identifies this version of the user's line (role and hash), to see
    /// that a live session's credentials changed.
    pub(super) fingerprint: u64,
}

/// The parsed file: user name to entry.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) users: HashMap<String, Entry>,
}

/// Reads and parses the file at `path`.
///
/// # Errors
/// [`CredentialsError::Read`] when it cannot be read,
/// [`CredentialsError::Line`] naming the first invalid line.
pub(super) fn load(path: &Path) -> Result<Table, CredentialsError> {
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
pub(super) fn parse(text: &str) -> Result<Table, (usize, LineError)> {
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

/// The line of `user` with `role` and `hash`, as [`parse_line`] reads it.
pub(super) fn format_line(user: &str, role: Role, hash: &str) -> String {
    format!("{user}:{role}:{hash}")
}

/// Parses one entry line (already trimmed): its user name and entry.
pub(super) fn parse_line(line: &str) -> Result<(&str, Entry), LineError> {
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

/// The user name on a raw line; `None` for blank and comment lines.
pub(super) fn line_user(raw: &str) -> Option<&str> {
    entry_text(raw).and_then(|line| line.split(':').next())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::sha_line;
    use super::*;

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
}
