//! The acceptance in force on the kiosk: which payment session the acceptor
//! takes money for, how much is due, and what was taken for it (DESIGN.md,
//! "Cash credits", steps 4 and 5). Pure: no I/O; the outbox stores it in
//! the same sled transaction as every credit, so a credit and the session
//! it was taken under are never separated, not even by a crash.
//!
//! Rules:
//! - `enable(S, due)` starts taking money for S, ending whatever session was
//!   enabled before. A session that ended is never enabled again: the cloud
//!   must open a new session (a stale `enable` re-sent after a reconnect
//!   must not reopen a slot the kiosk closed itself).
//! - `disable(S)` ends S if it is the enabled one; a `disable` for another
//!   session changes nothing but is still answered.
//! - Each credit taken while enabled belongs to the enabled session; once
//!   the credits reach the amount due the kiosk ends the session itself, so
//!   a kiosk cut off from the cloud stops taking money when the order is
//!   paid.
//! - Every change yields the [`SessionState`]s to report on
//!   `kiosk/<id>/cash/state`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Ended sessions remembered, to answer a late `disable` with the right
/// `last_seq`.
pub const REMEMBERED: usize = 32;

/// Why a session's acceptance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ended {
    /// The cloud sent `disable` for it.
    Disabled,
    /// The cloud enabled another session.
    Replaced,
    /// The credits taken reached the amount due.
    AmountReached,
}

/// One session as the kiosk knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// The session id the cloud gave.
    pub session_id: String,
    /// Amount due when the kiosk first enabled it, in minor units.
    pub amount_due: i64,
    /// Sum of the credits taken for it, in minor units.
    pub inserted: i64,
    /// Last outbox `seq` assigned to one of its credits; 0 for none.
    pub last_seq: u64,
    /// `None` while money is accepted for it.
    pub ended: Option<Ended>,
}

impl SessionState {
    /// True while money is accepted for this session.
    pub fn is_enabled(&self) -> bool {
        self.ended.is_none()
    }

    fn unknown(session_id: &str) -> Self {
        SessionState {
            session_id: session_id.to_owned(),
            amount_due: 0,
            inserted: 0,
            last_seq: 0,
            ended: Some(Ended::Disabled),
        }
    }
}

/// The acceptance record: the latest sessions, newest last; only the newest
/// can be enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptance {
    sessions: VecDeque<SessionState>,
}

/// What a credit changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The session the credit belongs to; `None` when nothing was enabled.
    pub session_id: Option<String>,
    /// The session's state after the credit, when it belongs to one.
    pub state: Option<SessionState>,
    /// The credit completed the amount due: the acceptor must be disabled.
    pub ended_now: bool,
}

impl Acceptance {
    /// The enabled session, if any.
    pub fn enabled(&self) -> Option<&SessionState> {
        self.sessions.back().filter(|s| s.is_enabled())
    }

    /// The newest session, enabled or not.
    pub fn latest(&self) -> Option<&SessionState> {
        self.sessions.back()
    }

    /// The remembered session `session_id`.
    pub fn session(&self, session_id: &str) -> Option<&SessionState> {
        self.find(session_id)
    }

    fn find(&self, session_id: &str) -> Option<&SessionState> {
        self.sessions
            .iter()
            .rev()
            .find(|s| s.session_id == session_id)
    }

    fn end_enabled(&mut self, why: Ended) -> Option<SessionState> {
        let s = self.sessions.back_mut().filter(|s| s.is_enabled())?;
        s.ended = Some(why);
        Some(s.clone())
    }

    /// `enable` for `session_id` with `amount_due` minor units. Returns the
    /// states to report: the session that ended because of it (if any),
    /// then `session_id`'s own state (enabled, or still ended when it had
    /// ended before).
    pub fn enable(&mut self, session_id: &str, amount_due: i64) -> Vec<SessionState> {
        if let Some(known) = self.find(session_id) {
            return vec![known.clone()];
        }
        let mut out = Vec::with_capacity(2);
        if let Some(ended) = self.end_enabled(Ended::Replaced) {
            out.push(ended);
        }
        let new = SessionState {
            session_id: session_id.to_owned(),
            amount_due,
            inserted: 0,
            last_seq: 0,
            ended: None,
        };
        self.sessions.push_back(new.clone());
        while self.sessions.len() > REMEMBERED {
            self.sessions.pop_front();
        }
        out.push(new);
        out
    }

    /// `disable` for `session_id` (`None`: whatever is enabled). Returns the
    /// state to report: the session's, ended (an unknown session is
    /// reported as ended with no credits), or `None` for a plain disable
    /// with nothing enabled and no session ever.
    pub fn disable(&mut self, session_id: Option<&str>) -> Option<SessionState> {
        match session_id {
            Some(id) => {
                if self.enabled().is_some_and(|s| s.session_id == id) {
                    return self.end_enabled(Ended::Disabled);
                }
                Some(
                    self.find(id)
                        .cloned()
                        .unwrap_or_else(|| SessionState::unknown(id)),
                )
            }
            None => self
                .end_enabled(Ended::Disabled)
                .or_else(|| self.latest().cloned()),
        }
    }

