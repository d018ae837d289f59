//! Topic authorization: which MQTT user may subscribe to which filters and
//! publish to which topics, from an ACL file in mosquitto's style.
//!
//! # File format
//!
//! UTF-8 text, one rule per line; blank lines and lines starting with `#`
//! are ignored, leading and trailing whitespace is trimmed.
//!
//! ```text
//! # Rules before any section apply to every user.
//! pattern read public/%u/#
//!
//! # Rules for every user of a role of the credentials file.
//! role kiosk
//! pattern read kiosk/%u/print
//! pattern write kiosk/%u/status
//!
//! # Rules for one user, on top of its role's.
//! user alice
//! topic read kiosk/#
//! topic deny kiosk/+/cash
//! ```
//!
//! | line | meaning |
//! |---|---|
//! | `user <name>` | starts the section of user `<name>` (as in mosquitto) |
//! | `role <role>` | starts the section of every user of `<role>`: `kiosk`, `gateway`, `backend`, `technician` (our addition: users come from the credentials file, which gives each a role) |
//! | `topic [read\|write\|readwrite\|deny] <filter>` | a rule of the current section, no substitution; without an access word `readwrite` (as in mosquitto) |
//! | `pattern [read\|write\|readwrite\|deny] <filter>` | a rule in which `%u` is replaced by the username and `%c` by the client id |
//!
//! `<filter>` is the rest of the line: an MQTT topic filter, where `+`
//! matches one level and a final `#` any number of levels, including none
//! (MQTT 3.1.1 section 4.7). `read` allows subscribing to filters within it,
//! `write` allows publishing to topics it matches (including a last will at
//! CONNECT), `deny` forbids both and wins over any allow.
//!
//! Two differences from mosquitto, both to make a role policy possible: a
//! `pattern` line inside a `user` or `role` section applies to that section
//! only (before any section, it applies to everyone, as mosquitto's always
//! do), and a `topic` line must be inside a section (mosquitto would apply it
//! to anonymous clients, which this broker refuses).
//!
//! # Decisions
//!
//! Everything not allowed is denied.
//!
//! - **PUBLISH** to topic `t`: allowed when a `write` or `readwrite` rule
//!   matches `t` and no `deny` rule matches it. Topics with `+`, `#` or NUL,
//!   or empty ones, are invalid and denied.
//! - **SUBSCRIBE** to filter `f`: allowed when **every topic `f` can match**
//!   is readable: `f` lies within some `read`/`readwrite` filter, and no
//!   `deny` filter overlaps `f`. So `kiosk/+/print` is not within
//!   `kiosk/k1/print`, and `#` is within nothing but `#`.
//! - `%u`/`%c` substitution: when the username or client id contains `/`,
//!   `+` or `#` the rule is skipped (as mosquitto does), so a client id can
//!   never widen a pattern. Filters starting with `$` are only matched by
//!   rules naming their first level literally (MQTT 4.7.2).
//!
//! The built-in policy, [`DEFAULT_ACL`], is DESIGN.md's and is also shipped
//! as `examples/acl`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::credentials::{Role, UnknownRole};

/// The default policy of the fleet (DESIGN.md, "Topics"): a kiosk reads only
/// its own down topics and writes only its own up topics; the gateway and
/// backends publish every down topic and read everything under `kiosk/`;
/// technicians read `kiosk/#` and publish nothing.
pub const DEFAULT_ACL: &str = include_str!("../default.acl");

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe to filters within the rule's filter.
    Read,
    /// Publish to topics the rule's filter matches.
    Write,
    /// Both.
    ReadWrite,
    /// Neither, whatever other rules say.
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
    /// `pattern` (substitutes `%u`, `%c`) rather than `topic`.
    pattern: bool,
}

