//! Tests of the job store.

use super::pending::pending_key;
use super::records::{JOB_V, JOB_V1, JOB_V2, JobRecordV1, JobRecordV2};
use super::*;
use crate::store::Store;
use crate::store::tests::reopen;
use crate::store::{CANCELLED_QUEUED, CancelOutcome};
use chrono::Utc;
use kiosk_schemas::{JobId, JobState, KioskId, PrintJob};
use kiosk_store::idempotency::Claim;
use kiosk_store::record;

fn k(s: &str) -> KioskId {
    KioskId::new(s).unwrap()
}
fn j(s: &str) -> JobId {
    JobId::new(s).unwrap()
}

/// Wire bytes of a job, as the tests store them.
const PAYLOAD: &[u8] =
    br#"{"v":1,"job_id":"x","printer":"receipt","document":{"kind":"text","text":"x"}}"#;

fn job(id: &str, kiosk: &str) -> JobRecord {
    let now = Utc::now();
    JobRecord {
        job_id: j(id),
        kiosk_id: k(kiosk),
        printer: "receipt".into(),
        copies: 1,
        created_at: now,
        expires_at: Some(now + chrono::Duration::hours(1)),
        state: JobState::Queued,
        reason: None,
        history: vec![Transition {
            state: JobState::Queued,
            at: now,
            reason: None,
        }],
        origin: Origin::Http {
            api_key: "test".into(),
        },
        reprint_of: None,
        accepted_at: now,
        gateway_expired: false,
        bytes: None,
    }
}

#[test]
fn create_idempotency_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        let a = s
            .create_job(job("a", "k1"), PAYLOAD, Some(("key-1", [1; 32])))
            .unwrap();
        assert!(matches!(a, CreateOutcome::Created(_)));
        // Same key, same request: same job, not a new one.
        let b = s
            .create_job(job("b", "k1"), PAYLOAD, Some(("key-1", [1; 32])))
            .unwrap();
        assert!(matches!(b, CreateOutcome::Replayed(ref r) if r.job_id.as_str() == "a"));
        // Same key, other request.
        let c = s
            .create_job(job("c", "k1"), PAYLOAD, Some(("key-1", [2; 32])))
            .unwrap();
        assert!(matches!(c, CreateOutcome::KeyReused));
        // Same key on another kiosk is another key.
        let d = s
            .create_job(job("d", "k2"), PAYLOAD, Some(("key-1", [2; 32])))
            .unwrap();
        assert!(matches!(d, CreateOutcome::Created(_)));
        assert!(matches!(
            s.create_job(job("a", "k1"), PAYLOAD, None).unwrap(),
            CreateOutcome::JobIdTaken
        ));
        assert!(s.job(&j("b")).unwrap().is_none());
        assert_eq!(s.counts().get(JobState::Queued), 2);
    }
    let s = reopen(dir.path());
    assert_eq!(s.counts().get(JobState::Queued), 2);
    assert_eq!(s.pending(None).unwrap().len(), 2);
    assert_eq!(s.pending(Some(&k("k1"))).unwrap(), vec![(k("k1"), j("a"))]);
    assert_eq!(s.pending_count(&k("k2")), 1);
}

