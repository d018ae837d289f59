//! The ACL's decision tables, one named case per line, and its parser's
//! error table.

use super::*;

/// What a case asks the ACL.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// May the client subscribe to the filter?
    Subscribe,
    /// May the client publish to the topic?
    Publish,
}

use Act::{Publish, Subscribe};

impl Act {
    fn allowed(self, acl: &ClientAcl, what: &str) -> bool {
        match self {
            Subscribe => acl.may_subscribe(what),
            Publish => acl.may_publish(what),
        }
    }
}

/// Panics naming every case in `failed`, if any.
#[track_caller]
fn assert_none_failed(failed: &[String]) {
    assert!(failed.is_empty(), "failing cases:\n{}", failed.join("\n"));
}

fn assert_unique_names<'a>(names: impl IntoIterator<Item = &'a str>) {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        assert!(seen.insert(name), "duplicate case name {name:?}");
    }
}

fn kiosk(acl: &Acl, id: &str) -> ClientAcl {
    acl.for_client(id, id, Some(Role::Kiosk))
}

#[test]
fn default_policy_parses_and_matches_the_shipped_example() {
    let parsed = Acl::parse(DEFAULT_ACL).expect("default ACL parses");
    assert_eq!(parsed, Acl::default_policy());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/acl");
    let shipped = std::fs::read_to_string(&example).expect("examples/acl exists");
    assert_eq!(
        shipped, DEFAULT_ACL,
        "examples/acl must equal broker/src/default.acl"
    );
}

/// The users of [`POLICY`], as the default policy's sections see them.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// User and client id `kiosk-a`, role kiosk.
    KioskA,
    /// User `gateway`, client id `kiosk-gateway`, role gateway.
    Gateway,
    /// User `backend`, client id `pos-1`, role backend.
    Backend,
    /// User `technician`, client id `mosq-1`, role technician.
    Tech,
}

use Who::{Backend, Gateway, KioskA, Tech};

impl Who {
    fn acl(self, acl: &Acl) -> ClientAcl {
        match self {
            KioskA => kiosk(acl, "kiosk-a"),
            Gateway => acl.for_client("gateway", "kiosk-gateway", Some(Role::Gateway)),
            Backend => acl.for_client("backend", "pos-1", Some(Role::Backend)),
            Tech => acl.for_client("technician", "mosq-1", Some(Role::Technician)),
        }
    }
}

/// One decision of the default policy.
struct Policy {
    name: &'static str,
    who: Who,
    act: Act,
    /// The filter (subscribe) or topic (publish).
    what: &'static str,
    allowed: bool,
}

