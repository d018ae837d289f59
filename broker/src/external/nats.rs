//! nats-server 2.9+ with MQTT: an `authorization { users: [...] }` block
//! with bcrypt passwords and per-user `publish`/`subscribe` permissions,
//! and a minimal `nats.conf` (JetStream, MQTT listener) that includes it.
//!
//! # Topics and subjects
//!
//! NATS serves MQTT topics as subjects: `/` becomes `.`, `+` becomes `*`,
//! a final `#` becomes `>`, a `.` inside a level becomes `//`. MQTT's
//! `a/#` also matches `a` itself, NATS's `a.>` does not, so a `#` rule gives
//! both `a` and `a.>`. NATS permissions have no `%u`: every rule is
//! expanded per user ([`super::grants`]), so `kiosk-7` gets
//! `kiosk.kiosk-7.print` and so on.
//!
//! # What is refused rather than widened
//!
//! - A `read`/`write` rule whose first level is a wildcard or starts with
//!   `$`: in NATS it would also cover the server's own subjects (`$MQTT.>`,
//!   `$JS.>`, `$SYS.>`).
//! - A level that is empty, has whitespace, or contains `*` or `>` (NATS
//!   would read those as wildcards).
//! - A `deny` rule that overlaps a `read` rule: NATS filters a wildcard
//!   subscription's messages against `deny` only for QoS 0; QoS 1
//!   deliveries come from a JetStream consumer on `$MQTT.sub.<id>` and are
//!   not filtered (seen with 2.9.10), so the carve-out would leak.
//!
//! # What is added
//!
//! - Users with any `read` rule may also subscribe to `$MQTT.sub.>`: the
//!   server delivers QoS 1 messages to the client on such a subject and
//!   checks the client's own permission for it (nats-server before 2.12).
//! - A user without any `write` rule gets `publish: { deny: [">"] }` rather
//!   than an empty allow list, whose meaning NATS's parser does not pin.
//! - `allowed_connection_types: ["MQTT"]`: a kiosk's password is for MQTT,
//!   not for a core NATS connection that could use NATS's own request
//!   subjects.
//!
//! bcrypt cost 4 for generated secrets (192 random bits), 11 for chosen
//! passwords (`nats server passwd`'s default); written as `$2a$`.

use std::fmt::Write as _;
use std::path::Path;

use super::{ExternalError, ExternalUser, OutputFile, grants, header};
use crate::acl::{Acl, filters_overlap};

/// bcrypt cost for generated secrets.
pub const GENERATED_COST: u32 = 4;
/// bcrypt cost for passwords people chose.
pub const CHOSEN_COST: u32 = 11;
/// Where NATS delivers QoS 1 messages to MQTT subscribers.
pub const MQTT_DELIVERY_SUBJECTS: &str = "$MQTT.sub.>";