#[test]
fn reports_move_forward_only_and_clear_pending() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_job(job("a", "k1"), PAYLOAD, None).unwrap();
    let now = Utc::now();
    let r = s
        .apply_report(
            &k("k1"),
            &j("a"),
            JobState::Received,
            now,
            None,
            None,
            Source::Kiosk,
        )
        .unwrap();
    assert!(matches!(
        r,
        ReportOutcome::Applied {
            from: Some(JobState::Queued),
            ..
        }
    ));
    assert!(matches!(
        s.apply_report(
            &k("k1"),
            &j("a"),
            JobState::Received,
            now,
            None,
            None,
            Source::Kiosk
        )
        .unwrap(),
        ReportOutcome::Duplicate
    ));
    assert_eq!(s.pending_count(&k("k1")), 1);
    s.apply_report(
        &k("k1"),
        &j("a"),
        JobState::Printed,
        now,
        None,
        None,
        Source::Kiosk,
    )
    .unwrap();
    assert_eq!(s.pending_count(&k("k1")), 0);
    assert!(matches!(
        s.apply_report(
            &k("k1"),
            &j("a"),
            JobState::Failed,
            now,
            Some("x".into()),
            None,
            Source::Kiosk
        )
        .unwrap(),
        ReportOutcome::Conflict(_)
    ));
    assert!(matches!(
        s.apply_report(
            &k("k2"),
            &j("a"),
            JobState::Failed,
            now,
            None,
            None,
            Source::Kiosk
        )
        .unwrap(),
        ReportOutcome::WrongKiosk
    ));
    let rec = s.job(&j("a")).unwrap().unwrap();
    let states: Vec<_> = rec.history.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [JobState::Queued, JobState::Received, JobState::Printed]
    );
    assert_eq!(s.counts().get(JobState::Printed), 1);
    assert_eq!(s.counts().get(JobState::Queued), 0);
}

#[test]
fn result_before_mqtt_job_then_job_fills_in() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let now = Utc::now();
    let r = s
        .apply_report(
            &k("k1"),
            &j("m"),
            JobState::Printed,
            now,
            None,
            None,
            Source::Kiosk,
        )
        .unwrap();
    assert!(matches!(r, ReportOutcome::Applied { from: None, .. }));
    let wire: kiosk_schemas::PrintJob = serde_json::from_value(serde_json::json!({
        "v": 1, "job_id": "m", "printer": "receipt",
        "document": {"kind": "text", "text": "hi"}
    }))
    .unwrap();
    assert_eq!(
        s.record_mqtt_job(&k("k1"), &wire, b"wire").unwrap(),
        MqttJobOutcome::Completed
    );
    assert_eq!(
        s.record_mqtt_job(&k("k1"), &wire, b"wire").unwrap(),
        MqttJobOutcome::Known
    );
    assert_eq!(
        s.record_mqtt_job(&k("k2"), &wire, b"wire").unwrap(),
        MqttJobOutcome::WrongKiosk
    );
    let rec = s.job(&j("m")).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Printed);
    assert_eq!(s.payload(&j("m")).unwrap().as_deref(), Some(&b"wire"[..]));
    assert_eq!(rec.history.first().unwrap().state, JobState::Queued);
    assert_eq!(s.pending_count(&k("k1")), 0);
}

#[test]
fn kiosk_report_replaces_gateway_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_job(job("a", "k1"), PAYLOAD, None).unwrap();
    let now = Utc::now();
    s.apply_report(
        &k("k1"),
        &j("a"),
        JobState::Expired,
        now,
        None,
        None,
        Source::Gateway,
    )
    .unwrap();
    // Still pending: the kiosk is asked what really happened.
    assert_eq!(s.pending_count(&k("k1")), 1);
    let r = s
        .apply_report(
            &k("k1"),
            &j("a"),
            JobState::Printed,
            now,
            None,
            None,
            Source::Kiosk,
        )
        .unwrap();
    assert!(matches!(
        r,
        ReportOutcome::Applied {
            from: Some(JobState::Expired),
            ..
        }
    ));
    assert_eq!(s.pending_count(&k("k1")), 0);
    let rec = s.job(&j("a")).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Printed);
    assert!(!rec.gateway_expired);
    assert_eq!(s.counts().get(JobState::Expired), 0);
}