/// The default policy, as DESIGN.md states it.
#[rustfmt::skip]
const POLICY: &[Policy] = &[
    Policy { name: "kiosk reads its own print jobs", who: KioskA, act: Subscribe, what: "kiosk/kiosk-a/print", allowed: true },
    Policy { name: "kiosk reads its own cash acks", who: KioskA, act: Subscribe, what: "kiosk/kiosk-a/cash/ack", allowed: true },
    Policy { name: "kiosk reads its own cash control", who: KioskA, act: Subscribe, what: "kiosk/kiosk-a/cash/control", allowed: true },
    Policy { name: "kiosk reads its own commands", who: KioskA, act: Subscribe, what: "kiosk/kiosk-a/cmd", allowed: true },
    Policy { name: "kiosk cannot read another kiosk's jobs", who: KioskA, act: Subscribe, what: "kiosk/kiosk-b/print", allowed: false },
    Policy { name: "kiosk cannot read every kiosk's jobs", who: KioskA, act: Subscribe, what: "kiosk/+/print", allowed: false },
    Policy { name: "kiosk cannot read everything", who: KioskA, act: Subscribe, what: "#", allowed: false },
    Policy { name: "kiosk cannot read its whole own tree", who: KioskA, act: Subscribe, what: "kiosk/kiosk-a/#", allowed: false },
    Policy { name: "kiosk cannot read its own levels by wildcard", who: KioskA, act: Subscribe, what: "kiosk/kiosk-a/+", allowed: false },
    Policy { name: "kiosk cannot read its own status", who: KioskA, act: Subscribe, what: "kiosk/kiosk-a/status", allowed: false },
    Policy { name: "kiosk cannot read its own print results", who: KioskA, act: Subscribe, what: "kiosk/kiosk-a/print/result", allowed: false },
    Policy { name: "kiosk cannot read $SYS", who: KioskA, act: Subscribe, what: "$SYS/#", allowed: false },
    Policy { name: "kiosk writes its own print results", who: KioskA, act: Publish, what: "kiosk/kiosk-a/print/result", allowed: true },
    Policy { name: "kiosk writes its own credits", who: KioskA, act: Publish, what: "kiosk/kiosk-a/cash", allowed: true },
    Policy { name: "kiosk writes its own cash state", who: KioskA, act: Publish, what: "kiosk/kiosk-a/cash/state", allowed: true },
    Policy { name: "kiosk cannot write another kiosk's cash state", who: KioskA, act: Publish, what: "kiosk/kiosk-b/cash/state", allowed: false },
    Policy { name: "kiosk cannot read its own cash state", who: KioskA, act: Subscribe, what: "kiosk/kiosk-a/cash/state", allowed: false },
    Policy { name: "kiosk writes its own status", who: KioskA, act: Publish, what: "kiosk/kiosk-a/status", allowed: true },
    Policy { name: "kiosk cannot write another kiosk's credits", who: KioskA, act: Publish, what: "kiosk/kiosk-b/cash", allowed: false },
    Policy { name: "kiosk cannot write another kiosk's status", who: KioskA, act: Publish, what: "kiosk/kiosk-b/status", allowed: false },
    Policy { name: "kiosk cannot write its own print jobs", who: KioskA, act: Publish, what: "kiosk/kiosk-a/print", allowed: false },
    Policy { name: "kiosk cannot write its own cash acks", who: KioskA, act: Publish, what: "kiosk/kiosk-a/cash/ack", allowed: false },
    Policy { name: "kiosk cannot publish to a wildcard topic", who: KioskA, act: Publish, what: "kiosk/+/cash", allowed: false },
    Policy { name: "gateway reads every status", who: Gateway, act: Subscribe, what: "kiosk/+/status", allowed: true },
    Policy { name: "gateway reads every print result", who: Gateway, act: Subscribe, what: "kiosk/+/print/result", allowed: true },
    Policy { name: "gateway reads all kiosk topics", who: Gateway, act: Subscribe, what: "kiosk/#", allowed: true },
    Policy { name: "gateway cannot read everything", who: Gateway, act: Subscribe, what: "#", allowed: false },
    Policy { name: "gateway writes print jobs", who: Gateway, act: Publish, what: "kiosk/kiosk-a/print", allowed: true },
    Policy { name: "gateway writes cash acks", who: Gateway, act: Publish, what: "kiosk/kiosk-a/cash/ack", allowed: true },
    Policy { name: "gateway writes cash control", who: Gateway, act: Publish, what: "kiosk/kiosk-a/cash/control", allowed: true },
    Policy { name: "gateway writes commands", who: Gateway, act: Publish, what: "kiosk/kiosk-a/cmd", allowed: true },
    Policy { name: "gateway cannot write credits", who: Gateway, act: Publish, what: "kiosk/kiosk-a/cash", allowed: false },
    Policy { name: "gateway reads every cash state", who: Gateway, act: Subscribe, what: "kiosk/+/cash/state", allowed: true },
    Policy { name: "gateway cannot write cash state", who: Gateway, act: Publish, what: "kiosk/kiosk-a/cash/state", allowed: false },
    Policy { name: "gateway cannot write status", who: Gateway, act: Publish, what: "kiosk/kiosk-a/status", allowed: false },
    Policy { name: "backend writes print jobs", who: Backend, act: Publish, what: "kiosk/kiosk-a/print", allowed: true },
    Policy { name: "backend reads every print result", who: Backend, act: Subscribe, what: "kiosk/+/print/result", allowed: true },
    Policy { name: "backend cannot write print results", who: Backend, act: Publish, what: "kiosk/kiosk-a/print/result", allowed: false },
    Policy { name: "backend writes commands", who: Backend, act: Publish, what: "kiosk/kiosk-a/cmd", allowed: true },
    Policy { name: "backend cannot write cash acks", who: Backend, act: Publish, what: "kiosk/kiosk-a/cash/ack", allowed: false },
    Policy { name: "backend cannot write cash control", who: Backend, act: Publish, what: "kiosk/kiosk-a/cash/control", allowed: false },
    Policy { name: "backend reads every credit", who: Backend, act: Subscribe, what: "kiosk/+/cash", allowed: true },
    Policy { name: "technician reads all kiosk topics", who: Tech, act: Subscribe, what: "kiosk/#", allowed: true },
    Policy { name: "technician reads all kiosk topics by wildcard", who: Tech, act: Subscribe, what: "kiosk/+/#", allowed: true },
    Policy { name: "technician reads a kiosk's credits", who: Tech, act: Subscribe, what: "kiosk/kiosk-a/cash", allowed: true },
    Policy { name: "technician reads a kiosk's cash state", who: Tech, act: Subscribe, what: "kiosk/kiosk-a/cash/state", allowed: true },
    Policy { name: "technician cannot write cash state", who: Tech, act: Publish, what: "kiosk/kiosk-a/cash/state", allowed: false },
    Policy { name: "technician cannot read everything", who: Tech, act: Subscribe, what: "#", allowed: false },
    Policy { name: "technician cannot write print jobs", who: Tech, act: Publish, what: "kiosk/kiosk-a/print", allowed: false },
    Policy { name: "technician cannot write status", who: Tech, act: Publish, what: "kiosk/kiosk-a/status", allowed: false },
    Policy { name: "technician cannot write anywhere else", who: Tech, act: Publish, what: "other", allowed: false },
];

