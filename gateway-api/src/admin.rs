//! Fleet administration from the command line: `kiosk-gateway kiosk
//! add|rotate|remove|list`.
//!
//! A kiosk's credentials are a generated secret (192 random bits, see
//! [`kiosk_broker::generate_secret`]) whose salted SHA-256 goes into the
//! broker's credentials file (`broker.credentials`); the secret itself is
//! written once, to a provisioning file for the kiosk, and never stored on
//! the VPS. The provisioning file is JSON, mode 0600, so Ansible (or a
//! person) can read it:
//!
//! ```json
//! {"kiosk_id":"kiosk-7","username":"kiosk-7","password":"<secret>","created_at":"2026-11-21T10:00:00Z"}
//! ```
//!
//! A running broker re-reads the credentials file every second (and on
//! every login), so a new kiosk can connect at once, and a removed or
//! rotated one cannot log in again with its old secret: its live connection
//! is dropped within a second (`kiosk_broker_sessions_revoked_total`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use kiosk_broker::{CredentialStore, CredentialsError, Role};
use kiosk_schemas::KioskId;
use serde::Serialize;

/// Why an administration command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `add` of a kiosk that exists.
    #[error("kiosk {0} already exists; use `kiosk rotate` to give it a new secret")]
    Exists(KioskId),
    /// `rotate`/`remove` of a kiosk that does not exist.
    #[error("kiosk {0} does not exist")]
    Missing(KioskId),
    /// A user of that name exists with another role.
    #[error("{0} is a {1} user, not a kiosk")]
    NotAKiosk(String, Role),
    /// The kiosk id is `<user>` or starts with `<user>-` for a role user,
    /// whose client ids those are.
    #[error(
        "kiosk id {kiosk} is in the client ids of {role} user {user:?} (<user> or <user>-<suffix>); choose another id"
    )]
    RoleUserPrefix {
        /// The refused kiosk id.
        kiosk: KioskId,
        /// The role user.
        user: String,
        /// Its role.
        role: Role,
    },
    /// The kiosk id is one of the gateway's client ids.
    #[error(
        "kiosk id {0} is a client id of the gateway (broker.client_id or its -pub sibling); choose another id"
    )]
    GatewayClientId(KioskId),
    /// The credentials file could not be read or written.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The provisioning file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The provisioning file's content.
#[derive(Serialize)]
struct Provisioning<'a> {
    /// Absent for role users (`broker-config --issue-missing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    kiosk_id: Option<&'a str>,
    username: &'a str,
    password: &'a str,
    created_at: String,
}

/// The provisioning file's fields that `broker-config --secrets` reads back.
#[derive(serde::Deserialize)]
pub(crate) struct ProvisionedSecret {
    pub(crate) username: String,
    pub(crate) password: String,
}

