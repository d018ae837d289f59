//! Password hashes of the credentials file, and the helpers that make them.
//!
//! Two schemes, chosen by who picks the password:
//!
//! - `$sha256$<salt>$<digest>`: `digest = SHA-256(salt || password)`, salt and
//!   digest in standard base64 without padding (as in PHC strings). Only for
//!   secrets **generated** by [`generate_secret`] (192 random bits): brute force
//!   is hopeless whatever the hash speed, so the hash can be fast, and 10,000
//!   kiosks reconnecting after a VPS restart cost milliseconds of CPU.
//! - `$argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>`: a PHC string, for
//!   passwords people choose (technicians, backends). Slow by design (tens of
//!   ms and 19 MiB per check with the default parameters), so it is verified
//!   off the async threads and with bounded concurrency
//!   (see [`CredentialStore`](crate::CredentialStore)).

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::rand_core::OsRng as Argon2Rng;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use kiosk_schemas::Secret;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of the fast scheme for generated secrets.
pub const SHA256_PREFIX: &str = "$sha256$";
/// Prefix of the slow scheme for chosen passwords.
pub const ARGON2ID_PREFIX: &str = "$argon2id$";

/// Random bytes in a generated secret: 24 bytes = 192 bits, 32 characters of
/// URL-safe base64.
const SECRET_BYTES: usize = 24;
/// Salt length of `$sha256$` hashes made here, in bytes.
const SALT_BYTES: usize = 16;
/// Accepted salt lengths of `$sha256$` hashes read from a file, in bytes.
const SALT_RANGE: std::ops::RangeInclusive<usize> = 8..=64;

/// Why a hash string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The string does not start with `$sha256$` or `$argon2id$`.
    #[error("unknown hash scheme {0:?}: expected \"$sha256$...\" or \"$argon2id$...\"")]
    UnknownScheme(String),
    /// A `$sha256$` string that is not `$sha256$<salt>$<digest>` with an 8 to
    /// 64 byte salt and a 32 byte digest in base64 without padding.
    #[error("malformed $sha256$ hash: {0}")]
    Sha256(&'static str),
    /// A `$argon2id$` string that is not a valid PHC string.
    #[error("malformed $argon2id$ hash: {0}")]
    Argon2(String),
}

/// A parsed password hash as stored in the credentials file.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum StoredHash {
    /// Salted SHA-256 of a generated secret.
    Sha256 { salt: Vec<u8>, digest: [u8; 32] },
    /// An argon2id PHC string, checked to parse; re-parsed on each verify
    /// because `PasswordHash` borrows its string.
    Argon2id(String),
}

impl StoredHash {
    /// True when verifying costs real CPU time and must not run on an async
    /// thread.
    pub(crate) fn is_slow(&self) -> bool {
        matches!(self, StoredHash::Argon2id(_))
    }

    /// Checks `password` against the hash. Constant time in the password for
    /// `$sha256$`; argon2's own comparison for `$argon2id$`. Blocks for tens of
    /// ms on argon2 hashes (see [`StoredHash::is_slow`]).
    pub(crate) fn verify(&self, password: &Secret) -> bool {
        match self {
            StoredHash::Sha256 { salt, digest } => sha256(salt, password).ct_eq(digest).into(),
            StoredHash::Argon2id(phc) => match PasswordHash::new(phc) {
                Ok(hash) => Argon2::default()
                    .verify_password(password.expose().as_bytes(), &hash)
                    .is_ok(),
                // Checked when the file was loaded, so this cannot happen.
                Err(_) => false,
            },
        }
    }

    /// Does the work of a `$sha256$` check against nothing, so that an unknown
    /// user costs as much time as a wrong password.
    pub(crate) fn burn_fast(password: &Secret) {
        let _ = sha256(&[0; SALT_BYTES], password);
    }
}

// Hashes are not secrets, but they help offline guessing: keep them out of logs.
impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredHash::Sha256 { .. } => f.write_str("$sha256$[redacted]"),
            StoredHash::Argon2id(_) => f.write_str("$argon2id$[redacted]"),
        }
    }
}

impl FromStr for StoredHash {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, HashError> {
        if let Some(rest) = s.strip_prefix(SHA256_PREFIX) {
            let (salt, digest) = rest
                .split_once('$')
                .ok_or(HashError::Sha256("expected $sha256$<salt>$<digest>"))?;
            let salt = STANDARD_NO_PAD
                .decode(salt)
                .map_err(|_| HashError::Sha256("salt is not base64 without padding"))?;
            if !SALT_RANGE.contains(&salt.len()) {
                return Err(HashError::Sha256("salt must be 8 to 64 bytes"));
            }
            let digest = STANDARD_NO_PAD
                .decode(digest)
                .map_err(|_| HashError::Sha256("digest is not base64 without padding"))?;
            let digest = <[u8; 32]>::try_from(digest)
                .map_err(|_| HashError::Sha256("digest must be 32 bytes"))?;
            Ok(StoredHash::Sha256 { salt, digest })
        } else if s.starts_with(ARGON2ID_PREFIX) {
            check_argon2id(s)?;
            Ok(StoredHash::Argon2id(s.to_owned()))
        } else {
            let scheme = s.split('$').nth(1).unwrap_or_default();
            Err(HashError::UnknownScheme(format!("${scheme}$")))
        }
    }
}