#[test]
fn default_policy_table() {
    assert_unique_names(POLICY.iter().map(|c| c.name));
    let acl = Acl::default_policy();
    let failed: Vec<String> = POLICY
        .iter()
        .filter(|c| c.act.allowed(&c.who.acl(&acl), c.what) != c.allowed)
        .map(|c| {
            format!(
                "{}: {:?} {:?} {} should be {}",
                c.name, c.who, c.act, c.what, c.allowed
            )
        })
        .collect();
    assert_none_failed(&failed);
    // A user without role (not in the credentials file) gets nothing.
    assert!(acl.for_client("ghost", "ghost", None).is_empty());
}

// The ACL files of [`RULES`].
const READ_AB: &str = "user u\ntopic read a/b";
const WRITE_AB: &str = "user u\ntopic write a/b";
const BARE_AB: &str = "user u\ntopic a/b";
const READWRITE_AB: &str = "user u\ntopic readwrite a/b";
const READ_A_PLUS_C: &str = "user u\ntopic read a/+/c";
const WRITE_A_PLUS: &str = "user u\ntopic write a/+";
const READ_A_HASH: &str = "user u\ntopic read a/#";
const READ_PLUS_X: &str = "user u\ntopic read +/x";
const READ_HASH: &str = "user u\ntopic read #";
const READ_SYS: &str = "user u\ntopic read $SYS/#";
const PATTERN_READ_U: &str = "pattern read k/%u/p";
const PATTERN_WRITE_C: &str = "pattern write k/%c/s";
const PATTERN_WRITE_U_C: &str = "pattern write k/%u-%c";
const PATTERN_READ_C: &str = "pattern read k/%c/p";
const PATTERN_READ_C_HASH: &str = "pattern read k/%c/#";
const ROLE_KIOSK: &str = "role kiosk\npattern read k/%u";
const ROLE_AND_USER: &str = "role backend\ntopic write k/+/p\nuser b2\ntopic write x";
const DENY_SECRET: &str = "user u\ntopic read a/#\ntopic deny a/secret";
const DENY_CASH: &str = "user u\ntopic readwrite a/#\ntopic deny a/+/cash";
const DENY_PATTERN: &str = "pattern deny k/%u/x\nuser u\ntopic readwrite k/#";
const READWRITE_ALL: &str = "user u\ntopic readwrite #";
const LAYOUT: &str = "# c\n\n  user u  \n  # x\n  topic   read   a/b  ";

/// One decision of an ACL file: `user` with `client` id and `role` asks.
struct Rule {
    name: &'static str,
    acl: &'static str,
    user: &'static str,
    client: &'static str,
    role: Option<Role>,
    act: Act,
    /// The filter (subscribe) or topic (publish).
    what: &'static str,
    allowed: bool,
}

const KIOSK: Option<Role> = Some(Role::Kiosk);
const BACKEND: Option<Role> = Some(Role::Backend);

