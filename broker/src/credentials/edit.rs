//! Editing the credentials file (see the [module docs](super), "Writing"):
//! [`set_password`] and [`delete_user`], used by `kiosk-broker passwd` and
//! the gateway's `kiosk add|remove|rotate`.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::file::{format_line, line_user, parse, parse_line};
use super::{CredentialsError, Role};

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
    let new_line = format_line(user, role, hash);
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
    use kiosk_schemas::KioskId;

    use super::super::CredentialStore;
    use super::super::test_support::{sha_line, write};
    use super::*;
    use crate::hash::{generate_secret, hash_generated_secret};

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
