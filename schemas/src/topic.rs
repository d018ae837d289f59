//! MQTT topic names of the fleet (DESIGN.md, "Topics").
//!
//! | topic | direction | payload |
//! |---|---|---|
//! | `kiosk/<id>/print` | cloud → kiosk | [`PrintJob`](crate::PrintJob) |
//! | `kiosk/<id>/print/result` | kiosk → cloud | [`JobResult`](crate::JobResult) |
//! | `kiosk/<id>/cash` | kiosk → cloud | [`CashEvent`](crate::CashEvent) |
//! | `kiosk/<id>/cash/ack` | cloud → kiosk | [`CashAck`](crate::CashAck) |
//! | `kiosk/<id>/cash/control` | cloud → kiosk | [`CashControl`](crate::CashControl) |
//! | `kiosk/<id>/cash/state` | kiosk → cloud | [`CashState`](crate::CashState) |
//! | `kiosk/<id>/status` | kiosk → cloud, retained | [`KioskStatus`](crate::KioskStatus) |
//! | `kiosk/<id>/cmd` | cloud → kiosk | [`Command`](crate::Command) |
//!
//! All are used with QoS 1. Build them with the constructors here, never with
//! `format!` at the call site.

use std::fmt;

use crate::KioskId;

/// First level of every fleet topic.
pub const ROOT: &str = "kiosk";

/// The kinds of fleet topic; the part after `kiosk/<id>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `print`: print jobs for the kiosk.
    Print,
    /// `print/result`: job results from the kiosk.
    PrintResult,
    /// `cash`: credits from the kiosk's cash acceptor.
    Cash,
    /// `cash/ack`: the cloud's acknowledgement of credits.
    CashAck,
    /// `cash/control`: enable/disable the acceptor.
    CashControl,
    /// `cash/state`: the acceptance in force on the kiosk, confirming each
    /// control.
    CashState,
    /// `status`: the kiosk's retained status and last will.
    Status,
    /// `cmd`: commands (test print, ping, ...).
    Cmd,
}

impl TopicKind {
    /// Every kind, in table order.
    pub const ALL: [TopicKind; 8] = [
        TopicKind::Print,
        TopicKind::PrintResult,
        TopicKind::Cash,
        TopicKind::CashAck,
        TopicKind::CashControl,
        TopicKind::CashState,
        TopicKind::Status,
        TopicKind::Cmd,
    ];

    /// The topic levels after `kiosk/<id>/`, e.g. `print/result`.
    pub const fn suffix(self) -> &'static str {
        match self {
            TopicKind::Print => "print",
            TopicKind::PrintResult => "print/result",
            TopicKind::Cash => "cash",
            TopicKind::CashAck => "cash/ack",
            TopicKind::CashControl => "cash/control",
            TopicKind::CashState => "cash/state",
            TopicKind::Status => "status",
            TopicKind::Cmd => "cmd",
        }
    }

    /// True for topics the cloud publishes and the kiosk subscribes to.
    pub const fn is_downstream(self) -> bool {
        matches!(
            self,
            TopicKind::Print | TopicKind::CashAck | TopicKind::CashControl | TopicKind::Cmd
        )
    }

    /// The subscription filter matching this kind for every kiosk,
    /// e.g. `kiosk/+/print/result`.
    pub fn all_kiosks_filter(self) -> String {
        format!("{ROOT}/+/{}", self.suffix())
    }
}

/// A concrete fleet topic name such as `kiosk/demo-1/print`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    name: String,
    kiosk: KioskId,
    kind: TopicKind,
}

impl Topic {
    /// The topic of `kind` for `kiosk`.
    pub fn new(kiosk: &KioskId, kind: TopicKind) -> Self {
        Topic {
            name: format!("{ROOT}/{kiosk}/{}", kind.suffix()),
            kiosk: kiosk.clone(),
            kind,
        }
    }

    /// `kiosk/<id>/print`
    pub fn print(kiosk: &KioskId) -> Self {
        Self::new(kiosk, TopicKind::Print)
    }