/// Parser, wildcards, substitution and deny.
#[rustfmt::skip]
const RULES: &[Rule] = &[
    // Literal topics.
    Rule { name: "read: subscribe to its topic", acl: READ_AB, user: "u", client: "c", role: None, act: Subscribe, what: "a/b", allowed: true },
    Rule { name: "read: not another topic", acl: READ_AB, user: "u", client: "c", role: None, act: Subscribe, what: "a/c", allowed: false },
    Rule { name: "read: no publish", acl: READ_AB, user: "u", client: "c", role: None, act: Publish, what: "a/b", allowed: false },
    Rule { name: "write: publish to its topic", acl: WRITE_AB, user: "u", client: "c", role: None, act: Publish, what: "a/b", allowed: true },
    Rule { name: "write: no subscribe", acl: WRITE_AB, user: "u", client: "c", role: None, act: Subscribe, what: "a/b", allowed: false },
    Rule { name: "no access word: subscribe, as readwrite", acl: BARE_AB, user: "u", client: "c", role: None, act: Subscribe, what: "a/b", allowed: true },
    Rule { name: "no access word: publish, as readwrite", acl: BARE_AB, user: "u", client: "c", role: None, act: Publish, what: "a/b", allowed: true },
    Rule { name: "readwrite: publish", acl: READWRITE_AB, user: "u", client: "c", role: None, act: Publish, what: "a/b", allowed: true },
    // Sections only apply to their user.
    Rule { name: "user section: not for another user", acl: READ_AB, user: "v", client: "c", role: None, act: Subscribe, what: "a/b", allowed: false },
    // `+` in a rule.
    Rule { name: "+ rule: a literal level", acl: READ_A_PLUS_C, user: "u", client: "c", role: None, act: Subscribe, what: "a/x/c", allowed: true },
    Rule { name: "+ rule: the same wildcard", acl: READ_A_PLUS_C, user: "u", client: "c", role: None, act: Subscribe, what: "a/+/c", allowed: true },
    Rule { name: "+ rule: not two levels", acl: READ_A_PLUS_C, user: "u", client: "c", role: None, act: Subscribe, what: "a/x/y/c", allowed: false },
    Rule { name: "+ rule: not a wider #", acl: READ_A_PLUS_C, user: "u", client: "c", role: None, act: Subscribe, what: "a/#", allowed: false },
    Rule { name: "+ rule: publish to one level", acl: WRITE_A_PLUS, user: "u", client: "c", role: None, act: Publish, what: "a/x", allowed: true },
    Rule { name: "+ rule: not the parent level", acl: WRITE_A_PLUS, user: "u", client: "c", role: None, act: Publish, what: "a", allowed: false },
    // `#` in a rule, including the parent level.
    Rule { name: "# rule: its parent level", acl: READ_A_HASH, user: "u", client: "c", role: None, act: Subscribe, what: "a", allowed: true },
    Rule { name: "# rule: any depth", acl: READ_A_HASH, user: "u", client: "c", role: None, act: Subscribe, what: "a/x/y", allowed: true },
    Rule { name: "# rule: wildcards within it", acl: READ_A_HASH, user: "u", client: "c", role: None, act: Subscribe, what: "a/+/y/#", allowed: true },
    Rule { name: "# rule: not everything", acl: READ_A_HASH, user: "u", client: "c", role: None, act: Subscribe, what: "#", allowed: false },
    Rule { name: "# rule: not another tree", acl: READ_A_HASH, user: "u", client: "c", role: None, act: Subscribe, what: "b/x", allowed: false },
    Rule { name: "+ first level: not a wider filter", acl: READ_PLUS_X, user: "u", client: "c", role: None, act: Subscribe, what: "+/#", allowed: false },
    Rule { name: "read #: everything", acl: READ_HASH, user: "u", client: "c", role: None, act: Subscribe, what: "#", allowed: true },
    Rule { name: "read #: not $ topics", acl: READ_HASH, user: "u", client: "c", role: None, act: Subscribe, what: "$SYS/x", allowed: false },
    Rule { name: "read $SYS/#: $SYS topics", acl: READ_SYS, user: "u", client: "c", role: None, act: Subscribe, what: "$SYS/x", allowed: true },
    // Patterns.
    Rule { name: "%u: the user's own topic", acl: PATTERN_READ_U, user: "k1", client: "k1", role: None, act: Subscribe, what: "k/k1/p", allowed: true },
    Rule { name: "%u: not another user's", acl: PATTERN_READ_U, user: "k1", client: "k1", role: None, act: Subscribe, what: "k/k2/p", allowed: false },
    Rule { name: "%c: the client's own topic", acl: PATTERN_WRITE_C, user: "u", client: "dev-9", role: None, act: Publish, what: "k/dev-9/s", allowed: true },
    Rule { name: "%c: not the user name", acl: PATTERN_WRITE_C, user: "u", client: "dev-9", role: None, act: Publish, what: "k/u/s", allowed: false },
    Rule { name: "%u and %c in one level", acl: PATTERN_WRITE_U_C, user: "u", client: "9", role: None, act: Publish, what: "k/u-9", allowed: true },
    // A client id cannot widen a pattern.
    Rule { name: "%c: a + client id skips the rule", acl: PATTERN_READ_C, user: "u", client: "+", role: None, act: Subscribe, what: "k/+/p", allowed: false },
    Rule { name: "%c: a client id with / skips the rule", acl: PATTERN_READ_C, user: "u", client: "a/b", role: None, act: Subscribe, what: "k/a/b/p", allowed: false },
    Rule { name: "%c: a # client id skips the rule", acl: PATTERN_READ_C_HASH, user: "u", client: "#", role: None, act: Subscribe, what: "k/#", allowed: false },
    Rule { name: "%c: an empty client id skips the rule", acl: PATTERN_READ_C, user: "u", client: "", role: None, act: Subscribe, what: "k//p", allowed: false },
    // Role sections.
    Rule { name: "role section: for its role", acl: ROLE_KIOSK, user: "k1", client: "k1", role: KIOSK, act: Subscribe, what: "k/k1", allowed: true },
    Rule { name: "role section: not for another role", acl: ROLE_KIOSK, user: "k1", client: "k1", role: BACKEND, act: Subscribe, what: "k/k1", allowed: false },
    Rule { name: "role and user sections: the user's rule", acl: ROLE_AND_USER, user: "b2", client: "c", role: BACKEND, act: Publish, what: "x", allowed: true },
    Rule { name: "role and user sections: the role's rule", acl: ROLE_AND_USER, user: "b2", client: "c", role: BACKEND, act: Publish, what: "k/1/p", allowed: true },
    // Deny wins.
    Rule { name: "deny: other topics still allowed", acl: DENY_SECRET, user: "u", client: "c", role: None, act: Subscribe, what: "a/x", allowed: true },
    Rule { name: "deny: the denied topic", acl: DENY_SECRET, user: "u", client: "c", role: None, act: Subscribe, what: "a/secret", allowed: false },
    Rule { name: "deny: a # filter covering it", acl: DENY_SECRET, user: "u", client: "c", role: None, act: Subscribe, what: "a/#", allowed: false },
    Rule { name: "deny: a + filter overlapping it", acl: DENY_SECRET, user: "u", client: "c", role: None, act: Subscribe, what: "a/+", allowed: false },
    Rule { name: "deny with +: publish to a match", acl: DENY_CASH, user: "u", client: "c", role: None, act: Publish, what: "a/k/cash", allowed: false },
    Rule { name: "deny with +: publish elsewhere", acl: DENY_CASH, user: "u", client: "c", role: None, act: Publish, what: "a/k/print", allowed: true },
    Rule { name: "deny pattern for everyone beats a user's allow", acl: DENY_PATTERN, user: "u", client: "c", role: None, act: Publish, what: "k/u/x", allowed: false },
    // Invalid names and filters from clients.
    Rule { name: "publish to a wildcard topic", acl: READWRITE_ALL, user: "u", client: "c", role: None, act: Publish, what: "a/+", allowed: false },
    Rule { name: "publish to an empty topic", acl: READWRITE_ALL, user: "u", client: "c", role: None, act: Publish, what: "", allowed: false },
    Rule { name: "subscribe with # not last", acl: READWRITE_ALL, user: "u", client: "c", role: None, act: Subscribe, what: "a/#/b", allowed: false },
    Rule { name: "subscribe with + inside a level", acl: READWRITE_ALL, user: "u", client: "c", role: None, act: Subscribe, what: "a+", allowed: false },
    // Comments, blank lines, indentation.
    Rule { name: "comments, blank lines and indentation", acl: LAYOUT, user: "u", client: "c", role: None, act: Subscribe, what: "a/b", allowed: true },
];

