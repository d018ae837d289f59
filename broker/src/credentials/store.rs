//! The live [`CredentialStore`]: the file in memory, reloaded when it
//! changes (see the [module docs](super), "Reloading").

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use kiosk_schemas::{KioskId, Secret};
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use super::file::{Table, load};
use super::{AuthOutcome, CredentialsError, RefuseReason, Role, client_id_check, owner_candidates};
use crate::hash::StoredHash;

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

#[cfg(test)]
mod tests {
    use super::super::set_password;
    use super::super::test_support::{sha_line, write};
    use super::*;
    use crate::hash::{generate_secret, hash_chosen_password, hash_generated_secret};

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
}
