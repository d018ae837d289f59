//! The firmware's rules without I/O: [`BoardState`] takes the time of each
//! change and returns the lines the board sends because of it.

use std::time::Duration;

use tokio::time::Instant;

use super::{BoardCredit, BoardTimings, Money};

/// An unacknowledged credit and when it last went out.
#[derive(Debug)]
pub(super) struct Pending {
    credit: BoardCredit,
    last_sent: Instant,
}

/// The firmware's rules, without I/O: every change takes the time it
/// happens at and returns the lines the board sends because of it.
#[derive(Debug)]
pub(super) struct BoardState {
    timings: BoardTimings,
    pub(super) powered: bool,
    pub(super) boot_id: u32,
    next_seq: u64,
    enabled: bool,
    /// Oldest first.
    pub(super) unacked: Vec<Pending>,
    // Not cleared by a reset: only read together with `enabled`, which a
    // reset clears and only a host line sets.
    pub(super) last_host: Option<Instant>,
    // Test records and hooks, outside the board's RAM.
    pub(super) ignore_acks: bool,
    pub(super) host_lines: Vec<String>,
    pub(super) errors_sent: Vec<String>,
    pub(super) inhibited_after: Option<Duration>,
}

impl BoardState {
    /// A board with no power yet: it sends nothing until [`Self::power_up`].
    pub(super) fn new(timings: BoardTimings) -> Self {
        BoardState {
            timings,
            powered: false,
            boot_id: 0,
            next_seq: 1,
            enabled: false,
            unacked: Vec::new(),
            last_host: None,
            ignore_acks: false,
            host_lines: Vec::new(),
            errors_sent: Vec::new(),
            inhibited_after: None,
        }
    }

    fn ready_line(&self) -> String {
        format!("READY:v2:{:08x}", self.boot_id)
    }

    fn leased(&self, now: Instant) -> bool {
        self.last_host
            .is_some_and(|t| now.saturating_duration_since(t) < self.timings.lease)
    }

    pub(super) fn accepting(&self, now: Instant) -> bool {
        self.powered
            && self.enabled
            && self.leased(now)
            && self.unacked.len() < self.timings.capacity
    }

    pub(super) fn unacked(&self) -> Vec<BoardCredit> {
        self.unacked.iter().map(|p| p.credit.clone()).collect()
    }

    fn error(&mut self, what: &str) -> String {
        self.errors_sent.push(what.to_owned());
        format!("ERR:{what}")
    }

    /// Power-up or reset: RAM starts over under `boot_id`. Returns the
    /// credits that were in RAM.
    pub(super) fn power_up(&mut self, boot_id: u32) -> (Vec<BoardCredit>, Vec<String>) {
        let lost = self.unacked();
        self.powered = true;
        self.boot_id = boot_id;
        self.next_seq = 1;
        self.enabled = false;
        self.unacked.clear();
        (lost, vec![self.ready_line()])
    }

    /// Power gone: nothing is accepted or sent; RAM stays readable for the
    /// test until the next power-up forgets it.
    pub(super) fn power_off(&mut self) {
        self.powered = false;
    }

    pub(super) fn host_line(&mut self, text: &str, now: Instant) -> Vec<String> {
        self.host_lines.push(text.to_owned());
        if !self.powered {
            return Vec::new();
        }
        self.last_host = Some(now);
        match text {
            "ENABLE" => self.enabled = true,
            "DISABLE" => self.enabled = false,
            "HELLO" => {
                let mut lines = vec![self.ready_line()];
                for p in &mut self.unacked {
                    p.last_sent = now;
                    lines.push(p.credit.line());
                }
                return lines;
            }
            // A host that says nothing else still keeps the lease alive.
            "" => {}
            _ => match text.strip_prefix("ACK:").map(str::parse::<u64>) {
                Some(Ok(seq)) => {
                    // An ACK for a credit the board no longer holds (a
                    // duplicate, or one from before a reset) changes nothing.
                    if !self.ignore_acks {
                        self.unacked.retain(|p| p.credit.seq != seq);
                    }
                }
                _ => return vec![self.error("unknown command")],
            },
        }
        Vec::new()
    }

    pub(super) fn insert(&mut self, kind: Money, amount: i64, now: Instant) -> Option<Vec<String>> {
        if !self.accepting(now) {
            return None;
        }
        let credit = BoardCredit {
            seq: self.next_seq,
            kind,
            amount,
        };
        self.next_seq += 1;
        let mut lines = vec![credit.line()];
        self.unacked.push(Pending {
            credit,
            last_sent: now,
        });
        // Only an insert adds a credit, and none is taken while full: this
        // is the one moment the buffer fills.
        if self.unacked.len() >= self.timings.capacity {
            lines.push(self.error("full"));
        }
        Some(lines)
    }

    fn lease_deadline(&self) -> Option<Instant> {
        if !self.powered || !self.enabled {
            return None;
        }
        self.last_host
            .and_then(|t| t.checked_add(self.timings.lease))
    }

    /// The next instant [`Self::tick`] has something to do, if any.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        if !self.powered {
            return None;
        }
        let resend = self
            .unacked
            .iter()
            .filter_map(|p| p.last_sent.checked_add(self.timings.resend))
            .min();
        match (self.lease_deadline(), resend) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires whatever timers are due at `now`.
    pub(super) fn tick(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.powered {
            return lines;
        }
        if let (Some(deadline), Some(last)) = (self.lease_deadline(), self.last_host)
            && now >= deadline
        {
            self.enabled = false;
            self.inhibited_after = Some(now.saturating_duration_since(last));
            lines.push(self.error("lease"));
        }
        let resend = self.timings.resend;
        for p in &mut self.unacked {
            if now.saturating_duration_since(p.last_sent) >= resend {
                p.last_sent = now;
                lines.push(p.credit.line());
            }
        }
        lines
    }
}