#[test]
fn rule_table() {
    assert_unique_names(RULES.iter().map(|c| c.name));
    let failed: Vec<String> = RULES
        .iter()
        .filter_map(|c| {
            let acl = match Acl::parse(c.acl) {
                Ok(acl) => acl,
                Err(e) => return Some(format!("{}: {:?} does not parse: {e}", c.name, c.acl)),
            };
            let got = c
                .act
                .allowed(&acl.for_client(c.user, c.client, c.role), c.what);
            (got != c.allowed).then(|| {
                format!(
                    "{}: {:?} as {}/{}: {:?} {:?} should be {}",
                    c.name, c.acl, c.user, c.client, c.act, c.what, c.allowed
                )
            })
        })
        .collect();
    assert_none_failed(&failed);
}

/// A malformed ACL file and the error it must get.
struct Malformed {
    name: &'static str,
    text: &'static str,
    /// 1-based number of the line the error names.
    line: usize,
    /// Part of the error message.
    needle: &'static str,
}

#[rustfmt::skip]
const MALFORMED: &[Malformed] = &[
    Malformed { name: "unknown keyword", text: "topics read a", line: 1, needle: "unknown keyword \"topics\"" },
    Malformed { name: "user without a name", text: "# ok\nuser\n", line: 2, needle: "expected `user <name>`" },
    Malformed { name: "user with two names", text: "user a b\n", line: 1, needle: "expected `user <name>`" },
    Malformed { name: "unknown role", text: "role admin\n", line: 1, needle: "unknown role \"admin\"" },
    Malformed { name: "role without a role", text: "role\n", line: 1, needle: "unknown role \"\"" },
    Malformed { name: "topic without a filter", text: "user u\ntopic read\n", line: 2, needle: "missing topic filter after \"topic\"" },
    Malformed { name: "pattern without a filter", text: "pattern\n", line: 1, needle: "missing topic filter after \"pattern\"" },
    Malformed { name: "# not last", text: "user u\ntopic read a/#/b\n", line: 2, needle: "`#` must be the whole last level" },
    Malformed { name: "# inside a level", text: "user u\ntopic read a/b#\n", line: 2, needle: "`#` must be the whole last level" },
    Malformed { name: "+ inside a level", text: "user u\ntopic write a+/b\n", line: 2, needle: "`+` must be a whole level" },
    Malformed { name: "unknown substitution", text: "pattern read k/%x\n", line: 1, needle: "unknown substitution" },
    Malformed { name: "% at the end", text: "pattern read k/%\n", line: 1, needle: "unknown substitution" },
    Malformed { name: "substitution on a topic line", text: "user u\ntopic read k/%u\n", line: 2, needle: "only substituted on `pattern` lines" },
    Malformed { name: "topic outside a section", text: "topic read a/b\n", line: 1, needle: "outside a `user` or `role` section" },
    Malformed { name: "line number counts blank lines", text: "\n\n\nuser u\npattern read a\nfoo\n", line: 6, needle: "unknown keyword \"foo\"" },
];

