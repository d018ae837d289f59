//! Tests of the pure parts: the session state machine, credits and their
//! resolution, controls, currency exponents.

use super::*;
use chrono::Utc;
use kiosk_schemas::{CashAction, CreditKind, Currency, KioskId};

fn eur() -> Currency {
    Currency::new("EUR").unwrap()
}

fn session(due: i64) -> SessionRecord {
    SessionRecord::open(
        "s".into(),
        KioskId::new("k1").unwrap(),
        "o".into(),
        due,
        eur(),
        "test".into(),
        Utc::now(),
    )
}

fn credit(seq: u64, amount: i64) -> SessionCredit {
    SessionCredit {
        outbox: "o1".into(),
        seq,
        kind: CreditKind::Bill,
        amount,
        at: Utc::now(),
        origin: CreditOrigin::Kiosk,
    }
}

fn confirmation(last_seq: u64) -> Confirmation {
    Confirmation {
        outbox: "o1".into(),
        last_seq,
        at: Utc::now(),
        received_at: Utc::now(),
    }
}

#[test]
fn exact_and_over_payment() {
    let now = Utc::now();
    let mut s = session(2000);
    assert_eq!(
        s.apply_credit(credit(1, 1000), &eur(), now),
        Ok(CreditEffect::Added)
    );
    assert_eq!(
        s.apply_credit(credit(2, 500), &eur(), now),
        Ok(CreditEffect::Added)
    );
    assert_eq!(s.remaining(), 500);
    assert_eq!(
        s.apply_credit(credit(3, 500), &eur(), now),
        Ok(CreditEffect::Paid)
    );
    assert_eq!(
        (s.state, s.change_due(), s.remaining(), s.is_final()),
        (SessionState::Paid, Some(0), 0, false)
    );

    let mut s = session(2000);
    s.apply_credit(credit(1, 1000), &eur(), now).unwrap();
    assert_eq!(
        s.apply_credit(credit(2, 2000), &eur(), now),
        Ok(CreditEffect::Paid)
    );
    assert_eq!(s.change_due(), Some(1000));
}

/// 500 already in; (state before, credit, effect, change_due after,
/// refund_due after).
#[test]
fn a_credit_for_the_session_always_goes_to_it() {
    let now = Utc::now();
    let cases = [
        (SessionState::Open, 400, CreditEffect::Added, None, None),
        (
            SessionState::Open,
            1000,
            CreditEffect::Paid,
            Some(500),
            None,
        ),
        (SessionState::Paid, 200, CreditEffect::Late, Some(200), None),
        (
            SessionState::Cancelling,
            200,
            CreditEffect::Late,
            None,
            Some(700),
        ),
        (
            SessionState::Cancelled,
            200,
            CreditEffect::Late,
            None,
            Some(700),
        ),
    ];
    for (state, amount, effect, change, refund) in cases {
        let mut s = session(1000);
        s.apply_credit(credit(1, 500), &eur(), now).unwrap();
        if state != SessionState::Open {
            // Ended with 500 in (paid exactly, or cancelled).
            s.amount_due = 500;
        }
        s.state = state;
        assert_eq!(
            s.apply_credit(credit(2, amount), &eur(), now),
            Ok(effect),
            "{state:?}"
        );
        assert_eq!(
            (s.change_due(), s.refund_due()),
            (change, refund),
            "{state:?}"
        );
        let origin = s.credits.last().unwrap().origin;
        let want = if effect == CreditEffect::Late {
            CreditOrigin::Late
        } else {
            CreditOrigin::Kiosk
        };
        assert_eq!(origin, want, "{state:?}");
    }
}

#[test]
fn wrong_currency_changes_nothing() {
    let mut s = session(2000);
    let before = s.clone();
    assert_eq!(
        s.apply_credit(credit(1, 100), &Currency::new("USD").unwrap(), Utc::now()),
        Err(CreditRefusal::CurrencyMismatch)
    );
    assert_eq!(s, before);
}

#[test]
fn cancel_is_two_phase() {
    let now = Utc::now();
    let cases = [
        (
            SessionState::Open,
            CancelEffect::Started,
            SessionState::Cancelling,
        ),
        (
            SessionState::Cancelling,
            CancelEffect::AlreadyCancelling,
            SessionState::Cancelling,
        ),
        (
            SessionState::Paid,
            CancelEffect::Refused,
            SessionState::Paid,
        ),
        (
            SessionState::Cancelled,
            CancelEffect::Refused,
            SessionState::Cancelled,
        ),
    ];
    for (from, effect, to) in cases {
        let mut s = session(2000);
        s.state = from;
        assert_eq!(s.cancel(now), effect, "{from:?}");
        assert_eq!(s.state, to, "{from:?}");
    }
    let mut s = session(2000);
    s.apply_credit(credit(1, 700), &eur(), now).unwrap();
    s.cancel(now);
    assert_eq!(
        (s.refund_due(), s.change_due(), s.is_final()),
        (Some(700), None, false)
    );
    assert!(s.awaits_confirmation());
}

