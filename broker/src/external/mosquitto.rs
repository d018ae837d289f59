//! mosquitto 2.x: `password_file` with `$7$` hashes, `acl_file` with one
//! `user` block per user, and a `mosquitto.conf` snippet that loads both.
//!
//! - `$7$<iterations>$<salt>$<hash>` is mosquitto's own scheme (what
//!   `mosquitto_passwd` writes since 2.0): PBKDF2-HMAC-SHA512, a 12-byte
//!   salt, a 64-byte hash, both in standard base64 with padding. 101
//!   iterations (mosquitto's default) for generated secrets, whose 192 bits
//!   make brute force hopeless; 20,000 for passwords people chose.
//! - The ACL is written as `topic` lines inside `user` blocks, every
//!   `%u`/`%c` already substituted ([`super::grants`]): mosquitto's
//!   `pattern` lines apply to every user wherever they stand, while ours
//!   apply to their role or user section only, so writing them as
//!   `pattern` would hand one role's rules to all. `deny` lines come first
//!   in each block: mosquitto 2.0.11 applies a denial wherever it stands,
//!   and writing it first does not rely on that.
//! - mosquitto checks `read` on every message it delivers, not only on
//!   SUBSCRIBE, so a subscription that overlaps a `deny` filter receives
//!   nothing that the rule denies.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use rand::rngs::OsRng;
use sha2::Sha512;

use super::{ExternalError, ExternalUser, OutputFile, grants, header};
use crate::acl::Acl;

/// PBKDF2 iterations for generated secrets (mosquitto_passwd's default).
pub const GENERATED_ITERATIONS: u32 = 101;
/// PBKDF2 iterations for passwords people chose.
pub const CHOSEN_ITERATIONS: u32 = 20_000;
const SALT_BYTES: usize = 12;
const HASH_BYTES: usize = 64;

/// The `password_file`, `acl_file` and `mosquitto.conf` for `users`.
///
/// # Errors
/// [`ExternalError::ClientIdRule`] as in [`super::grants`];
/// [`ExternalError::Unsupported`] for a filter with whitespace, which an
/// `acl_file` line cannot hold.
pub fn render(
    users: &[ExternalUser],
    acl: &Acl,
    dir: &Path,
) -> Result<Vec<OutputFile>, ExternalError> {
    let mut passwords = header("#");
    let mut acl_file = header("#");
    acl_file.push_str("# One block per user of broker.credentials; %u and %c are substituted.\n");
    for user in users {
        let iterations = if user.generated {
            GENERATED_ITERATIONS
        } else {
            CHOSEN_ITERATIONS
        };
        let _ = writeln!(
            passwords,
            "{}:{}",
            user.name,
            hash(user.secret.expose(), iterations)
        );
        let g = grants(acl, &user.name, user.role)?;
        let _ = writeln!(
            acl_file,
            "\n# {} ({})\nuser {}",
            user.name, user.role, user.name
        );
        let lines = g
            .deny
            .iter()
            .map(|f| ("deny", f))
            .chain(g.read.iter().map(|f| ("read", f)))
            .chain(g.write.iter().map(|f| ("write", f)));
        for (access, filter) in lines {
            if filter.contains(char::is_whitespace) {
                return Err(ExternalError::Unsupported {
                    target: "mosquitto",
                    user: user.name.clone(),
                    filter: filter.clone(),
                    reason: "mosquitto's acl_file cannot hold a topic with whitespace",
                });
            }
            let _ = writeln!(acl_file, "topic {access} {filter}");
        }
    }
    let conf = format!(
        "{}# Include from mosquitto.conf (`include_dir`) or append to it.\nper_listener_settings false\nallow_anonymous false\npassword_file {}\nacl_file {}\n\n# The listeners are yours to add. A kiosk's client id must be its kiosk id\n# (the fleet's identity rule): give the kiosks a listener of their own on\n# which mosquitto replaces every client id by the user name, and the gateway\n# (two sessions, kiosk-gateway and kiosk-gateway-pub) and people another:\n#\n#   listener 8883\n#   certfile /etc/mosquitto/certs/server.crt\n#   keyfile /etc/mosquitto/certs/server.key\n#   use_username_as_clientid true\n#\n#   listener 1883 127.0.0.1\n",
        header("#"),
        dir.join("password_file").display(),
        dir.join("acl_file").display(),
    );
    Ok(vec![
        OutputFile {
            name: "password_file",
            contents: passwords,
            private: true,
        },
        OutputFile {
            name: "acl_file",
            contents: acl_file,
            private: false,
        },
        OutputFile {
            name: "mosquitto.conf",
            contents: conf,
            private: false,
        },
        OutputFile {
            name: "README.txt",
            contents: readme(dir),
            private: false,
        },
    ])
}