    /// `kiosk/<id>/print/result`
    pub fn print_result(kiosk: &KioskId) -> Self {
        Self::new(kiosk, TopicKind::PrintResult)
    }

    /// `kiosk/<id>/cash`
    pub fn cash(kiosk: &KioskId) -> Self {
        Self::new(kiosk, TopicKind::Cash)
    }

    /// `kiosk/<id>/cash/ack`
    pub fn cash_ack(kiosk: &KioskId) -> Self {
        Self::new(kiosk, TopicKind::CashAck)
    }

    /// `kiosk/<id>/cash/control`
    pub fn cash_control(kiosk: &KioskId) -> Self {
        Self::new(kiosk, TopicKind::CashControl)
    }

    /// `kiosk/<id>/cash/state`
    pub fn cash_state(kiosk: &KioskId) -> Self {
        Self::new(kiosk, TopicKind::CashState)
    }

    /// `kiosk/<id>/status`
    pub fn status(kiosk: &KioskId) -> Self {
        Self::new(kiosk, TopicKind::Status)
    }

    /// `kiosk/<id>/cmd`
    pub fn cmd(kiosk: &KioskId) -> Self {
        Self::new(kiosk, TopicKind::Cmd)
    }

    /// Parses a topic name received from the broker. Returns `None` for
    /// anything that is not exactly one of the fleet topics (other roots,
    /// invalid kiosk ids, unknown suffixes, wildcards).
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(ROOT)?.strip_prefix('/')?;
        let (id, suffix) = rest.split_once('/')?;
        let kiosk = KioskId::new(id).ok()?;
        let kind = TopicKind::ALL.into_iter().find(|k| k.suffix() == suffix)?;
        Some(Topic {
            name: name.to_owned(),
            kiosk,
            kind,
        })
    }

    /// The full topic name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The kiosk the topic belongs to.
    pub fn kiosk(&self) -> &KioskId {
        &self.kiosk
    }

    /// Which of the fleet topics this is.
    pub fn kind(&self) -> TopicKind {
        self.kind
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl From<Topic> for String {
    fn from(t: Topic) -> String {
        t.name
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> KioskId {
        KioskId::new(s).unwrap()
    }

    #[test]
    fn constructors_match_design() {
        let id = k("demo-1");
        assert_eq!(Topic::print(&id).as_str(), "kiosk/demo-1/print");
        assert_eq!(
            Topic::print_result(&id).as_str(),
            "kiosk/demo-1/print/result"
        );
        assert_eq!(Topic::cash(&id).as_str(), "kiosk/demo-1/cash");
        assert_eq!(Topic::cash_ack(&id).as_str(), "kiosk/demo-1/cash/ack");
        assert_eq!(
            Topic::cash_control(&id).as_str(),
            "kiosk/demo-1/cash/control"
        );
        assert_eq!(Topic::cash_state(&id).as_str(), "kiosk/demo-1/cash/state");
        assert_eq!(Topic::status(&id).as_str(), "kiosk/demo-1/status");
        assert_eq!(Topic::cmd(&id).as_str(), "kiosk/demo-1/cmd");
        assert_eq!(
            TopicKind::PrintResult.all_kiosks_filter(),
            "kiosk/+/print/result"
        );
    }

    #[test]
    fn parse_round_trips_every_kind() {
        let id = k("k-9");
        for kind in TopicKind::ALL {
            let t = Topic::new(&id, kind);
            let parsed = Topic::parse(t.as_str()).unwrap();
            assert_eq!(parsed, t);
            assert_eq!(parsed.kind(), kind);
            assert_eq!(parsed.kiosk(), &id);
        }
    }

    #[test]
    fn parse_rejects_foreign_topics() {
        for bad in [
            "kiosk/demo-1",
            "kiosk/demo-1/",
            "kiosk/+/print",
            "kiosk/Demo/print",
            "kiosk/demo-1/print/other",
            "kiosks/demo-1/print",
            "kiosk//print",
            "/kiosk/demo-1/print",
        ] {
            assert!(Topic::parse(bad).is_none(), "{bad}");
        }
    }
}
