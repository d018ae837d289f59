//! `kiosk-gateway broker-config --format mosquitto|nats --out DIR`: the
//! fleet's credentials (`broker.credentials`) and topic ACL (`broker.acl`
//! or the built-in policy) written as an external broker's own
//! authentication and authorization ([`kiosk_broker::external`]).
//!
//! The credentials file holds only hashes that neither mosquitto nor NATS
//! can check, so every user's secret must be given (`--secrets`):
//! provisioning files as `kiosk add --out` writes them (one file, or a
//! directory of `*.json`), text files of `user:password` lines, or `-` for
//! such lines on standard input. Each secret is checked against the
//! credentials file first, so a stale one is an error, not a broker that
//! refuses the kiosk later. A user without a secret is an error naming
//! every such user, unless `--issue-missing` gives them new generated
//! secrets: written to `DIR/secrets/<user>.credentials.json` (0600) for
//! delivery, and stored in the credentials file like `kiosk rotate` does.
//! Secrets are never logged or printed; the output files hold only the
//! target's hashes.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use kiosk_broker::external::{ExternalError, ExternalUser, Format};
use kiosk_broker::{Acl, CredentialsError, Role, UserEntry, acl::AclFileError};
use kiosk_schemas::Secret;

use crate::admin::{AdminError, ProvisionedSecret, write_provisioning};

/// What to write.
#[derive(Debug, Clone)]
pub struct Request {
    /// `broker.credentials`.
    pub credentials: PathBuf,
    /// `broker.acl`; `None` for the built-in policy.
    pub acl: Option<PathBuf>,
    /// `--format`.
    pub format: Format,
    /// `--out`: created if missing.
    pub out: PathBuf,
    /// `--secrets`: files, directories or `-` (standard input).
    pub secrets: Vec<PathBuf>,
    /// `--issue-missing`.
    pub issue_missing: bool,
}

/// What [`write`] did.
#[derive(Debug, Default)]
pub struct Written {
    /// The configuration files written.
    pub files: Vec<PathBuf>,
    /// How many users they hold.
    pub users: usize,
    /// Provisioning files of users given new secrets (`--issue-missing`).
    pub issued: Vec<PathBuf>,
    /// Users of the secrets given that are not in the credentials file.
    pub ignored: Vec<String>,
}