/// Why a line of an ACL file is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclLineError {
    /// The first word is not `user`, `role`, `topic` or `pattern`.
    #[error("unknown keyword {0:?}: expected user, role, topic or pattern")]
    Keyword(String),
    /// `user` without a name, or with more than one word.
    #[error("expected `user <name>`")]
    User,
    /// `role` without a known role.
    #[error("expected `role <role>`: {0}")]
    Role(UnknownRole),
    /// `topic`/`pattern` without a filter.
    #[error("missing topic filter after {0:?}")]
    MissingFilter(&'static str),
    /// The filter is not a valid MQTT topic filter.
    #[error("invalid topic filter {filter:?}: {reason}")]
    Filter {
        /// The filter as written.
        filter: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `%` followed by something else than `u` or `c`.
    #[error("unknown substitution in {0:?}: only %u (username) and %c (client id) exist")]
    Substitution(String),
    /// `%u`/`%c` on a `topic` line, where mosquitto does not substitute.
    #[error("%u and %c are only substituted on `pattern` lines, not in {0:?}")]
    SubstitutionInTopic(String),
    /// A `topic` line before any `user`/`role` section.
    #[error(
        "`topic` line outside a `user` or `role` section (use `pattern` for rules that apply to everyone)"
    )]
    TopicOutsideSection,
}

/// An invalid ACL file: which line and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}line {line}: {error}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
pub struct AclError {
    /// The file, when read from one.
    pub path: Option<PathBuf>,
    /// 1-based line number (0 when the file could not be read).
    pub line: usize,
    /// What is wrong.
    pub error: AclLineError,
}

/// Failure to read an ACL file.
#[derive(Debug, thiserror::Error)]
pub enum AclFileError {
    /// The file cannot be read.
    #[error("cannot read ACL file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A line is invalid.
    #[error(transparent)]
    Invalid(#[from] AclError),
}

/// A parsed ACL file. Cheap to query; resolve it once per connection with
/// [`Acl::for_client`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acl {
    everyone: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    roles: HashMap<Role, Vec<Rule>>,
}

/// The section rules are added to while parsing.
enum Section {
    Everyone,
    User(String),
    Role(Role),
}

impl Acl {
    /// The built-in [`DEFAULT_ACL`].
    pub fn default_policy() -> Acl {
        // Parsed in a unit test, so it cannot fail here.
        Acl::parse(DEFAULT_ACL).unwrap_or_default()
    }

    /// A policy that allows everything to everyone (`pattern readwrite #`):
    /// for benchmarks measuring the cost of the checks, never for a fleet.
    pub fn allow_all() -> Acl {
        Acl::parse("pattern readwrite #\n").unwrap_or_default()
    }

