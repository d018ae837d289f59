//! The fleet's credentials and topic ACL written as another broker's own
//! authentication and authorization, for `kiosk-gateway broker-config`
//! (`broker.embedded = false`): one writer per broker,
//! [`mosquitto`] (`password_file`, `acl_file`) and [`nats`]
//! (an `authorization { users }` block with per-user permissions).
//!
//! # Passwords
//!
//! The credentials file keeps only salted hashes (`$sha256$`, `$argon2id$`),
//! which neither mosquitto nor NATS can verify, so the writers need every
//! user's secret itself ([`ExternalUser::secret`]) and hash it again in the
//! target's format. A user's `generated` flag (its stored hash is
//! `$sha256$`, a 192-bit secret) picks a cheap work factor, a chosen
//! password a slow one (numbers in each writer).
//!
//! # Rules
//!
//! Every rule is expanded per user ([`grants`]): `%u` is the user name and
//! `%c` of a kiosk is its user name too (the fleet's identity rule: a
//! kiosk's client id is its kiosk id). A `%c` rule of another role has no
//! single value and is refused ([`ExternalError::ClientIdRule`]), and so is
//! anything the target cannot enforce as written: no writer grants more than
//! the ACL does.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use kiosk_schemas::Secret;

use crate::acl::{Access, Acl};
use crate::credentials::Role;

pub mod mosquitto;
pub mod nats;

/// A user to write for the other broker.
pub struct ExternalUser {
    /// User name, as in the credentials file.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its password; hashed in the target's format, never written as is.
    pub secret: Secret,
    /// The secret is generated (192 random bits): a cheap hash is enough.
    pub generated: bool,
}

impl fmt::Debug for ExternalUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &"[redacted]")
            .field("generated", &self.generated)
            .finish()
    }
}

/// The broker to write for (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// mosquitto 2.x: `password_file`, `acl_file`, `mosquitto.conf`.
    Mosquitto,
    /// nats-server 2.9+ with MQTT: `authorization.conf`, `nats.conf`.
    Nats,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mosquitto" => Ok(Format::Mosquitto),
            "nats" => Ok(Format::Nats),
            other => Err(format!(
                "unknown broker format {other:?}: expected mosquitto or nats"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Mosquitto => "mosquitto",
            Format::Nats => "nats",
        })
    }
}

impl Format {
    /// The files for `users` under `acl`, to be written into `dir` (the
    /// configuration snippets name their siblings by absolute path, so
    /// `dir` should be absolute).
    ///
    /// # Errors
    /// [`ExternalError`] when a rule cannot be expressed for the target.
    pub fn render(
        self,
        users: &[ExternalUser],
        acl: &Acl,
        dir: &Path,
    ) -> Result<Vec<OutputFile>, ExternalError> {
        match self {
            Format::Mosquitto => mosquitto::render(users, acl, dir),
            Format::Nats => nats::render(users, acl, dir),
        }
    }
}

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// File name inside the output directory.
    pub name: &'static str,
    /// Its text.
    pub contents: String,
    /// Holds password hashes: write it with mode 0600.
    pub private: bool,
}

/// A rule the target cannot express without granting more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalError {
    /// A `%c` pattern for a user that is not a kiosk: its client id is not
    /// known in advance, and neither target substitutes it per user.
    #[error(
        "ACL rule {filter:?} of {role} user {user:?} uses %c (client id), which is only known for kiosks (client id = kiosk id); write it with %u or a literal topic"
    )]
    ClientIdRule {
        /// The user.
        user: String,
        /// Its role.
        role: Role,
        /// The rule's filter as substituted so far.
        filter: String,
    },
    /// A filter the target cannot express as written.
    #[error("ACL rule {filter:?} of user {user:?} cannot be expressed for {target}: {reason}")]
    Unsupported {
        /// `mosquitto` or `NATS`.
        target: &'static str,
        /// The user.
        user: String,
        /// The MQTT filter.
        filter: String,
        /// Why.
        reason: &'static str,
    },
    /// The password hasher failed (cannot happen for valid input).
    #[error("cannot hash the password of {user:?}: {reason}")]
    Hash {
        /// The user.
        user: String,
        /// The hasher's message (never the password).
        reason: String,
    },
}

/// What one user may do, every substitution done: MQTT filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Subscribe within these.
    pub read: Vec<String>,
    /// Publish to topics these match.
    pub write: Vec<String>,
    /// Neither, whatever `read` and `write` say.
    pub deny: Vec<String>,
}