/// Malformed files: the error names the line and what is wrong.
#[test]
fn malformed_lines_name_the_line() {
    assert_unique_names(MALFORMED.iter().map(|c| c.name));
    let failed: Vec<String> = MALFORMED
        .iter()
        .filter_map(|c| {
            let Err(err) = Acl::parse(c.text) else {
                return Some(format!("{}: {:?} parses", c.name, c.text));
            };
            let message = err.to_string();
            let ok = err.line == c.line
                && message.contains(c.needle)
                && message.starts_with(&format!("line {}: ", c.line));
            (!ok).then(|| format!("{}: {:?}: {message}", c.name, c.text))
        })
        .collect();
    assert_none_failed(&failed);
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acl");
    std::fs::write(&path, "user u\ntopic read a/#/b\n").unwrap();
    let err = Acl::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: line 2: ", path.display())),
        "{err}"
    );
    let err = Acl::load(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read ACL file"), "{err}");
    std::fs::write(&path, "role kiosk\npattern write kiosk/%u/status\n").unwrap();
    let acl = Acl::load(&path).unwrap();
    assert!(kiosk(&acl, "k1").may_publish("kiosk/k1/status"));
}

#[test]
fn allow_all_allows_all() {
    let all = Acl::allow_all().for_client("x", "y", None);
    assert!(all.may_subscribe("#"));
    assert!(all.may_publish("kiosk/k1/cash"));
}