/// Checks that `s` is a complete argon2id PHC string whose parameters argon2
/// accepts, so that verifying against it cannot fail for other reasons than a
/// wrong password.
fn check_argon2id(s: &str) -> Result<(), HashError> {
    let invalid = |e: argon2::password_hash::Error| HashError::Argon2(e.to_string());
    let hash = PasswordHash::new(s).map_err(invalid)?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(HashError::Argon2("missing salt or hash".to_owned()));
    }
    argon2::Params::try_from(&hash).map_err(invalid)?;
    Ok(())
}

fn sha256(salt: &[u8], password: &Secret) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.expose().as_bytes());
    hasher.finalize().into()
}

/// A new random secret for a kiosk (or any machine account): 192 bits from
/// the OS generator as 32 characters of URL-safe base64 without padding, so
/// it fits in a YAML/TOML value or a URL without quoting.
pub fn generate_secret() -> Secret {
    let mut bytes = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    Secret::new(URL_SAFE_NO_PAD.encode(bytes))
}

/// The `$sha256$<salt>$<digest>` line part for a secret made by
/// [`generate_secret`], with a fresh 16-byte random salt.
///
/// Only use it for generated secrets: a fast hash of a password a person chose
/// can be brute-forced from a leaked file. Use [`hash_chosen_password`] for
/// those.
pub fn hash_generated_secret(secret: &Secret) -> String {
    let mut salt = [0u8; SALT_BYTES];
    OsRng.fill_bytes(&mut salt);
    format!(
        "{SHA256_PREFIX}{}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(sha256(&salt, secret))
    )
}

/// The argon2id PHC string for a password a person chose, with argon2's
/// default parameters (19 MiB, 2 passes, 1 lane) and a random salt. Takes
/// tens of ms of CPU; call it from a blocking context.
///
/// # Errors
/// [`HashError::Argon2`] if argon2 refuses the input (a password longer than
/// 4 GiB).
pub fn hash_chosen_password(password: &Secret) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut Argon2Rng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

/// Checks `password` against a hash string of either scheme (as stored in
/// the credentials file, or the gateway's operators file). Blocks for tens
/// of ms on `$argon2id$`; call it from a blocking context.
///
/// # Errors
/// [`HashError`] when `stored` is not a usable hash.
pub fn verify_password(stored: &str, password: &Secret) -> Result<bool, HashError> {
    Ok(stored.parse::<StoredHash>()?.verify(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chosen_password_verifies_and_a_wrong_one_does_not() {
        let hash = hash_chosen_password(&Secret::new("correct horse")).unwrap();
        assert_eq!(
            verify_password(&hash, &Secret::new("correct horse")),
            Ok(true)
        );
        assert_eq!(verify_password(&hash, &Secret::new("wrong")), Ok(false));
        assert!(verify_password("$md5$x", &Secret::new("x")).is_err());
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a, b);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn sha256_verifies_right_and_wrong() {
        let secret = generate_secret();
        let line = hash_generated_secret(&secret);
        let hash: StoredHash = line.parse().unwrap();
        assert!(!hash.is_slow());
        assert!(hash.verify(&secret));
        assert!(!hash.verify(&Secret::new("wrong")));
        assert!(!hash.verify(&Secret::new("")));
        // Same secret, new salt, different line.
        assert_ne!(line, hash_generated_secret(&secret));
    }

    #[test]
    fn sha256_is_salt_then_password() {
        // salt "saltsalt" (c2FsdHNhbHQ), password "pw": SHA-256("saltsaltpw").
        let digest = STANDARD_NO_PAD.encode(Sha256::digest(b"saltsaltpw"));
        let hash: StoredHash = format!("$sha256$c2FsdHNhbHQ${digest}").parse().unwrap();
        assert!(hash.verify(&Secret::new("pw")));
        assert!(!hash.verify(&Secret::new("saltpw")));
    }

    #[test]
    fn argon2_verifies_right_and_wrong() {
        let pw = Secret::new("correct horse battery staple");
        let phc = hash_chosen_password(&pw).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        let hash: StoredHash = phc.parse().unwrap();
        assert!(hash.is_slow());
        assert!(hash.verify(&pw));
        assert!(!hash.verify(&Secret::new("correct horse battery stapler")));
    }

    #[test]
    fn malformed_hashes() {
        let cases = [
            ("$md5$abc$def", "unknown hash scheme \"$md5$\""),
            ("plaintext", "unknown hash scheme \"$$\""),
            (
                "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
                "unknown hash scheme",
            ),
            ("$sha256$c2FsdHNhbHQ", "expected $sha256$<salt>$<digest>"),
            ("$sha256$!!!$AAAA", "salt is not base64"),
            ("$sha256$c2FsdA$AAAA", "salt must be 8 to 64 bytes"),
            ("$sha256$c2FsdHNhbHQ$AAAA", "digest must be 32 bytes"),
            ("$sha256$c2FsdHNhbHQ$AAAA=", "digest is not base64"),
            (
                "$argon2id$nonsense",
                "malformed $argon2id$ hash: missing salt or hash",
            ),
            (
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
                "missing salt or hash",
            ),
            (
                "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo",
                "malformed $argon2id$",
            ),
            (
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$a\nb",
                "malformed $argon2id$",
            ),
        ];
        for (input, expected) in cases {
            let err = input.parse::<StoredHash>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_hash() {
        let hash: StoredHash = hash_generated_secret(&generate_secret()).parse().unwrap();
        assert_eq!(format!("{hash:?}"), "$sha256$[redacted]");
    }
}