#[test]
fn byte_counts_of_a_failed_write_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let now = Utc::now();
    let counts = ByteCounts::reported(Some(4096), Some(10_000));
    assert_eq!(counts.map(|c| (c.written, c.total)), Some((4096, 10_000)));
    assert_eq!(ByteCounts::reported(Some(1), None), None);
    for id in ["failed", "printed"] {
        s.create_job(job(id, "k1"), PAYLOAD, None).unwrap();
    }
    s.apply_report(
        &k("k1"),
        &j("failed"),
        JobState::Failed,
        now,
        Some("interrupted".into()),
        counts,
        Source::Kiosk,
    )
    .unwrap();
    // Counts belong to failed jobs only.
    s.apply_report(
        &k("k1"),
        &j("printed"),
        JobState::Printed,
        now,
        None,
        counts,
        Source::Kiosk,
    )
    .unwrap();
    drop(s);
    let s = reopen(dir.path());
    assert_eq!(s.job(&j("failed")).unwrap().unwrap().bytes, counts);
    assert_eq!(s.job(&j("printed")).unwrap().unwrap().bytes, None);
}

#[test]
fn version_1_job_records_are_read_and_rewritten_as_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let now = Utc::now();
    let old = JobRecordV1 {
        job_id: j("old"),
        kiosk_id: k("k1"),
        printer: "receipt".into(),
        document: None,
        copies: 2,
        created_at: now,
        expires_at: None,
        state: JobState::Received,
        reason: None,
        history: Vec::new(),
        origin: Origin::Mqtt,
        reprint_of: None,
        accepted_at: now,
        gateway_expired: false,
    };
    s.jobs
        .insert("old", record::encode(JOB_V1, &old).unwrap())
        .unwrap();
    let rec = s.job(&j("old")).unwrap().unwrap();
    assert_eq!(
        (rec.copies, rec.state, rec.bytes),
        (2, JobState::Received, None)
    );
    s.apply_report(
        &k("k1"),
        &j("old"),
        JobState::Failed,
        now,
        Some("interrupted".into()),
        ByteCounts::reported(Some(0), Some(100)),
        Source::Kiosk,
    )
    .unwrap();
    assert_eq!(s.jobs.get("old").unwrap().unwrap()[0], JOB_V);
    let rec = s.job(&j("old")).unwrap().unwrap();
    assert_eq!(
        rec.bytes,
        Some(ByteCounts {
            written: 0,
            total: 100
        })
    );
    drop(s);
    // Counted by state when opened, whatever the version.
    assert_eq!(reopen(dir.path()).counts().get(JobState::Failed), 1);
}

#[test]
fn purge_removes_only_old_finished_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_job(job("old", "k1"), PAYLOAD, Some(("i", [0; 32])))
        .unwrap();
    s.create_job(job("open", "k1"), PAYLOAD, None).unwrap();
    let long_ago = Utc::now() - chrono::Duration::days(60);
    s.apply_report(
        &k("k1"),
        &j("old"),
        JobState::Printed,
        long_ago,
        None,
        None,
        Source::Kiosk,
    )
    .unwrap();
    assert_eq!(
        s.purge_finished(Utc::now() - chrono::Duration::days(30))
            .unwrap(),
        1
    );
    assert!(s.job(&j("old")).unwrap().is_none());
    assert!(s.job(&j("open")).unwrap().is_some());
    assert_eq!(s.counts().get(JobState::Printed), 0);
}

#[test]
fn version_2_records_are_converted_on_open_with_their_document_as_wire_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let old = JobRecordV2 {
        job_id: j("v2"),
        kiosk_id: k("k1"),
        printer: "receipt".into(),
        document: Some(r#"{"kind":"text","text":"hello"}"#.into()),
        copies: 2,
        created_at: now,
        expires_at: None,
        state: JobState::Queued,
        reason: None,
        history: Vec::new(),
        origin: Origin::Mqtt,
        reprint_of: None,
        accepted_at: now,
        gateway_expired: false,
        bytes: None,
    };
    {
        let s = Store::open(dir.path()).unwrap();
        s.jobs
            .insert("v2", record::encode(JOB_V2, &old).unwrap())
            .unwrap();
        s.db().flush().unwrap();
    }
    let s = reopen(dir.path());
    assert_eq!(s.jobs.get("v2").unwrap().unwrap()[0], JOB_V);
    let rec = s.job(&j("v2")).unwrap().unwrap();
    assert_eq!((rec.copies, rec.state), (2, JobState::Queued));
    let payload = s.payload(&j("v2")).unwrap().expect("payload");
    let job: PrintJob = serde_json::from_slice(&payload).unwrap();
    assert_eq!((job.job_id.as_str(), job.copies), ("v2", 2));
    assert_eq!(
        serde_json::to_value(&job.document).unwrap(),
        serde_json::json!({"kind": "text", "text": "hello", "cut": true})
    );
    assert_eq!(s.counts().get(JobState::Queued), 1);
}

