//! The `cash/control` messages a kiosk must get for its sessions (pure).

use kiosk_schemas::{CashAction, CashControl, V1};

use super::{SessionRecord, SessionState};

fn disable(session_id: Option<&str>) -> CashControl {
    CashControl {
        v: V1,
        action: CashAction::Disable,
        session_id: session_id.map(str::to_owned),
        amount_due: None,
        currency: None,
    }
}

/// The `cash/control` message that matches a kiosk's open session:
/// `enable` (with what is still due), or a plain `disable` without one.
pub fn control_for(session: Option<&SessionRecord>) -> CashControl {
    match session.filter(|s| s.state == SessionState::Open) {
        Some(s) => CashControl {
            v: V1,
            action: CashAction::Enable,
            session_id: Some(s.session_id.clone()),
            amount_due: Some(s.remaining()),
            currency: Some(s.currency.clone()),
        },
        None => disable(None),
    }
}

/// Every control a kiosk must get now, in order: `disable(S)` for each of
/// its sessions awaiting confirmation (each answered by a `CashState`
/// confirming it), then [`control_for`] its open session. Pure.
pub fn controls_for(open: Option<&SessionRecord>, awaiting: &[SessionRecord]) -> Vec<CashControl> {
    awaiting
        .iter()
        .filter(|s| s.awaits_confirmation())
        .map(|s| disable(Some(&s.session_id)))
        .chain(std::iter::once(control_for(open)))
        .collect()
}

/// `disable(S)` for each session awaiting confirmation (the timer's
/// re-send). Pure.
pub fn disables_for(awaiting: &[SessionRecord]) -> Vec<CashControl> {
    awaiting
        .iter()
        .filter(|s| s.awaits_confirmation())
        .map(|s| disable(Some(&s.session_id)))
        .collect()
}