/// (state, confirmed last_seq, watermark, settles as, state after)
#[test]
fn settles_only_with_the_confirmation_and_every_credit_up_to_it() {
    let now = Utc::now();
    let cases = [
        (
            SessionState::Cancelling,
            None,
            10,
            None,
            SessionState::Cancelling,
        ),
        (
            SessionState::Cancelling,
            Some(5),
            4,
            None,
            SessionState::Cancelling,
        ),
        (
            SessionState::Cancelling,
            Some(5),
            5,
            Some(Settlement::Cancelled),
            SessionState::Cancelled,
        ),
        (
            SessionState::Cancelling,
            Some(0),
            0,
            Some(Settlement::Cancelled),
            SessionState::Cancelled,
        ),
        (SessionState::Paid, Some(5), 3, None, SessionState::Paid),
        (
            SessionState::Paid,
            Some(5),
            9,
            Some(Settlement::Paid),
            SessionState::Paid,
        ),
        // An open session the kiosk ended is not final: it is neither
        // paid nor cancelled yet.
        (SessionState::Open, Some(5), 9, None, SessionState::Open),
    ];
    for (state, last_seq, watermark, want, after) in cases {
        let mut s = session(2000);
        s.state = state;
        if let Some(n) = last_seq {
            assert_eq!(s.confirm(confirmation(n)), ConfirmEffect::Recorded);
        }
        assert_eq!(
            s.settle(watermark, now),
            want,
            "{state:?} {last_seq:?} {watermark}"
        );
        assert_eq!(s.state, after);
        assert_eq!(s.is_final(), want.is_some());
        assert_eq!(
            s.awaits_confirmation(),
            matches!(after, SessionState::Paid | SessionState::Cancelling) && want.is_none()
        );
    }
    // Final once: a second settle does nothing.
    let mut s = session(2000);
    s.state = SessionState::Paid;
    s.confirm(confirmation(1));
    assert_eq!(s.settle(1, now), Some(Settlement::Paid));
    assert_eq!(s.settle(1, now), None);
}

#[test]
fn repeated_confirmations_keep_the_highest_seq() {
    let mut s = session(2000);
    assert_eq!(s.confirm(confirmation(3)), ConfirmEffect::Recorded);
    assert_eq!(s.confirm(confirmation(3)), ConfirmEffect::Duplicate);
    assert_eq!(s.confirm(confirmation(2)), ConfirmEffect::Duplicate);
    assert_eq!(s.confirm(confirmation(4)), ConfirmEffect::Recorded);
    assert_eq!(s.confirmation.as_ref().map(|c| c.last_seq), Some(4));
}

#[test]
fn controls_disable_every_awaiting_session_then_enable_the_open_one() {
    let mut open = session(1000);
    open.session_id = "s3".into();
    let mut cancelling = session(1000);
    cancelling.session_id = "s1".into();
    cancelling.state = SessionState::Cancelling;
    let mut paid = session(1000);
    paid.session_id = "s2".into();
    paid.state = SessionState::Paid;
    let mut settled = paid.clone();
    settled.session_id = "s0".into();
    settled.settled_at = Some(Utc::now());
    let awaiting = [settled, cancelling, paid];
    let got: Vec<_> = controls_for(Some(&open), &awaiting)
        .into_iter()
        .map(|c| (c.action, c.session_id, c.amount_due))
        .collect();
    assert_eq!(
        got,
        [
            (CashAction::Disable, Some("s1".to_owned()), None),
            (CashAction::Disable, Some("s2".to_owned()), None),
            (CashAction::Enable, Some("s3".to_owned()), Some(1000)),
        ]
    );
    let plain = controls_for(None, &[]);
    assert_eq!(plain.len(), 1);
    assert_eq!(
        (plain[0].action, plain[0].session_id.as_deref()),
        (CashAction::Disable, None)
    );
    assert_eq!(disables_for(&awaiting).len(), 2);
}