/// Every prefix of a creation's writes (what a crash can leave, sled
/// recovering a prefix of its log) reads as no job: the key is fresh
/// again, and delivery's timer removes the pending entry and payload.
#[test]
fn a_creation_cut_short_leaves_nothing_that_counts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let claim = Claim::new("k1", "key-1", [1; 32], "a").unwrap();
    let (key, pkey) = (b"a".as_slice(), pending_key(&k("k1"), &j("a")));
    // 1. The claim alone: the same request again makes a job.
    claim.record_in(&s.idempotency).unwrap();
    assert!(matches!(
        s.create_job(job("b", "k1"), PAYLOAD, Some(("key-1", [1; 32]))).unwrap(),
        CreateOutcome::Created(ref r) if r.job_id.as_str() == "b"
    ));
    // 2. A pending entry and payload without their record.
    s.pending.insert(&pkey, &[][..]).unwrap();
    s.payloads.insert(key, PAYLOAD).unwrap();
    assert!(s.job(&j("a")).unwrap().is_none());
    assert!(s.drop_unfinished(&k("k1"), &j("a")).unwrap());
    assert!(s.payload(&j("a")).unwrap().is_none());
    assert_eq!(s.pending(None).unwrap(), vec![(k("k1"), j("b"))]);
    // A job that exists is left alone.
    assert!(!s.drop_unfinished(&k("k1"), &j("b")).unwrap());
    assert!(s.payload(&j("b")).unwrap().is_some());
    assert_eq!(s.counts().get(JobState::Queued), 1);
}