/// The credentials file, or `None` while it does not exist (no users yet).
fn open_store(credentials: &Path) -> Result<Option<CredentialStore>, AdminError> {
    match CredentialStore::open(credentials) {
        Ok(store) => Ok(Some(store)),
        Err(CredentialsError::Read { error, .. })
            if error.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn role_of(credentials: &Path, kiosk: &KioskId) -> Result<Option<Role>, AdminError> {
    Ok(open_store(credentials)?.and_then(|store| store.role(kiosk.as_str())))
}

fn owning_role_user(
    credentials: &Path,
    kiosk: &KioskId,
) -> Result<Option<(String, Role)>, AdminError> {
    Ok(open_store(credentials)?.and_then(|store| store.role_user_owning(kiosk.as_str())))
}

/// Writes the provisioning file `out` (JSON, mode 0600, fsynced) for
/// `username` with `secret`; `kiosk_id` only for kiosks.
pub(crate) fn write_provisioning(
    out: &Path,
    username: &str,
    kiosk: bool,
    secret: &kiosk_schemas::Secret,
) -> Result<(), AdminError> {
    let body = Provisioning {
        kiosk_id: kiosk.then_some(username),
        username,
        password: secret.expose(),
        created_at: chrono::Utc::now().to_rfc3339(),
    };
    let json = serde_json::to_string_pretty(&body).unwrap_or_default() + "\n";
    let io = |source| AdminError::Write {
        path: out.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).write(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(out).map_err(io)?;
    f.write_all(json.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

fn write_secret(credentials: &Path, kiosk: &KioskId, out: &Path) -> Result<PathBuf, AdminError> {
    let secret = kiosk_broker::generate_secret();
    // The provisioning file first: if it cannot be written, the
    // credentials stay as they were.
    write_provisioning(out, kiosk.as_str(), true, &secret)?;
    kiosk_broker::set_password(
        credentials,
        kiosk.as_str(),
        Role::Kiosk,
        &kiosk_broker::hash_generated_secret(&secret),
    )?;
    Ok(out.to_owned())
}

/// Adds `kiosk` with a new secret; writes its provisioning file to `out`.
/// `gateway_client_ids` are the gateway's client ids (`broker.client_id`
/// and `<client_id>-pub`), which no kiosk may have.
///
/// # Errors
/// [`AdminError::Exists`] when it exists, [`AdminError::NotAKiosk`] when
/// the name is a role user, [`AdminError::RoleUserPrefix`] when it equals
/// or starts with `<user>-` of a role user, [`AdminError::GatewayClientId`]
/// for a gateway client id, I/O and credentials-file errors.
pub fn add(
    credentials: &Path,
    kiosk: &KioskId,
    out: &Path,
    gateway_client_ids: &[String],
) -> Result<PathBuf, AdminError> {
    if gateway_client_ids.iter().any(|id| id == kiosk.as_str()) {
        return Err(AdminError::GatewayClientId(kiosk.clone()));
    }
    if let Some((user, role)) = owning_role_user(credentials, kiosk)?
        && user != kiosk.as_str()
    {
        return Err(AdminError::RoleUserPrefix {
            kiosk: kiosk.clone(),
            user,
            role,
        });
    }
    match role_of(credentials, kiosk)? {
        None => write_secret(credentials, kiosk, out),
        Some(Role::Kiosk) => Err(AdminError::Exists(kiosk.clone())),
        Some(role) => Err(AdminError::NotAKiosk(kiosk.to_string(), role)),
    }
}

/// Gives `kiosk` a new secret (the old one stops working at the next
/// login); writes its provisioning file to `out`.
///
/// # Errors
/// [`AdminError::Missing`] when it does not exist, and as [`add`].
pub fn rotate(credentials: &Path, kiosk: &KioskId, out: &Path) -> Result<PathBuf, AdminError> {
    match role_of(credentials, kiosk)? {
        Some(Role::Kiosk) => write_secret(credentials, kiosk, out),
        None => Err(AdminError::Missing(kiosk.clone())),
        Some(role) => Err(AdminError::NotAKiosk(kiosk.to_string(), role)),
    }
}

/// Removes `kiosk` from the credentials file.
///
/// # Errors
/// [`AdminError::Missing`] when it does not exist, and as [`add`].
pub fn remove(credentials: &Path, kiosk: &KioskId) -> Result<(), AdminError> {
    match role_of(credentials, kiosk)? {
        Some(Role::Kiosk) => {
            kiosk_broker::delete_user(credentials, kiosk.as_str())?;
            Ok(())
        }
        None => Err(AdminError::Missing(kiosk.clone())),
        Some(role) => Err(AdminError::NotAKiosk(kiosk.to_string(), role)),
    }
}

/// The kiosks of the credentials file, sorted.
///
/// # Errors
/// Credentials-file errors.
pub fn list(credentials: &Path) -> Result<Vec<KioskId>, AdminError> {
    Ok(CredentialStore::open(credentials)?.kiosks())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn add_rotate_remove() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let k = KioskId::new("kiosk-7").unwrap();
        let out = dir.path().join("kiosk-7.json");
        add(&creds, &k, &out, &[]).unwrap();
        let first: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(first["kiosk_id"], "kiosk-7");
        let secret = first["password"].as_str().unwrap().to_owned();
        assert!(secret.len() >= 22, "at least 128 bits");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&creds).unwrap();
        assert!(!text.contains(&secret), "only the hash is stored");
        let store = CredentialStore::open(&creds).unwrap();
        let ok = store
            .verify(
                "kiosk-7",
                "kiosk-7",
                &kiosk_schemas::Secret::new(secret.clone()),
            )
            .await;
        assert!(matches!(ok, kiosk_broker::AuthOutcome::Accepted { .. }));

        assert!(matches!(
            add(&creds, &k, &out, &[]),
            Err(AdminError::Exists(_))
        ));
        rotate(&creds, &k, &out).unwrap();
        let store = CredentialStore::open(&creds).unwrap();
        let old = store
            .verify("kiosk-7", "kiosk-7", &kiosk_schemas::Secret::new(secret))
            .await;
        assert!(matches!(old, kiosk_broker::AuthOutcome::Refused { .. }));
        assert_eq!(list(&creds).unwrap(), vec![k.clone()]);
        remove(&creds, &k).unwrap();
        assert!(list(&creds).unwrap().is_empty());
        assert!(matches!(remove(&creds, &k), Err(AdminError::Missing(_))));
    }

    #[test]
    fn add_refuses_ids_of_role_users_and_of_the_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let hash = kiosk_broker::hash_generated_secret(&kiosk_broker::generate_secret());
        kiosk_broker::set_password(&creds, "ops", Role::Backend, &hash).unwrap();
        kiosk_broker::set_password(&creds, "tech", Role::Technician, &hash).unwrap();
        let out = dir.path().join("k.json");
        let gateway = vec!["kiosk-gateway".to_owned(), "kiosk-gateway-pub".to_owned()];
        let id = |s: &str| KioskId::new(s).unwrap();
        for refused in ["ops-1", "tech-kiosk-2", "ops-team-x"] {
            let err = add(&creds, &id(refused), &out, &gateway).unwrap_err();
            assert!(
                matches!(err, AdminError::RoleUserPrefix { .. }),
                "{refused}: {err}"
            );
        }
        assert!(matches!(
            add(&creds, &id("ops"), &out, &gateway),
            Err(AdminError::NotAKiosk(..))
        ));
        for reserved in ["kiosk-gateway", "kiosk-gateway-pub"] {
            assert!(matches!(
                add(&creds, &id(reserved), &out, &gateway),
                Err(AdminError::GatewayClientId(_))
            ));
        }
        add(&creds, &id("opsx-1"), &out, &gateway).unwrap();
        add(&creds, &id("kiosk-7"), &out, &gateway).unwrap();
    }
}