/// `$7$<iterations>$<salt>$<hash>` of `password` with a random salt.
pub fn hash(password: &str, iterations: u32) -> String {
    let mut salt = [0u8; SALT_BYTES];
    OsRng.fill_bytes(&mut salt);
    hash_with_salt(password, iterations, &salt)
}

fn hash_with_salt(password: &str, iterations: u32, salt: &[u8]) -> String {
    let mut out = [0u8; HASH_BYTES];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

fn readme(dir: &Path) -> String {
    format!(
        "mosquitto configuration for the kiosk fleet (kiosk-gateway broker-config --format mosquitto)

  password_file   user:$7$... PBKDF2-SHA512 hashes (mode 0600: chown it to the
                  user mosquitto runs as, e.g. `chown mosquitto: password_file`)
  acl_file        one `user` block per user with `topic` lines, %u/%c expanded
  mosquitto.conf  per_listener_settings false, allow_anonymous false and the two
                  files above by absolute path ({dir})

Use it: add `include_dir {dir}` to /etc/mosquitto/mosquitto.conf (mosquitto
reads every *.conf there), or start `mosquitto -c {dir}/mosquitto.conf` after
adding a `listener` line; then `kill -HUP` mosquitto after each new run of
broker-config (it re-reads both files on SIGHUP).

The fleet's client-id rule (a kiosk's client id is its kiosk id) holds on a
listener with `use_username_as_clientid true` (see mosquitto.conf): give the
kiosks one of their own. Elsewhere mosquitto does not bind client ids to
users; a client still only reads and writes what its user name's block
allows, so another kiosk's client id lets it disconnect that kiosk, not read
its topics.
",
        dir = dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::tests::users;

    #[test]
    fn hashes_are_mosquittos_pbkdf2_sha512() {
        // `mosquitto_passwd -b FILE u secret` (2.0.11) wrote this.
        let known = "$7$101$rmToWoXJopiFrxJ1$8AFxKc/jCzHY8+ZOMey0Y3fRCirihyMBhJfG09aN+1YRYo/4aB1blEJU6f1TSSuxxIFtzT5TgO3BQKWb1gbXxQ==";
        let salt = STANDARD.decode(known.split('$').nth(3).unwrap()).unwrap();
        assert_eq!(hash_with_salt("secret", 101, &salt), known);
        let fresh = hash("pw", GENERATED_ITERATIONS);
        assert!(fresh.starts_with("$7$101$"), "{fresh}");
        assert_ne!(fresh, hash("pw", GENERATED_ITERATIONS), "salted");
    }

    #[test]
    fn default_policy_becomes_user_blocks() {
        let files = render(&users(), &Acl::default_policy(), Path::new("/etc/kb")).unwrap();
        let get = |name| {
            files
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.contents.clone())
                .unwrap()
        };
        let acl = get("acl_file");
        assert!(
            acl.contains("user kiosk-a\ntopic read kiosk/kiosk-a/print\n"),
            "{acl}"
        );
        assert!(acl.contains("topic write kiosk/kiosk-a/cash\n"), "{acl}");
        assert!(
            acl.contains("user technician\ntopic read kiosk/#\n"),
            "{acl}"
        );
        assert!(
            acl.contains("user gateway\ntopic read kiosk/#\ntopic write kiosk/+/print\n"),
            "{acl}"
        );
        let rules = acl.lines().filter(|l| !l.starts_with('#'));
        assert!(rules.clone().all(|l| !l.starts_with("pattern")), "{acl}");
        assert!(rules.clone().all(|l| !l.contains('%')), "{acl}");
        let passwords = get("password_file");
        let kiosk_line = passwords
            .lines()
            .find(|l| l.starts_with("kiosk-a:"))
            .unwrap();
        assert!(kiosk_line.starts_with("kiosk-a:$7$101$"), "{kiosk_line}");
        assert!(!passwords.contains("kiosk-a-pw"));
        let conf = get("mosquitto.conf");
        assert!(conf.contains("allow_anonymous false\n"));
        assert!(conf.contains("password_file /etc/kb/password_file\n"));
        assert!(conf.contains("acl_file /etc/kb/acl_file\n"));
        assert!(conf.contains("#   use_username_as_clientid true\n"));
        assert!(
            files
                .iter()
                .find(|f| f.name == "password_file")
                .unwrap()
                .private
        );
    }

    #[test]
    fn deny_lines_come_first() {
        let acl =
            Acl::parse("role technician\ntopic read kiosk/#\ntopic deny kiosk/+/cash\n").unwrap();
        let files = render(&users(), &acl, Path::new("/x")).unwrap();
        let acl_file = &files[1].contents;
        assert!(
            acl_file.contains("user technician\ntopic deny kiosk/+/cash\ntopic read kiosk/#\n"),
            "{acl_file}"
        );
    }
}