/// Concurrent creations with one Idempotency-Key make one job, and with
/// one job id one record: the creation lock stands in for a transaction.
/// (Without the lock this fails within a few rounds.)
#[test]
fn concurrent_creations_make_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    const THREADS: usize = 8;
    for round in 0..40 {
        let start = std::sync::Barrier::new(THREADS);
        let outcomes = std::thread::scope(|scope| {
            let tasks: Vec<_> = (0..THREADS)
                .map(|i| {
                    let (s, start) = (&s, &start);
                    scope.spawn(move || {
                        let key = format!("key-{round}");
                        start.wait();
                        let same_key = s
                            .create_job(
                                job(&format!("j{round}-{i}"), "k1"),
                                PAYLOAD,
                                Some((&key, [1; 32])),
                            )
                            .unwrap();
                        let same_id = s
                            .create_job(job(&format!("x{round}"), "k2"), PAYLOAD, None)
                            .unwrap();
                        (same_key, same_id)
                    })
                })
                .collect();
            tasks
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        });
        let created: Vec<_> = outcomes
            .iter()
            .filter_map(|(o, _)| match o {
                CreateOutcome::Created(r) => Some(r.job_id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 1, "round {round}: {outcomes:?}");
        for (o, _) in &outcomes {
            if let CreateOutcome::Replayed(r) = o {
                assert_eq!(r.job_id, created[0], "round {round}");
            }
        }
        let same_id: Vec<_> = outcomes.iter().map(|(_, o)| o).collect();
        assert_eq!(
            same_id
                .iter()
                .filter(|o| matches!(o, CreateOutcome::Created(_)))
                .count(),
            1,
            "round {round}: {same_id:?}"
        );
        assert!(
            same_id
                .iter()
                .all(|o| matches!(o, CreateOutcome::Created(_) | CreateOutcome::JobIdTaken)),
            "round {round}"
        );
    }
    assert_eq!(s.counts().get(JobState::Queued), 80);
    assert_eq!(s.pending(None).unwrap().len(), 80);
}

/// Reports `state` for `id` of `k1` as the kiosk.
fn kiosk_reports(s: &Store, id: &str, state: JobState) -> ReportOutcome {
    s.apply_report(
        &k("k1"),
        &j(id),
        state,
        Utc::now(),
        None,
        None,
        Source::Kiosk,
    )
    .unwrap()
}

/// `(from, to)` of every `print_job.state_changed` of `id` (marked
/// durable first: nothing flushes here).
fn state_events(s: &Store, id: &str) -> Vec<(Option<String>, String)> {
    let log = s.events();
    log.mark_durable(log.taken());
    log.after(0, 100, |kind, _| kind == "print_job.state_changed")
        .unwrap()
        .into_iter()
        .filter(|e| e.data["job_id"] == id)
        .map(|e| {
            let from = e.data["from"].as_str().map(str::to_owned);
            (from, e.data["to"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn states(s: &Store, id: &str) -> Vec<JobState> {
    let rec = s.job(&j(id)).unwrap().unwrap();
    rec.history.iter().map(|t| t.state).collect()
}

#[test]
fn a_queued_job_is_cancelled_at_once_and_leaves_pending() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.create_job(job("a", "k1"), PAYLOAD, None).unwrap();
        let CancelOutcome::Cancelled(rec) = s.cancel_job(&j("a"), Utc::now()).unwrap() else {
            panic!("a queued job is cancelled at once");
        };
        assert_eq!(rec.state, JobState::Cancelled);
        assert_eq!(rec.reason.as_deref(), Some(CANCELLED_QUEUED));
        assert_eq!(s.pending_count(&k("k1")), 0, "never sent again");
        // The kiosk may hold an earlier publish: it is told.
        assert!(s.cancel_pending(&k("k1"), &j("a")).unwrap());
        assert_eq!(
            s.pending_cancels(Some(&k("k1"))).unwrap(),
            [(k("k1"), j("a"))]
        );
        assert_eq!(s.counts().get(JobState::Cancelled), 1);
        assert_eq!(s.counts().get(JobState::Queued), 0);
        assert_eq!(
            state_events(&s, "a"),
            [(Some("queued".to_owned()), "cancelled".to_owned())]
        );
        // Idempotent.
        assert!(matches!(
            s.cancel_job(&j("a"), Utc::now()).unwrap(),
            CancelOutcome::AlreadyCancelled(_)
        ));
        assert_eq!(state_events(&s, "a").len(), 1);
        s.db.flush().unwrap();
    }
    let s = reopen(dir.path());
    assert_eq!(states(&s, "a"), [JobState::Queued, JobState::Cancelled]);
    assert_eq!(s.counts().get(JobState::Cancelled), 1);
    assert!(s.cancel_pending(&k("k1"), &j("a")).unwrap());
    // The kiosk confirms: no second transition, nothing left to send.
    assert!(matches!(
        kiosk_reports(&s, "a", JobState::Cancelled),
        ReportOutcome::Duplicate
    ));
    assert!(!s.cancel_pending(&k("k1"), &j("a")).unwrap());
    assert_eq!(states(&s, "a"), [JobState::Queued, JobState::Cancelled]);
    assert!(matches!(
        s.cancel_job(&j("unknown"), Utc::now()).unwrap(),
        CancelOutcome::Unknown
    ));
}

#[test]
fn a_received_job_is_cancelled_when_the_kiosk_confirms() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_job(job("a", "k1"), PAYLOAD, None).unwrap();
    kiosk_reports(&s, "a", JobState::Received);
    let CancelOutcome::Requested(rec) = s.cancel_job(&j("a"), Utc::now()).unwrap() else {
        panic!("a received job is asked to cancel");
    };
    assert_eq!(rec.state, JobState::Received);
    assert!(s.cancel_pending(&k("k1"), &j("a")).unwrap());
    // Still delivered (a republish asks for the outcome) until it ends.
    assert_eq!(s.pending_count(&k("k1")), 1);
    assert!(matches!(
        s.cancel_job(&j("a"), Utc::now()).unwrap(),
        CancelOutcome::Requested(_)
    ));
    assert!(matches!(
        kiosk_reports(&s, "a", JobState::Cancelled),
        ReportOutcome::Applied {
            from: Some(JobState::Received),
            ..
        }
    ));
    assert_eq!(
        states(&s, "a"),
        [JobState::Queued, JobState::Received, JobState::Cancelled]
    );
    assert!(!s.cancel_pending(&k("k1"), &j("a")).unwrap());
    assert_eq!(s.pending_count(&k("k1")), 0);
    assert_eq!(s.counts().get(JobState::Cancelled), 1);
    assert_eq!(s.counts().get(JobState::Received), 0);
    assert_eq!(
        state_events(&s, "a").last().unwrap(),
        &(Some("received".to_owned()), "cancelled".to_owned())
    );
    // A late result does not undo it.
    assert!(matches!(
        kiosk_reports(&s, "a", JobState::Printed),
        ReportOutcome::Conflict(_)
    ));
}

#[test]
fn a_job_printing_on_the_kiosk_ends_printed_and_then_refuses_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_job(job("a", "k1"), PAYLOAD, None).unwrap();
    kiosk_reports(&s, "a", JobState::Received);
    // Printing on the kiosk is `received` here: asked, and the kiosk
    // refuses (its write started) and reports the outcome.
    assert!(matches!(
        s.cancel_job(&j("a"), Utc::now()).unwrap(),
        CancelOutcome::Requested(_)
    ));
    kiosk_reports(&s, "a", JobState::Printed);
    assert!(!s.cancel_pending(&k("k1"), &j("a")).unwrap());
    let CancelOutcome::NotCancellable(rec) = s.cancel_job(&j("a"), Utc::now()).unwrap() else {
        panic!("a printed job is not cancellable");
    };
    assert_eq!(rec.state, JobState::Printed);
}

#[test]
fn finished_jobs_are_not_cancellable() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for (id, end) in [
        ("p", JobState::Printed),
        ("f", JobState::Failed),
        ("e", JobState::Expired),
    ] {
        s.create_job(job(id, "k1"), PAYLOAD, None).unwrap();
        kiosk_reports(&s, id, end);
        let CancelOutcome::NotCancellable(rec) = s.cancel_job(&j(id), Utc::now()).unwrap() else {
            panic!("{end:?} is not cancellable");
        };
        assert_eq!(rec.state, end);
        assert!(!s.cancel_pending(&k("k1"), &j(id)).unwrap());
        assert_eq!(states(&s, id).last(), Some(&end));
    }
    assert_eq!(s.counts().get(JobState::Cancelled), 0);
}

#[test]
fn the_kiosk_that_started_a_job_before_its_cancel_overrules_it() {
    // Cancelled while queued, but the kiosk had the job already (published
    // before the cancel) and started printing before the command came.
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_job(job("a", "k1"), PAYLOAD, None).unwrap();
    s.cancel_job(&j("a"), Utc::now()).unwrap();
    assert!(matches!(
        kiosk_reports(&s, "a", JobState::Received),
        ReportOutcome::Duplicate
    ));
    assert_eq!(s.job(&j("a")).unwrap().unwrap().state, JobState::Cancelled);
    assert!(s.cancel_pending(&k("k1"), &j("a")).unwrap());
    assert!(matches!(
        kiosk_reports(&s, "a", JobState::Printed),
        ReportOutcome::Applied {
            from: Some(JobState::Cancelled),
            ..
        }
    ));
    assert_eq!(
        states(&s, "a"),
        [JobState::Queued, JobState::Cancelled, JobState::Printed]
    );
    assert!(!s.cancel_pending(&k("k1"), &j("a")).unwrap());
    assert_eq!(s.counts().get(JobState::Printed), 1);
    assert_eq!(s.counts().get(JobState::Cancelled), 0);
    assert_eq!(
        state_events(&s, "a").last().unwrap(),
        &(Some("cancelled".to_owned()), "printed".to_owned())
    );
}
