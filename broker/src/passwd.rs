//! `kiosk-broker passwd`: add, update or delete one user of the credentials
//! file, like `mosquitto_passwd`. The terminal side (prompting, reading
//! stdin, printing) is the binary's; this is the part worth testing.

use std::path::Path;

use kiosk_schemas::Secret;

use crate::credentials::{self, Change, CredentialsError, LineError, Role};
use crate::hash::{generate_secret, hash_chosen_password, hash_generated_secret};

/// Where the user's new password comes from.
#[derive(Debug)]
pub enum NewPassword {
    /// Generate a random secret and store its fast `$sha256$` hash: for
    /// kiosks and other machine accounts.
    Generate,
    /// A password a person chose, stored as argon2id.
    Chosen(Secret),
}

/// What [`passwd`] did.
#[derive(Debug)]
pub struct PasswdOutcome {
    /// Whether the user was added or updated.
    pub change: Change,
    /// The role the user now has.
    pub role: Role,
    /// The generated secret, to show once: it is not stored anywhere.
    pub generated: Option<Secret>,
}

/// Sets the password of `user` in the credentials file at `file` (created if
/// missing). `role` defaults to [`Role::default_for_user`]. Argon2 hashing
/// takes tens of ms: call it from a blocking context.
///
/// # Errors
/// As [`credentials::set_password`]; an invalid user name or a user name that
/// is not a kiosk id for role `kiosk` is [`CredentialsError::Entry`].
pub fn passwd(
    file: &Path,
    user: &str,
    role: Option<Role>,
    password: NewPassword,
) -> Result<PasswdOutcome, CredentialsError> {
    let role = role.unwrap_or_else(|| Role::default_for_user(user));
    let (hash, generated) = match password {
        NewPassword::Generate => {
            let secret = generate_secret();
            (hash_generated_secret(&secret), Some(secret))
        }
        NewPassword::Chosen(password) => {
            let hash = hash_chosen_password(&password).map_err(LineError::from)?;
            (hash, None)
        }
    };
    let change = credentials::set_password(file, user, role, &hash)?;
    Ok(PasswdOutcome {
        change,
        role,
        generated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthOutcome, CredentialStore};

    #[tokio::test]
    async fn generate_then_choose() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");

        let out = passwd(&file, "demo-1", None, NewPassword::Generate).unwrap();
        assert_eq!((out.change, out.role), (Change::Added, Role::Kiosk));
        let secret = out.generated.unwrap();

        let out = passwd(
            &file,
            "backend",
            None,
            NewPassword::Chosen(Secret::new("s3cret pw")),
        )
        .unwrap();
        assert_eq!((out.change, out.role), (Change::Added, Role::Backend));
        assert!(out.generated.is_none());

        let out = passwd(
            &file,
            "ops-anna",
            Some(Role::Technician),
            NewPassword::Generate,
        )
        .unwrap();
        assert_eq!(out.role, Role::Technician);

        let store = CredentialStore::open(&file).unwrap();
        let accepted = |role| AuthOutcome::Accepted { role };
        assert_eq!(
            store.verify("demo-1", "demo-1", &secret).await,
            accepted(Role::Kiosk)
        );
        assert_eq!(
            store
                .verify("backend-1", "backend", &Secret::new("s3cret pw"))
                .await,
            accepted(Role::Backend)
        );

        // Kiosk users must be kiosk ids.
        let err = passwd(&file, "Ops_Anna", None, NewPassword::Generate).unwrap_err();
        assert!(err.to_string().contains("kiosk id"), "{err}");
    }
}