impl Grants {
    /// True when the user may do nothing.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }
}

/// The rules of `user` (role `role`) under `acl`, with `%u` and, for a
/// kiosk, `%c` replaced by the user name; duplicates removed, file order
/// kept.
///
/// # Errors
/// [`ExternalError::ClientIdRule`] for a `%c` rule of a user that is not a
/// kiosk.
pub fn grants(acl: &Acl, user: &str, role: Role) -> Result<Grants, ExternalError> {
    let mut grants = Grants::default();
    let push = |list: &mut Vec<String>, filter: &str| {
        if !list.iter().any(|f| f == filter) {
            list.push(filter.to_owned());
        }
    };
    for rule in acl.user_rules(user, role) {
        let filter = if rule.client_id {
            if role != Role::Kiosk {
                return Err(ExternalError::ClientIdRule {
                    user: user.to_owned(),
                    role,
                    filter: rule.filter,
                });
            }
            rule.filter.replace("%c", user)
        } else {
            rule.filter
        };
        match rule.access {
            Access::Read => push(&mut grants.read, &filter),
            Access::Write => push(&mut grants.write, &filter),
            Access::ReadWrite => {
                push(&mut grants.read, &filter);
                push(&mut grants.write, &filter);
            }
            Access::Deny => push(&mut grants.deny, &filter),
        }
    }
    Ok(grants)
}

/// The first lines of every generated file, in the target's comment syntax.
fn header(comment: &str) -> String {
    format!(
        "{comment} Generated by `kiosk-gateway broker-config` from broker.credentials and\n{comment} broker.acl; do not edit: run it again after `kiosk add|rotate|remove`.\n"
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Users of every role with fixed secrets.
    pub(crate) fn users() -> Vec<ExternalUser> {
        let user = |name: &str, role, generated| ExternalUser {
            name: name.to_owned(),
            role,
            secret: Secret::new(format!("{name}-pw")),
            generated,
        };
        vec![
            user("kiosk-a", Role::Kiosk, true),
            user("gateway", Role::Gateway, true),
            user("technician", Role::Technician, true),
        ]
    }

    #[test]
    fn grants_expand_patterns_per_user() {
        let acl = Acl::parse(
            "pattern read public/%u\nrole kiosk\npattern read kiosk/%u/print\npattern write kiosk/%c/status\npattern deny kiosk/%u/secret\nrole technician\ntopic read kiosk/#\nuser technician\ntopic readwrite lab/#\n",
        )
        .unwrap();
        let kiosk = grants(&acl, "kiosk-a", Role::Kiosk).unwrap();
        assert_eq!(kiosk.read, ["public/kiosk-a", "kiosk/kiosk-a/print"]);
        assert_eq!(kiosk.write, ["kiosk/kiosk-a/status"]);
        assert_eq!(kiosk.deny, ["kiosk/kiosk-a/secret"]);
        let tech = grants(&acl, "technician", Role::Technician).unwrap();
        assert_eq!(tech.read, ["public/technician", "kiosk/#", "lab/#"]);
        assert_eq!(tech.write, ["lab/#"]);
        assert!(tech.deny.is_empty());
        let backend = grants(&acl, "backend", Role::Backend).unwrap();
        assert_eq!(backend.read, ["public/backend"]);
        assert!(backend.write.is_empty());
    }

    #[test]
    fn a_client_id_rule_of_a_role_user_is_refused() {
        let acl = Acl::parse("role gateway\npattern read debug/%c/#\n").unwrap();
        let err = grants(&acl, "gateway", Role::Gateway).unwrap_err();
        assert!(err.to_string().contains("uses %c"), "{err}");
        // Not for a kiosk, whose client id is its user name.
        let acl = Acl::parse("pattern read debug/%c/#\n").unwrap();
        assert_eq!(
            grants(&acl, "kiosk-a", Role::Kiosk).unwrap().read,
            ["debug/kiosk-a/#"]
        );
        assert!(grants(&acl, "technician", Role::Technician).is_err());
    }

    #[test]
    fn formats_parse() {
        assert_eq!("mosquitto".parse::<Format>(), Ok(Format::Mosquitto));
        assert_eq!("nats".parse::<Format>(), Ok(Format::Nats));
        assert!("emqx".parse::<Format>().is_err());
        assert_eq!(Format::Nats.to_string(), "nats");
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", users()[0]);
        assert!(!text.contains("kiosk-a-pw"), "{text}");
    }
}