#[test]
fn credits_are_placed_by_the_session_they_name() {
    let k1 = KioskId::new("k1").unwrap();
    let k2 = KioskId::new("k2").unwrap();
    let s = session(1000);
    let usd = Currency::new("USD").unwrap();
    let cases = [
        (
            &k1,
            eur(),
            None,
            Some(&s),
            Placement::Unassigned(UnassignedReason::NoSession),
        ),
        (
            &k1,
            eur(),
            Some("s"),
            None,
            Placement::Unassigned(UnassignedReason::UnknownSession),
        ),
        (
            &k2,
            eur(),
            Some("s"),
            Some(&s),
            Placement::Unassigned(UnassignedReason::OtherKiosk),
        ),
        (
            &k1,
            usd,
            Some("s"),
            Some(&s),
            Placement::Unassigned(UnassignedReason::CurrencyMismatch),
        ),
        (&k1, eur(), Some("s"), Some(&s), Placement::Session),
    ];
    for (kiosk, currency, taken_for, session, want) in cases {
        assert_eq!(place_credit(kiosk, &currency, taken_for, session), want);
    }
}

fn unassigned_credit() -> CreditRecord {
    CreditRecord {
        kiosk_id: KioskId::new("k1").unwrap(),
        outbox: "ab-cd".into(),
        seq: 7,
        kind: CreditKind::Coin,
        amount: 200,
        currency: eur(),
        at: Utc::now(),
        received_at: Utc::now(),
        session_id: None,
        taken_for: None,
        board_boot_id: None,
        board_seq: None,
        unassigned: Some(UnassignedReason::NoSession),
        resolution: None,
    }
}

#[test]
fn resolutions_are_decided_once() {
    use ResolutionAction::{Assigned, Refunded};
    let c = unassigned_credit();
    let s = session(1000);
    let mut other_kiosk = session(1000);
    other_kiosk.kiosk_id = KioskId::new("k2").unwrap();
    let mut usd = session(1000);
    usd.currency = Currency::new("USD").unwrap();
    assert_eq!(
        decide_resolution(&c, Assigned, Some(&s), None),
        Ok(ResolveDecision::Apply)
    );
    assert_eq!(
        decide_resolution(&c, Refunded, None, Some("x")),
        Ok(ResolveDecision::Apply)
    );
    assert_eq!(
        decide_resolution(&c, Assigned, Some(&other_kiosk), None),
        Err(ResolveRefusal::OtherKiosk)
    );
    assert_eq!(
        decide_resolution(&c, Assigned, Some(&usd), None),
        Err(ResolveRefusal::CurrencyMismatch)
    );
    let mut assigned = c.clone();
    assigned.resolution = Some(Resolution {
        action: Assigned,
        session_id: Some("s".into()),
        reason: None,
        at: Utc::now(),
        by: "test".into(),
    });
    assert_eq!(
        decide_resolution(&assigned, Assigned, Some(&s), None),
        Ok(ResolveDecision::Same)
    );
    let mut s2 = session(1000);
    s2.session_id = "s2".into();
    assert!(matches!(
        decide_resolution(&assigned, Assigned, Some(&s2), None),
        Err(ResolveRefusal::AlreadyResolved(_))
    ));
    assert!(matches!(
        decide_resolution(&assigned, Refunded, None, Some("x")),
        Err(ResolveRefusal::AlreadyResolved(_))
    ));
    let mut applied = c.clone();
    applied.unassigned = None;
    assert_eq!(
        decide_resolution(&applied, Refunded, None, Some("x")),
        Err(ResolveRefusal::NotUnassigned)
    );
}

#[test]
fn credit_ids_round_trip() {
    let c = unassigned_credit();
    assert_eq!(c.credit_id(), "ab-cd-7");
    assert_eq!(parse_credit_id("ab-cd-7"), Some(("ab-cd", 7)));
    assert_eq!(
        parse_credit_id("8c1f0a2b3c4d5e6f-42"),
        Some(("8c1f0a2b3c4d5e6f", 42))
    );
    for bad in ["", "abc", "-3", "abc-0", "abc-x", "abc-"] {
        assert_eq!(parse_credit_id(bad), None, "{bad}");
    }
}

#[test]
fn exponents() {
    assert_eq!(exponent(&Currency::new("EUR").unwrap()), 2);
    assert_eq!(exponent(&Currency::new("JPY").unwrap()), 0);
    assert_eq!(exponent(&Currency::new("KWD").unwrap()), 3);
    assert_eq!(exponent(&Currency::new("XXQ").unwrap()), 2);
}