/// The `authorization.conf`, `nats.conf` and a README for `users`.
///
/// # Errors
/// [`ExternalError::ClientIdRule`] as in [`super::grants`];
/// [`ExternalError::Unsupported`] for the rules listed in the module docs.
pub fn render(
    users: &[ExternalUser],
    acl: &Acl,
    dir: &Path,
) -> Result<Vec<OutputFile>, ExternalError> {
    let mut auth = header("#");
    auth.push_str("authorization {\n  users: [\n");
    for user in users {
        let g = grants(acl, &user.name, user.role)?;
        let unsupported = |filter: &str, reason| ExternalError::Unsupported {
            target: "NATS",
            user: user.name.clone(),
            filter: filter.to_owned(),
            reason,
        };
        for deny in &g.deny {
            if g.read.iter().any(|r| filters_overlap(deny, r)) {
                return Err(unsupported(
                    deny,
                    "a deny inside a read rule is not enforced on QoS 1 deliveries",
                ));
            }
        }
        let convert = |filters: &[String], allow: bool| -> Result<Vec<String>, ExternalError> {
            let mut out = Vec::new();
            for f in filters {
                for s in subjects(f, allow).map_err(|reason| unsupported(f, reason))? {
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
            Ok(out)
        };
        let mut sub_allow = convert(&g.read, true)?;
        if !sub_allow.is_empty() {
            sub_allow.push(MQTT_DELIVERY_SUBJECTS.to_owned());
        }
        let pub_allow = convert(&g.write, true)?;
        let deny = convert(&g.deny, false)?;
        let cost = if user.generated {
            GENERATED_COST
        } else {
            CHOSEN_COST
        };
        let password = bcrypt::hash_with_result(user.secret.expose(), cost)
            .map_err(|e| ExternalError::Hash {
                user: user.name.clone(),
                reason: e.to_string(),
            })?
            .format_for_version(bcrypt::Version::TwoA);
        let _ = writeln!(
            auth,
            "    # {} ({})\n    {{\n      user: {}\n      password: {}\n      allowed_connection_types: [\"MQTT\"]\n      permissions: {{",
            user.name,
            user.role,
            quote(&user.name),
            quote(&password)
        );
        let _ = writeln!(auth, "        publish: {}", permission(&pub_allow, &deny));
        let _ = writeln!(auth, "        subscribe: {}", permission(&sub_allow, &deny));
        auth.push_str("      }\n    }\n");
    }
    auth.push_str("  ]\n}\n");
    let conf = format!(
        "{}# A one-node server with MQTT; adapt ports and paths. The MQTT listener\n# needs JetStream (sessions, QoS 1, retained messages) and a server_name.\n# NATS resolves `include` relative to the including file.\nserver_name: kiosk-nats\nport: 4222\njetstream {{\n  store_dir: \"/var/lib/nats\"\n}}\nmqtt {{\n  listen: \"0.0.0.0:1883\"\n}}\ninclude \"authorization.conf\"\n",
        header("#"),
    );
    Ok(vec![
        OutputFile {
            name: "authorization.conf",
            contents: auth,
            private: true,
        },
        OutputFile {
            name: "nats.conf",
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

/// `{ allow: [...], deny: [...] }`; no allow at all becomes `deny: [">"]`.
fn permission(allow: &[String], deny: &[String]) -> String {
    let list = |items: &[String]| {
        items
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if allow.is_empty() {
        return "{ deny: [\">\"] }".to_owned();
    }
    if deny.is_empty() {
        format!("{{ allow: [{}] }}", list(allow))
    } else {
        format!("{{ allow: [{}], deny: [{}] }}", list(allow), list(deny))
    }
}

/// A NATS config string: double-quoted (so `$2a$...` is no variable).
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The NATS subjects of MQTT filter `filter`. `allow` makes the checks of
/// an allow rule (no wildcard or `$` first level).
///
/// # Errors
/// Why the filter cannot be expressed.
pub fn subjects(filter: &str, allow: bool) -> Result<Vec<String>, &'static str> {
    let levels: Vec<&str> = filter.split('/').collect();
    let first = levels.first().copied().unwrap_or_default();
    if allow && (first == "#" || first == "+") {
        return Err(
            "a wildcard first level would also grant NATS's own subjects ($MQTT, $JS, $SYS)",
        );
    }
    if allow && first.starts_with('$') {
        return Err("`$` topics are NATS's own subjects");
    }
    let mut tokens = Vec::with_capacity(levels.len());
    let mut multi = false;
    for level in &levels {
        match *level {
            "#" => multi = true,
            "+" => tokens.push("*".to_owned()),
            "" => return Err("empty topic levels have no NATS subject"),
            l if l.contains(['*', '>']) => {
                return Err("`*` and `>` in a topic level are NATS wildcards");
            }
            l if l.contains(char::is_whitespace) => {
                return Err("NATS subjects cannot hold whitespace");
            }
            l => tokens.push(l.replace('.', "//")),
        }
    }
    let base = tokens.join(".");
    if !multi {
        return Ok(vec![base]);
    }
    if base.is_empty() {
        return Ok(vec![">".to_owned()]);
    }
    // MQTT `a/#` matches `a` too.
    Ok(vec![base.clone(), format!("{base}.>")])
}

fn readme(dir: &Path) -> String {
    format!(
        "NATS configuration for the kiosk fleet (kiosk-gateway broker-config --format nats)

  authorization.conf  `authorization {{ users: [...] }}`: bcrypt passwords, MQTT
                      connections only, per-user publish/subscribe permissions
                      (mode 0600)
  nats.conf           a one-node server with JetStream and MQTT that includes it

Use it: `include \"authorization.conf\"` in your server's configuration, with
the path relative to that file (NATS resolves includes so; copy or link the
file from {dir}). The server needs server_name, jetstream and mqtt blocks, as
nats.conf shows; every node of a cluster gets the same file. Then `nats-server --signal reload` after each
new run of broker-config.

Limits of NATS's MQTT (2.9): MQTT 3.1.1 only, QoS 0 and 1 (no QoS 2), no
shared subscriptions ($share), topics map to subjects (`/` -> `.`, `+` -> `*`,
`#` -> `>`, `.` -> `//`). The fleet's client-id rule (a kiosk's client id is its
kiosk id) is not enforced by NATS; each user can still only publish and
subscribe where its permissions allow.
",
        dir = dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::tests::users;

    #[test]
    fn topics_become_subjects() {
        let ok = |f: &str| subjects(f, true).unwrap();
        assert_eq!(ok("kiosk/k1/print"), ["kiosk.k1.print"]);
        assert_eq!(ok("kiosk/+/print"), ["kiosk.*.print"]);
        assert_eq!(ok("kiosk/#"), ["kiosk", "kiosk.>"]);
        assert_eq!(ok("kiosk/+/#"), ["kiosk.*", "kiosk.*.>"]);
        assert_eq!(ok("a.b/c"), ["a//b.c"]);
        assert_eq!(subjects("#", false).unwrap(), [">"]);
        for bad in ["#", "+/x", "$SYS/#", "a//b", "/a", "a/b>", "a/*", "a/b c"] {
            assert!(subjects(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_policy_becomes_per_user_permissions() {
        let files = render(&users(), &Acl::default_policy(), Path::new("/etc/kn")).unwrap();
        let auth = &files[0].contents;
        assert!(files[0].private);
        assert!(auth.contains("user: \"kiosk-a\""), "{auth}");
        assert!(auth.contains(
            "subscribe: { allow: [\"kiosk.kiosk-a.print\", \"kiosk.kiosk-a.cash.ack\", \"kiosk.kiosk-a.cash.control\", \"kiosk.kiosk-a.cmd\", \"$MQTT.sub.>\"] }"
        ), "{auth}");
        assert!(auth.contains(
            "publish: { allow: [\"kiosk.kiosk-a.print.result\", \"kiosk.kiosk-a.cash\", \"kiosk.kiosk-a.cash.state\", \"kiosk.kiosk-a.status\"] }"
        ), "{auth}");
        // The technician reads everything under kiosk/ and publishes nothing.
        let tech = &auth[auth.find("# technician").unwrap()..];
        assert!(tech.contains("publish: { deny: [\">\"] }"), "{tech}");
        assert!(
            tech.contains("subscribe: { allow: [\"kiosk\", \"kiosk.>\", \"$MQTT.sub.>\"] }"),
            "{tech}"
        );
        assert!(auth.contains("password: \"$2a$04$"), "{auth}");
        assert!(!auth.contains("-pw\""));
        assert!(auth.matches("allowed_connection_types: [\"MQTT\"]").count() == 3);
        assert!(
            files[1]
                .contents
                .contains("include \"authorization.conf\"\n")
        );
    }

    #[test]
    fn a_deny_inside_a_read_rule_is_refused() {
        let acl =
            Acl::parse("role technician\ntopic read kiosk/#\ntopic deny kiosk/+/cash\n").unwrap();
        let err = render(&users(), &acl, Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("QoS 1"), "{err}");
        // A deny that only narrows publishing is fine.
        let acl = Acl::parse(
            "role technician\ntopic read kiosk/#\ntopic write lab/#\ntopic deny lab/secret\n",
        )
        .unwrap();
        let files = render(&users(), &acl, Path::new("/x")).unwrap();
        assert!(files[0].contents.contains("deny: [\"lab.secret\"]"));
    }

    #[test]
    fn a_wildcard_first_level_is_refused() {
        let acl = Acl::parse("role technician\ntopic read #\n").unwrap();
        let err = render(&users(), &acl, Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("NATS's own subjects"), "{err}");
    }
}