    /// A credit of `amount` minor units was given outbox `seq`. It belongs
    /// to the enabled session; with none enabled, to `grace` when that
    /// names a remembered session (the acceptor was told to stop for it a
    /// moment ago and the board may still have been taking a coin), else to
    /// no session.
    pub fn take(&mut self, amount: i64, seq: u64, grace: Option<&str>) -> Taken {
        let enabled = self.sessions.back().is_some_and(SessionState::is_enabled);
        let target = if enabled {
            self.sessions.back_mut()
        } else {
            grace.and_then(|id| self.sessions.iter_mut().rev().find(|s| s.session_id == id))
        };
        let Some(s) = target else {
            return Taken {
                session_id: None,
                state: None,
                ended_now: false,
            };
        };
        if !s.is_enabled() {
            s.inserted = s.inserted.saturating_add(amount);
            s.last_seq = seq;
            return Taken {
                session_id: Some(s.session_id.clone()),
                state: Some(s.clone()),
                ended_now: false,
            };
        }
        s.inserted = s.inserted.saturating_add(amount);
        s.last_seq = seq;
        let ended_now = s.inserted >= s.amount_due;
        if ended_now {
            s.ended = Some(Ended::AmountReached);
        }
        Taken {
            session_id: Some(s.session_id.clone()),
            state: Some(s.clone()),
            ended_now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_take_until_due_then_closed_for_good() {
        let mut a = Acceptance::default();
        assert_eq!(a.take(100, 1, None).session_id, None, "nothing enabled");
        let out = a.enable("s1", 2000);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_enabled());
        let t = a.take(1000, 2, None);
        assert_eq!((t.session_id.as_deref(), t.ended_now), (Some("s1"), false));
        let t = a.take(1500, 3, None);
        assert!(t.ended_now, "2500 >= 2000");
        let st = t.state.unwrap();
        assert_eq!(
            (st.inserted, st.last_seq, st.ended),
            (2500, 3, Some(Ended::AmountReached))
        );
        assert_eq!(a.enabled(), None);
        assert_eq!(a.take(50, 4, None).session_id, None, "after the amount due");
        // Within the grace after the disable, a coin still in the slot is
        // the session's.
        let t = a.take(20, 5, Some("s1"));
        assert_eq!((t.session_id.as_deref(), t.ended_now), (Some("s1"), false));
        assert_eq!(t.state.unwrap().inserted, 2520);
        assert_eq!(a.take(20, 6, Some("ghost")).session_id, None);
        // A stale enable for the same session does not reopen it.
        let out = a.enable("s1", 1000);
        assert_eq!(out.len(), 1);
        assert!(!out[0].is_enabled());
        assert_eq!(a.enabled(), None);
    }

    #[test]
    fn a_new_session_ends_the_previous_one() {
        let mut a = Acceptance::default();
        a.enable("s1", 5000);
        a.take(100, 7, None);
        let out = a.enable("s2", 300);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (
                out[0].session_id.as_str(),
                out[0].ended,
                out[0].last_seq,
                out[0].inserted
            ),
            ("s1", Some(Ended::Replaced), 7, 100)
        );
        assert_eq!(out[1].session_id, "s2");
        assert_eq!(a.take(100, 8, None).session_id.as_deref(), Some("s2"));
    }

    #[test]
    fn disable_answers_for_the_named_session_only() {
        let mut a = Acceptance::default();
        assert_eq!(a.disable(None), None);
        let st = a.disable(Some("ghost")).unwrap();
        assert_eq!(
            (st.session_id.as_str(), st.last_seq, st.is_enabled()),
            ("ghost", 0, false)
        );
        a.enable("s1", 5000);
        a.take(200, 3, None);
        a.enable("s2", 5000);
        // A late disable of s1 must not stop s2.
        let st = a.disable(Some("s1")).unwrap();
        assert_eq!((st.session_id.as_str(), st.last_seq), ("s1", 3));
        assert_eq!(a.enabled().map(|s| s.session_id.as_str()), Some("s2"));
        let st = a.disable(Some("s2")).unwrap();
        assert_eq!(st.ended, Some(Ended::Disabled));
        assert_eq!(a.enabled(), None);
        // Repeated: the same answer, nothing changes.
        assert_eq!(a.disable(Some("s2")).unwrap(), st);
        assert_eq!(
            a.disable(None).unwrap(),
            st,
            "plain disable reports the latest"
        );
    }

    #[test]
    fn remembers_a_bounded_number_of_sessions() {
        let mut a = Acceptance::default();
        for i in 0..(REMEMBERED + 10) {
            a.enable(&format!("s{i}"), 10);
        }
        assert_eq!(a.sessions.len(), REMEMBERED);
        assert_eq!(
            a.disable(Some("s0")).unwrap().amount_due,
            0,
            "forgotten: answered as unknown"
        );
    }
}