    /// Reads and parses the ACL file at `path`.
    ///
    /// # Errors
    /// [`AclFileError::Read`] when it cannot be read,
    /// [`AclFileError::Invalid`] naming the file and first invalid line.
    pub fn load(path: &Path) -> Result<Acl, AclFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| AclFileError::Read {
            path: path.to_owned(),
            error,
        })?;
        Acl::parse(&text).map_err(|mut e| {
            e.path = Some(path.to_owned());
            AclFileError::Invalid(e)
        })
    }

    /// Parses the text of an ACL file (format in the module docs).
    ///
    /// # Errors
    /// [`AclError`] with the 1-based number of the first invalid line.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut section = Section::Everyone;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |error| AclError {
                path: None,
                line: index + 1,
                error,
            };
            let (keyword, rest) = match line.split_once(char::is_whitespace) {
                Some((k, r)) => (k, r.trim()),
                None => (line, ""),
            };
            match keyword {
                "user" => {
                    if rest.is_empty() || rest.contains(char::is_whitespace) {
                        return Err(at(AclLineError::User));
                    }
                    section = Section::User(rest.to_owned());
                    acl.users.entry(rest.to_owned()).or_default();
                }
                "role" => {
                    let role: Role = rest.parse().map_err(|e| at(AclLineError::Role(e)))?;
                    section = Section::Role(role);
                    acl.roles.entry(role).or_default();
                }
                "topic" | "pattern" => {
                    let pattern = keyword == "pattern";
                    let name = if pattern { "pattern" } else { "topic" };
                    let rule = parse_rule(rest, pattern, name).map_err(at)?;
                    match &section {
                        Section::Everyone if !pattern => {
                            return Err(at(AclLineError::TopicOutsideSection));
                        }
                        Section::Everyone => acl.everyone.push(rule),
                        Section::User(user) => {
                            acl.users.entry(user.clone()).or_default().push(rule)
                        }
                        Section::Role(role) => acl.roles.entry(*role).or_default().push(rule),
                    }
                }
                other => return Err(at(AclLineError::Keyword(other.to_owned()))),
            }
        }
        Ok(acl)
    }

    /// The rules that apply to one connection: those for everyone, for its
    /// role and for its username, with `%u` and `%c` substituted.
    pub fn for_client(&self, username: &str, client_id: &str, role: Option<Role>) -> ClientAcl {
        let role_rules = role.and_then(|r| self.roles.get(&r));
        let rules = self
            .everyone
            .iter()
            .chain(role_rules.into_iter().flatten())
            .chain(self.users.get(username).into_iter().flatten());
        let mut resolved = ClientAcl::default();
        for rule in rules {
            let filter = if rule.pattern {
                match substitute(&rule.filter, username, client_id) {
                    Some(f) => f,
                    None => continue,
                }
            } else {
                rule.filter.clone()
            };
            let levels = Levels::new(&filter);
            match rule.access {
                Access::Deny => resolved.deny.push(levels),
                access => {
                    if access.reads() {
                        resolved.read.push(levels.clone());
                    }
                    if access.writes() {
                        resolved.write.push(levels);
                    }
                }
            }
        }
        resolved
    }
    /// The rules that apply to `username` of `role`, in file order
    /// (everyone's, then the role's, then the user's), with `%u` replaced and
    /// `%c` left as written: for translating the policy into another
    /// broker's, which must decide what a client id rule means there.
    /// Rules whose `%u` would be unsafe (see the module docs) are left out,
    /// as [`Acl::for_client`] would skip them.
    pub fn user_rules(&self, username: &str, role: Role) -> Vec<UserRule> {
        let rules = self
            .everyone
            .iter()
            .chain(self.roles.get(&role).into_iter().flatten())
            .chain(self.users.get(username).into_iter().flatten());
        let mut out = Vec::new();
        for rule in rules {
            let filter = if rule.pattern {
                match substitute_user(&rule.filter, username) {
                    Some(f) => f,
                    None => continue,
                }
            } else {
                rule.filter.clone()
            };
            let client_id = rule.pattern && filter.contains("%c");
            out.push(UserRule {
                access: rule.access,
                filter,
                client_id,
            });
        }
        out
    }
}

/// One rule of a user with `%u` substituted ([`Acl::user_rules`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRule {
    /// What it grants.
    pub access: Access,
    /// The filter; still contains `%c` when `client_id` is set.
    pub filter: String,
    /// The filter depends on the client id (`%c` on a `pattern` line).
    pub client_id: bool,
}

/// `%u` replaced, `%c` kept; `None` when the username could widen the filter.
fn substitute_user(filter: &str, username: &str) -> Option<String> {
    if !filter.contains("%u") {
        return Some(filter.to_owned());
    }
    if username.is_empty() || username.contains(['/', '+', '#', '\0']) {
        return None;
    }
    Some(filter.replace("%u", username))
}

fn parse_rule(rest: &str, pattern: bool, keyword: &'static str) -> Result<Rule, AclLineError> {
    let (access, filter) = match rest.split_once(char::is_whitespace) {
        Some((word, filter)) => match Access::parse(word) {
            Some(access) => (access, filter.trim()),
            None => (Access::ReadWrite, rest),
        },
        None => match Access::parse(rest) {
            Some(_) => return Err(AclLineError::MissingFilter(keyword)),
            None => (Access::ReadWrite, rest),
        },
    };
    if filter.is_empty() {
        return Err(AclLineError::MissingFilter(keyword));
    }
    check_placeholders(filter, pattern)?;
    validate_filter(filter).map_err(|reason| AclLineError::Filter {
        filter: filter.to_owned(),
        reason,
    })?;
    Ok(Rule {
        access,
        filter: filter.to_owned(),
        pattern,
    })
}

fn check_placeholders(filter: &str, pattern: bool) -> Result<(), AclLineError> {
    let mut chars = filter.chars();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('u' | 'c') => any = true,
                _ => return Err(AclLineError::Substitution(filter.to_owned())),
            }
        }
    }
    if any && !pattern {
        return Err(AclLineError::SubstitutionInTopic(filter.to_owned()));
    }
    Ok(())
}

