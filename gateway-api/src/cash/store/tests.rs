//! Tests of the cash store across its parts: a session paid, confirmed and
//! settled with the credits around it.

use super::*;
use chrono::Utc;
use kiosk_schemas::{CashEvent, CashState, CreditKind, Currency, V1};

use crate::cash::event::{CashChange, CashEventKind};
use crate::cash::{CreditEffect, CreditOrigin, Settlement, UnassignedReason};

fn eur() -> Currency {
    Currency::new("EUR").unwrap()
}

fn k1() -> KioskId {
    KioskId::new("k1").unwrap()
}

fn cash_store(dir: &std::path::Path) -> CashStore {
    let store = Store::open(dir).unwrap();
    CashStore::open(&store).unwrap()
}

fn event(seq: u64, amount: i64, session: Option<&str>) -> CashEvent {
    CashEvent {
        v: V1,
        outbox: "o1".into(),
        seq,
        kind: CreditKind::Bill,
        amount,
        currency: eur(),
        at: Utc::now(),
        session_id: session.map(str::to_owned),
        board_boot_id: None,
        board_seq: None,
    }
}

fn state(session: &str, last_seq: u64) -> CashState {
    CashState {
        v: V1,
        outbox: "o1".into(),
        session_id: Some(session.into()),
        enabled: false,
        last_seq,
        inserted: 0,
        at: Utc::now(),
    }
}

fn open(cash: &CashStore, id: &str, due: i64) {
    let rec = SessionRecord::open(
        id.into(),
        k1(),
        "o".into(),
        due,
        eur(),
        "test".into(),
        Utc::now(),
    );
    assert!(matches!(
        cash.open_session(rec, None).unwrap(),
        OpenOutcome::Opened(_)
    ));
}

#[test]
fn a_paid_session_settles_after_confirmation_and_the_credits_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let cash = cash_store(dir.path());
    open(&cash, "s1", 1000);
    // seq 1 (no session) is still missing; 2 pays, 3 is late.
    let paid = cash
        .apply_credit(&k1(), &event(2, 1000, Some("s1")))
        .unwrap();
    assert!(matches!(paid.applied, Some((_, _, CreditEffect::Paid))));
    // Another session may open while s1 awaits confirmation.
    open(&cash, "s2", 500);
    let late = cash
        .apply_credit(&k1(), &event(3, 200, Some("s1")))
        .unwrap();
    let (s, entry, effect) = late.applied.unwrap();
    assert_eq!(
        (effect, entry.origin, s.change_due()),
        (CreditEffect::Late, CreditOrigin::Late, Some(200))
    );
    assert_eq!(cash.awaiting_kiosks().unwrap(), [k1()]);
    assert!(matches!(
        cash.confirm(&k1(), &state("s1", 3)).unwrap(),
        ConfirmOutcome::Recorded(_)
    ));
    assert!(matches!(
        cash.confirm(&k1(), &state("s1", 3)).unwrap(),
        ConfirmOutcome::Duplicate(_)
    ));
    assert!(
        cash.settle_ready(&k1()).unwrap().is_empty(),
        "seq 1 missing"
    );
    let unassigned = cash.apply_credit(&k1(), &event(1, 50, None)).unwrap();
    assert_eq!(
        unassigned.credit.unassigned,
        Some(UnassignedReason::NoSession)
    );
    assert_eq!(unassigned.ack_up_to, 3);
    let done = cash.settle_ready(&k1()).unwrap();
    assert_eq!(done.len(), 1);
    let done: Vec<_> = done
        .into_iter()
        .map(|(change, how)| (change.session.unwrap(), how))
        .collect();
    assert_eq!(
        (done[0].0.session_id.as_str(), done[0].1),
        ("s1", Settlement::Paid)
    );
    assert!(cash.awaiting_kiosks().unwrap().is_empty());
    assert!(cash.settle_ready(&k1()).unwrap().is_empty(), "final once");
    // The open session is untouched; controls: just its enable.
    let mut sent = Vec::new();
    cash.with_controls(&k1(), false, |c| sent.push(c.clone()))
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].session_id.as_deref(), Some("s2"));
}

/// The events a change returns are the ones in the event log (for
/// webhooks), in order, and what the session's streams show: one
/// derivation, not three.
#[test]
fn a_change_returns_the_events_it_logged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cash = CashStore::open(&store).unwrap();
    open(&cash, "s1", 1000);
    let half = cash
        .apply_credit(&k1(), &event(1, 500, Some("s1")))
        .unwrap();
    let paid = cash
        .apply_credit(&k1(), &event(2, 500, Some("s1")))
        .unwrap();
    let lone = cash.apply_credit(&k1(), &event(3, 50, None)).unwrap();
    let dup = cash
        .apply_credit(&k1(), &event(2, 500, Some("s1")))
        .unwrap();
    assert!(dup.events.is_empty());
    let kinds = |events: &[CashChange]| events.iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(kinds(&half.events), [CashEventKind::Credit]);
    assert_eq!(
        kinds(&paid.events),
        [CashEventKind::Credit, CashEventKind::Paid]
    );
    assert_eq!(kinds(&lone.events), [CashEventKind::Unassigned]);
    let returned: Vec<_> = [&half.events, &paid.events, &lone.events]
        .into_iter()
        .flatten()
        .map(|e| e.kind.webhook_type())
        .collect();
    let log = store.events();
    log.mark_durable(log.taken());
    let logged: Vec<_> = log
        .after(0, 100, |_, _| true)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(logged[1..], returned, "after cash_session.opened");
    let streamed: Vec<_> = [&half.events, &paid.events, &lone.events]
        .into_iter()
        .flatten()
        .filter_map(crate::cash::live::LiveEvent::of)
        .map(|(id, e)| (id, e.name(), e.credit.map(|c| c.seq)))
        .collect();
    assert_eq!(
        streamed,
        [
            ("s1".to_owned(), "credit", Some(1)),
            ("s1".to_owned(), "credit", Some(2)),
            ("s1".to_owned(), "paid", None),
        ],
        "the lone credit is on no session's stream"
    );
}