/// Why `broker-config` wrote nothing (or, for [`BrokerConfigError::Write`],
/// not everything).
#[derive(Debug, thiserror::Error)]
pub enum BrokerConfigError {
    /// The credentials file cannot be read.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The ACL file cannot be read.
    #[error(transparent)]
    Acl(#[from] AclFileError),
    /// A `--secrets` file cannot be read.
    #[error("cannot read secrets from {}: {source}", path.display())]
    ReadSecrets {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A `--secrets` file is malformed (the message never quotes it).
    #[error("{}: {reason}", path.display())]
    BadSecrets {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Two different secrets for one user.
    #[error("two different secrets for {user} ({} and {})", first.display(), second.display())]
    ConflictingSecrets {
        /// The user.
        user: String,
        /// Where the first came from.
        first: PathBuf,
        /// Where the second came from.
        second: PathBuf,
    },
    /// A secret that the credentials file does not accept.
    #[error("the secret for {user} from {} does not match broker.credentials (stale after `kiosk rotate`?)", path.display())]
    WrongSecret {
        /// The user.
        user: String,
        /// Where it came from.
        path: PathBuf,
    },
    /// Users without a secret, and no `--issue-missing`.
    #[error(
        "no secret for {}: give their provisioning files or `user:password` lines with --secrets, or --issue-missing to give them new secrets",
        .0.join(", ")
    )]
    MissingSecrets(Vec<String>),
    /// A rule the target cannot express.
    #[error(transparent)]
    External(#[from] ExternalError),
    /// An output file cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A provisioning file or the credentials file could not be written.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// Reads the credentials, the ACL and the secrets, and writes the target's
/// files into `request.out` (see the module docs). Nothing is written when
/// a secret is missing or wrong or a rule cannot be expressed. Verifying
/// argon2id passwords takes tens of ms each: call from a blocking context.
///
/// # Errors
/// [`BrokerConfigError`].
pub fn write(request: &Request) -> Result<Written, BrokerConfigError> {
    let users = kiosk_broker::read_users(&request.credentials)?;
    let acl = match &request.acl {
        Some(path) => Acl::load(path)?,
        None => Acl::default_policy(),
    };
    let mut secrets = read_secrets(&request.secrets)?;
    let mut external = Vec::with_capacity(users.len());
    let mut missing = Vec::new();
    let mut issued = Vec::new();
    for user in &users {
        match secrets.remove(&user.name) {
            Some((secret, path)) => {
                if !user.verify(&secret) {
                    return Err(BrokerConfigError::WrongSecret {
                        user: user.name.clone(),
                        path,
                    });
                }
                external.push(external_user(user, secret, user.generated()));
            }
            None if request.issue_missing => {
                let secret = kiosk_broker::generate_secret();
                issued.push((user.name.clone(), user.role, secret.clone()));
                external.push(external_user(user, secret, true));
            }
            None => missing.push(user.name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(BrokerConfigError::MissingSecrets(missing));
    }
    let mut ignored: Vec<String> = secrets.into_keys().collect();
    ignored.sort();
    let out = absolute(&request.out);
    // Render before writing anything: a rule the target cannot express must
    // not leave new secrets behind.
    let files = request.format.render(&external, &acl, &out)?;
    create_dir(&out)?;
    let mut written = Written {
        users: external.len(),
        ignored,
        ..Written::default()
    };
    if !issued.is_empty() {
        let dir = out.join("secrets");
        create_dir(&dir)?;
        for (name, role, secret) in &issued {
            let path = dir.join(format!("{name}.credentials.json"));
            // The provisioning file first, as `kiosk rotate` does.
            write_provisioning(&path, name, *role == Role::Kiosk, secret)?;
            kiosk_broker::set_password(
                &request.credentials,
                name,
                *role,
                &kiosk_broker::hash_generated_secret(secret),
            )
            .map_err(AdminError::from)?;
            written.issued.push(path);
        }
    }
    for file in files {
        let path = out.join(file.name);
        write_file(&path, file.contents.as_bytes(), file.private)?;
        written.files.push(path);
    }
    Ok(written)
}

fn external_user(user: &UserEntry, secret: Secret, generated: bool) -> ExternalUser {
    ExternalUser {
        name: user.name.clone(),
        role: user.role,
        secret,
        generated,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn create_dir(dir: &Path) -> Result<(), BrokerConfigError> {
    std::fs::create_dir_all(dir).map_err(|source| BrokerConfigError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Writes `path` through a temporary sibling and a rename, so a broker
/// reloading meanwhile reads the old file or the new one; mode 0600 when
/// `private`, else 0644.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), BrokerConfigError> {
    let io = |source| BrokerConfigError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).write(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, if private { 0o600 } else { 0o644 });
    let mut f = opts.open(&tmp).map_err(io)?;
    #[cfg(unix)]
    {
        // An existing temporary file keeps its mode through `open`.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = if private { 0o600 } else { 0o644 };
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
    }
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

type Secrets = HashMap<String, (Secret, PathBuf)>;

/// Every secret of `sources`: user name to secret and where it came from.
fn read_secrets(sources: &[PathBuf]) -> Result<Secrets, BrokerConfigError> {
    let mut secrets = Secrets::new();
    for source in sources {
        let read_err = |source_err| BrokerConfigError::ReadSecrets {
            path: source.clone(),
            source: source_err,
        };
        if source.as_os_str() == "-" {
            let mut text = String::new();
            for line in std::io::stdin().lock().lines() {
                text.push_str(&line.map_err(read_err)?);
                text.push('\n');
            }
            add_lines(&mut secrets, source, &text)?;
        } else if source.is_dir() {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(source)
                .map_err(read_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            paths.sort();
            for path in paths {
                add_json(&mut secrets, &path)?;
            }
        } else if source.extension().is_some_and(|e| e == "json") {
            add_json(&mut secrets, source)?;
        } else {
            let text = std::fs::read_to_string(source).map_err(read_err)?;
            add_lines(&mut secrets, source, &text)?;
        }
    }
    Ok(secrets)
}

fn add_json(secrets: &mut Secrets, path: &Path) -> Result<(), BrokerConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| BrokerConfigError::ReadSecrets {
        path: path.to_owned(),
        source,
    })?;
    let parsed: ProvisionedSecret =
        serde_json::from_str(&text).map_err(|e| BrokerConfigError::BadSecrets {
            path: path.to_owned(),
            // Line and column only: serde's message could quote the secret.
            reason: format!(
                "not a provisioning file with username and password (line {}, column {})",
                e.line(),
                e.column()
            ),
        })?;
    add(secrets, parsed.username, Secret::new(parsed.password), path)
}

/// `user:password` lines; blank lines and `#` comments skipped.
fn add_lines(secrets: &mut Secrets, path: &Path, text: &str) -> Result<(), BrokerConfigError> {
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(':') else {
            return Err(BrokerConfigError::BadSecrets {
                path: path.to_owned(),
                reason: format!("line {}: expected user:password", index + 1),
            });
        };
        add(secrets, user.trim().to_owned(), Secret::new(password), path)?;
    }
    Ok(())
}

fn add(
    secrets: &mut Secrets,
    user: String,
    secret: Secret,
    path: &Path,
) -> Result<(), BrokerConfigError> {
    if let Some((known, first)) = secrets.get(&user) {
        if *known != secret {
            return Err(BrokerConfigError::ConflictingSecrets {
                user,
                first: first.clone(),
                second: path.to_owned(),
            });
        }
        return Ok(());
    }
    secrets.insert(user, (secret, path.to_owned()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A credentials file with kiosk `kiosk-a` and `technician`, and their
    /// secrets.
    fn fleet(dir: &Path) -> (PathBuf, Secret, Secret) {
        let creds = dir.join("credentials");
        let kiosk = kiosk_broker::generate_secret();
        let tech = Secret::new("chosen password");
        kiosk_broker::set_password(
            &creds,
            "kiosk-a",
            Role::Kiosk,
            &kiosk_broker::hash_generated_secret(&kiosk),
        )
        .unwrap();
        kiosk_broker::set_password(
            &creds,
            "technician",
            Role::Technician,
            &kiosk_broker::hash_chosen_password(&tech).unwrap(),
        )
        .unwrap();
        (creds, kiosk, tech)
    }

    fn request(dir: &Path, creds: &Path, format: Format, secrets: Vec<PathBuf>) -> Request {
        Request {
            credentials: creds.to_owned(),
            acl: None,
            format,
            out: dir.join("out"),
            secrets,
            issue_missing: false,
        }
    }

    #[test]
    fn secrets_from_provisioning_files_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (creds, kiosk, tech) = fleet(dir.path());
        let prov = dir.path().join("prov");
        std::fs::create_dir(&prov).unwrap();
        write_provisioning(
            &prov.join("kiosk-a.credentials.json"),
            "kiosk-a",
            true,
            &kiosk,
        )
        .unwrap();
        write_provisioning(
            &prov.join("old.credentials.json"),
            "kiosk-gone",
            true,
            &kiosk,
        )
        .unwrap();
        let people = dir.path().join("people.txt");
        std::fs::write(&people, format!("# people\ntechnician:{}\n", tech.expose())).unwrap();
        let req = request(dir.path(), &creds, Format::Mosquitto, vec![prov, people]);
        let written = write(&req).unwrap();
        assert_eq!(written.users, 2);
        assert_eq!(written.ignored, ["kiosk-gone"]);
        let pw = std::fs::read_to_string(req.out.join("password_file")).unwrap();
        assert!(pw.contains("\nkiosk-a:$7$101$"), "{pw}");
        assert!(pw.contains("\ntechnician:$7$20000$"), "{pw}");
        assert!(!pw.contains(kiosk.expose()) && !pw.contains(tech.expose()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |name| {
                std::fs::metadata(req.out.join(name))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode("password_file"), 0o600);
            assert_eq!(mode("acl_file"), 0o644);
        }
    }

    #[test]
    fn missing_and_wrong_secrets_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (creds, kiosk, _) = fleet(dir.path());
        let lines = dir.path().join("s.txt");
        std::fs::write(&lines, format!("kiosk-a:{}\n", kiosk.expose())).unwrap();
        let req = request(dir.path(), &creds, Format::Nats, vec![lines.clone()]);
        let err = write(&req).unwrap_err();
        assert!(
            matches!(&err, BrokerConfigError::MissingSecrets(u) if u == &["technician"]),
            "{err}"
        );
        assert!(err.to_string().contains("--issue-missing"));
        std::fs::write(&lines, "kiosk-a:not-it\ntechnician:nope\n").unwrap();
        let err = write(&req).unwrap_err();
        assert!(
            matches!(&err, BrokerConfigError::WrongSecret { user, .. } if user == "kiosk-a"),
            "{err}"
        );
        assert!(!err.to_string().contains("not-it"));
        std::fs::write(&lines, "kiosk-a\n").unwrap();
        let err = write(&req).unwrap_err();
        assert!(
            err.to_string().contains("line 1: expected user:password"),
            "{err}"
        );
        assert!(!req.out.exists());
    }

    #[test]
    fn issue_missing_gives_new_secrets_that_the_credentials_accept() {
        let dir = tempfile::tempdir().unwrap();
        let (creds, kiosk, _) = fleet(dir.path());
        let lines = dir.path().join("s.txt");
        std::fs::write(&lines, format!("kiosk-a:{}\n", kiosk.expose())).unwrap();
        let mut req = request(dir.path(), &creds, Format::Nats, vec![lines]);
        req.issue_missing = true;
        let written = write(&req).unwrap();
        assert_eq!(
            written.issued,
            [req.out.join("secrets/technician.credentials.json")]
        );
        let issued: ProvisionedSecret =
            serde_json::from_str(&std::fs::read_to_string(&written.issued[0]).unwrap()).unwrap();
        assert_eq!(issued.username, "technician");
        let users = kiosk_broker::read_users(&creds).unwrap();
        let tech = users.iter().find(|u| u.name == "technician").unwrap();
        assert!(tech.generated());
        assert!(tech.verify(&Secret::new(issued.password)));
        let auth = std::fs::read_to_string(req.out.join("authorization.conf")).unwrap();
        assert_eq!(auth.matches("password: \"$2a$04$").count(), 2, "{auth}");
    }
}