/// Checks an MQTT topic filter (MQTT 3.1.1 section 4.7.1): not empty, no
/// NUL, `#` only as a whole last level, `+` only as a whole level.
///
/// # Errors
/// A short reason.
pub fn validate_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("empty");
    }
    if filter.contains('\0') {
        return Err("contains NUL");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("`#` must be the whole last level");
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level");
        }
    }
    Ok(())
}

/// Checks an MQTT topic name for PUBLISH (MQTT 3.1.1 section 4.7.3): not
/// empty, no wildcards, no NUL.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// `%u` and `%c` replaced; `None` when a value could widen the filter.
fn substitute(filter: &str, username: &str, client_id: &str) -> Option<String> {
    let unsafe_value = |v: &str| v.contains(['/', '+', '#', '\0']);
    let mut out = String::with_capacity(filter.len() + username.len());
    let mut chars = filter.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let value = match chars.next() {
            Some('u') => username,
            Some('c') => client_id,
            // Rejected when parsing.
            _ => return None,
        };
        if value.is_empty() || unsafe_value(value) {
            return None;
        }
        out.push_str(value);
    }
    Some(out)
}

/// A filter split into levels.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Levels(Vec<String>);

impl Levels {
    fn new(filter: &str) -> Levels {
        Levels(filter.split('/').map(str::to_owned).collect())
    }
}

fn is_wild(level: &str) -> bool {
    level == "+" || level == "#"
}

/// True when a wildcard first level of one side meets a `$` topic on the
/// other: wildcards never match `$` topics at the first level.
fn dollar_mismatch(a: &[&str], b: &[String]) -> bool {
    let (Some(x), Some(y)) = (a.first(), b.first()) else {
        return false;
    };
    (x.starts_with('$') && is_wild(y)) || (y.starts_with('$') && is_wild(x))
}

/// True when every topic `filter` can match is matched by `outer`.
fn within(filter: &[&str], outer: &[String]) -> bool {
    if dollar_mismatch(filter, outer) {
        return false;
    }
    let mut i = 0;
    loop {
        match (filter.get(i), outer.get(i).map(String::as_str)) {
            (_, Some("#")) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(&"#"), Some(_)) => return false,
            (Some(&"+"), Some(o)) if o != "+" => return false,
            (Some(f), Some(o)) if o != "+" && *f != o => return false,
            _ => i += 1,
        }
    }
}

/// True when some topic is matched by both filters.
fn overlaps(filter: &[&str], other: &[String]) -> bool {
    if dollar_mismatch(filter, other) {
        return false;
    }
    let mut i = 0;
    loop {
        match (filter.get(i).copied(), other.get(i).map(String::as_str)) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(a), Some(b)) if a != "+" && b != "+" && a != b => return false,
            _ => i += 1,
        }
    }
}

/// True when some topic is matched by both MQTT filters `a` and `b`
/// (wildcards included, `$` rules of MQTT 4.7.2 applied).
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('/').collect();
    overlaps(&a, &Levels::new(b).0)
}

/// The ACL of one connection, with `%u`/`%c` already substituted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAcl {
    read: Vec<Levels>,
    write: Vec<Levels>,
    deny: Vec<Levels>,
}

impl ClientAcl {
    /// May the client subscribe to `filter`? Invalid filters are refused.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        if validate_filter(filter).is_err() {
            return false;
        }
        let levels: Vec<&str> = filter.split('/').collect();
        self.read.iter().any(|r| within(&levels, &r.0))
            && !self.deny.iter().any(|d| overlaps(&levels, &d.0))
    }

    /// May the client publish to `topic` (also its last will topic)?
    /// Invalid topic names are refused.
    pub fn may_publish(&self, topic: &str) -> bool {
        if !valid_topic_name(topic) {
            return false;
        }
        let levels: Vec<&str> = topic.split('/').collect();
        self.write.iter().any(|w| within(&levels, &w.0))
            && !self.deny.iter().any(|d| overlaps(&levels, &d.0))
    }

    /// True when the client may neither read nor write anything.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "readwrite",
            Access::Deny => "deny",
        })
    }
}

#[cfg(test)]
mod tests;
