//! Tests of the job store.

use super::pending::pending_key;
use super::records::decode_job;
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

// Listing through the indexes.

/// A job for `kiosk` and `printer` stored `secs` seconds after a fixed
/// instant.
fn job_at(id: &str, kiosk: &str, printer: &str, secs: i64) -> JobRecord {
    let at = chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000);
    let mut rec = job(id, kiosk);
    rec.printer = printer.into();
    rec.accepted_at = at + chrono::Duration::seconds(secs);
    rec.created_at = rec.accepted_at;
    rec
}

/// Every page of a listing, `limit` at a time, as job ids.
fn list_all(s: &Store, filter: &JobFilter, limit: usize) -> Vec<String> {
    let (mut out, mut cursor) = (Vec::new(), None);
    loop {
        let page = s.list_jobs(filter, cursor.as_ref(), limit).unwrap();
        assert!(page.jobs.len() <= limit);
        out.extend(page.jobs.iter().map(|r| r.job_id.as_str().to_owned()));
        match page.next {
            Some(c) => {
                assert_eq!(page.jobs.len(), limit, "a cursor only after a full page");
                cursor = Some(c);
            }
            None => return out,
        }
    }
}

/// What a listing must answer: every record that matches, newest first,
/// ties by id (a scan of `jobs`, as a model).
fn expected(s: &Store, f: &JobFilter) -> Vec<String> {
    let mut all: Vec<JobRecord> = s
        .jobs
        .iter()
        .map(|i| {
            let (k, v) = i.unwrap();
            decode_job(&k, &v).unwrap()
        })
        .filter(|r| {
            f.kiosk.as_ref().is_none_or(|k| *k == r.kiosk_id)
                && f.printer.as_ref().is_none_or(|p| *p == r.printer)
                && (f.states.is_empty() || f.states.contains(&r.state))
                && f.created_after.is_none_or(|t| r.accepted_at > t)
                && f.created_before.is_none_or(|t| r.accepted_at < t)
        })
        .collect();
    all.sort_by(|a, b| {
        b.accepted_at
            .cmp(&a.accepted_at)
            .then_with(|| a.job_id.as_str().cmp(b.job_id.as_str()))
    });
    all.into_iter()
        .map(|r| r.job_id.as_str().to_owned())
        .collect()
}

fn report(s: &Store, kiosk: &str, id: &str, state: JobState) {
    let outcome = s
        .apply_report(
            &k(kiosk),
            &j(id),
            state,
            Utc::now(),
            None,
            None,
            Source::Kiosk,
        )
        .unwrap();
    assert!(matches!(outcome, ReportOutcome::Applied { .. }), "{id}");
}

/// 60 jobs over 3 kiosks and 2 printers, in every state, two of them at
/// the same instant.
fn listing_fixture(s: &Store) {
    let states = [
        JobState::Queued,
        JobState::Received,
        JobState::Printed,
        JobState::Failed,
        JobState::Expired,
    ];
    for n in 0..60i64 {
        let kiosk = ["k1", "k2", "k3"][(n % 3) as usize];
        let printer = if n % 4 == 0 { "label" } else { "receipt" };
        // Jobs 30 and 31 share an instant: the id breaks the tie.
        let secs = if n == 31 { 30 } else { n };
        let id = format!("job-{n:02}");
        let created = s
            .create_job(job_at(&id, kiosk, printer, secs), PAYLOAD, None)
            .unwrap();
        assert!(matches!(created, CreateOutcome::Created(_)));
        let state = states[(n * 7 % 5) as usize];
        if state != JobState::Queued {
            report(s, kiosk, &id, JobState::Received);
        }
        if !matches!(state, JobState::Queued | JobState::Received) {
            report(s, kiosk, &id, state);
        }
    }
}

#[test]
fn listing_answers_each_filter_newest_first_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    listing_fixture(&s);
    let t = |secs: i64| job_at("x", "k1", "p", secs).accepted_at;
    let filters = [
        JobFilter::default(),
        JobFilter {
            kiosk: Some(k("k2")),
            ..JobFilter::default()
        },
        JobFilter {
            kiosk: Some(k("nope")),
            ..JobFilter::default()
        },
        JobFilter {
            printer: Some("label".into()),
            ..JobFilter::default()
        },
        JobFilter {
            states: vec![JobState::Failed],
            ..JobFilter::default()
        },
        JobFilter {
            states: vec![JobState::Printed, JobState::Queued, JobState::Printed],
            ..JobFilter::default()
        },
        JobFilter {
            created_after: Some(t(10)),
            ..JobFilter::default()
        },
        JobFilter {
            created_before: Some(t(30)),
            ..JobFilter::default()
        },
        JobFilter {
            created_after: Some(t(12)),
            created_before: Some(t(12)),
            ..JobFilter::default()
        },
        JobFilter {
            kiosk: Some(k("k1")),
            printer: Some("receipt".into()),
            states: vec![JobState::Expired, JobState::Received],
            created_after: Some(t(5)),
            created_before: Some(t(50)),
        },
        JobFilter {
            kiosk: Some(k("k3")),
            created_after: Some(t(20)),
            created_before: Some(t(41)),
            ..JobFilter::default()
        },
    ];
    for f in &filters {
        let want = expected(&s, f);
        for limit in [1, 3, 7, 100] {
            assert_eq!(list_all(&s, f, limit), want, "{f:?}, limit {limit}");
        }
    }
    // The model is not vacuous: the filters narrow, in the expected order.
    let all = expected(&s, &JobFilter::default());
    assert_eq!(all.len(), 60);
    assert_eq!(&all[..2], ["job-59", "job-58"]);
    let tie = all.iter().position(|id| id == "job-30").unwrap();
    assert_eq!(all[tie + 1], "job-31", "ties by job id");
    assert!(!expected(&s, &filters[4]).is_empty());
    assert!(expected(&s, &filters[4]).len() < 20);
    assert!(!expected(&s, &filters[9]).is_empty());
    assert!(expected(&s, &filters[8]).is_empty());
    assert_eq!(expected(&s, &filters[6]).len(), 49);
}

#[test]
fn a_state_change_moves_the_job_between_state_listings() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_job(job_at("a", "k1", "receipt", 1), PAYLOAD, None)
        .unwrap();
    let in_state = |state| {
        let f = JobFilter {
            states: vec![state],
            ..JobFilter::default()
        };
        list_all(&s, &f, 10)
    };
    assert_eq!(in_state(JobState::Queued), ["a"]);
    report(&s, "k1", "a", JobState::Received);
    report(&s, "k1", "a", JobState::Failed);
    assert!(in_state(JobState::Queued).is_empty());
    assert!(in_state(JobState::Received).is_empty());
    assert_eq!(in_state(JobState::Failed), ["a"]);
    // One entry per index, none left in the old states.
    assert_eq!(
        (s.by_time.len(), s.by_kiosk.len(), s.by_state.len()),
        (1, 1, 1)
    );
}

#[test]
fn jobs_seen_over_mqtt_or_from_a_result_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let wire = |id: &str| PrintJob {
        v: kiosk_schemas::V1,
        job_id: j(id),
        printer: "receipt".into(),
        document: serde_json::from_value(serde_json::json!({"kind": "text", "text": "x"})).unwrap(),
        copies: 1,
        created_at: Utc::now() - chrono::Duration::days(3),
        expires_at: None,
    };
    let m = wire("mqtt");
    let outcome = s.record_mqtt_job(&k("k1"), &m, PAYLOAD).unwrap();
    assert_eq!(outcome, MqttJobOutcome::Recorded);
    // A result first, then its job: one job, listed in its latest state.
    report(&s, "k2", "late", JobState::Printed);
    let outcome = s.record_mqtt_job(&k("k2"), &wire("late"), PAYLOAD).unwrap();
    assert_eq!(outcome, MqttJobOutcome::Completed);
    assert_eq!(list_all(&s, &JobFilter::default(), 10), ["late", "mqtt"]);
    let printed = JobFilter {
        states: vec![JobState::Printed],
        kiosk: Some(k("k2")),
        ..JobFilter::default()
    };
    assert_eq!(list_all(&s, &printed, 10), ["late"]);
    assert_eq!(s.by_state.len(), 2);
}

/// Pages read while jobs are created (by another thread, and between
/// pages) show every job that existed at the first page exactly once.
#[test]
fn pages_skip_and_repeat_nothing_while_jobs_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for n in 0..300 {
        let kiosk = if n % 2 == 0 { "k1" } else { "k2" };
        let id = format!("old-{n:03}");
        // Many share an instant, so ties too go across pages.
        s.create_job(job_at(&id, kiosk, "receipt", n / 4), PAYLOAD, None)
            .unwrap();
    }
    let filters = [
        JobFilter::default(),
        JobFilter {
            kiosk: Some(k("k1")),
            ..JobFilter::default()
        },
        JobFilter {
            states: vec![JobState::Queued, JobState::Failed],
            ..JobFilter::default()
        },
    ];
    for f in &filters {
        let before = expected(&s, f);
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        // The other thread creates one job per page, while the next page
        // is read: however the threads are scheduled (a busy machine may
        // not run it at all otherwise), and no faster (jobs it made would
        // pile up for the next filter to page through).
        let stop = AtomicBool::new(false);
        let allowed = AtomicUsize::new(1);
        let created = AtomicUsize::new(0);
        let seen = std::thread::scope(|scope| {
            let creator = scope.spawn(|| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if n == allowed.load(Ordering::Acquire) {
                        std::thread::yield_now();
                        continue;
                    }
                    let kiosk = if n % 2 == 0 { "k1" } else { "k2" };
                    let id = format!("new-{}-{}-{n}", f.states.len(), f.kiosk.is_some());
                    s.create_job(job(&id, kiosk), PAYLOAD, None).unwrap();
                    n += 1;
                    created.store(n, Ordering::Release);
                }
                n
            });
            let (mut seen, mut cursor) = (Vec::new(), None);
            let mut pages = 0;
            loop {
                let page = s.list_jobs(f, cursor.as_ref(), 7).unwrap();
                seen.extend(page.jobs.iter().map(|r| r.job_id.as_str().to_owned()));
                // The job allowed during this page is made; allow the next.
                while created.load(Ordering::Acquire) < allowed.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                allowed.fetch_add(1, Ordering::AcqRel);
                // And one more between pages, for sure.
                let id = format!("between-{}-{pages}", f.states.len());
                s.create_job(job(&id, "k1"), PAYLOAD, None).unwrap();
                // A job further down fails: under `queued, failed` it
                // moves from one state's range to the other's.
                if !f.states.is_empty() {
                    let n = 299 - (pages * 11 + 5) % 300;
                    let kiosk = if n % 2 == 0 { "k1" } else { "k2" };
                    let id = format!("old-{n:03}");
                    s.apply_report(
                        &k(kiosk),
                        &j(&id),
                        JobState::Failed,
                        Utc::now(),
                        None,
                        None,
                        Source::Kiosk,
                    )
                    .unwrap();
                }
                pages += 1;
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            stop.store(true, Ordering::Relaxed);
            assert!(creator.join().unwrap() >= pages);
            seen
        });
        // (Jobs created while paging sort first: before the cursor.)
        let existed: std::collections::HashSet<_> = before.iter().collect();
        let old: Vec<_> = seen
            .iter()
            .filter(|id| existed.contains(id))
            .cloned()
            .collect();
        assert_eq!(old, before, "{f:?}");
        assert!(before.iter().filter(|id| id.starts_with("old-")).count() >= 150);
        let unique: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{f:?}: a job repeated");
    }
    assert!(s.counts().get(JobState::Failed) > 10);
}

#[test]
fn purged_jobs_leave_the_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_job(job_at("old", "k1", "receipt", 1), PAYLOAD, None)
        .unwrap();
    s.create_job(job_at("open", "k1", "receipt", 2), PAYLOAD, None)
        .unwrap();
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
    assert_eq!(list_all(&s, &JobFilter::default(), 10), ["open"]);
    assert_eq!(
        (s.by_time.len(), s.by_kiosk.len(), s.by_state.len()),
        (1, 1, 1)
    );
}

/// A creation cut short after its index entries: listing skips them, and
/// delivery's timer removes them with the pending entry and payload.
#[test]
fn index_entries_of_a_creation_cut_short_are_skipped_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.create_job(job_at("b", "k1", "receipt", 1), PAYLOAD, None)
        .unwrap();
    // Every write of create_job up to the record.
    let cut = job_at("a", "k1", "receipt", 2);
    let pos = super::index::time_key(cut.accepted_at);
    s.pending
        .insert(pending_key(&k("k1"), &j("a")), &pos[..])
        .unwrap();
    s.payloads.insert("a", PAYLOAD).unwrap();
    s.index_insert(&cut).unwrap();
    assert_eq!(s.by_time.len(), 2);
    assert_eq!(list_all(&s, &JobFilter::default(), 1), ["b"]);
    let queued = JobFilter {
        kiosk: Some(k("k1")),
        states: vec![JobState::Queued],
        ..JobFilter::default()
    };
    assert_eq!(list_all(&s, &queued, 1), ["b"]);
    assert!(s.drop_unfinished(&k("k1"), &j("a")).unwrap());
    assert_eq!(
        (s.by_time.len(), s.by_kiosk.len(), s.by_state.len()),
        (1, 1, 1)
    );
    assert_eq!(s.pending(None).unwrap(), vec![(k("k1"), j("b"))]);
}

/// A store written before the indexes existed (records only) gets them
/// when it opens, once.
#[test]
fn a_store_without_indexes_is_indexed_when_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let jobs = db.open_tree("jobs").unwrap();
        for (n, kiosk) in ["k1", "k2", "k1"].iter().enumerate() {
            let rec = job_at(&format!("j{n}"), kiosk, "receipt", n as i64);
            let bytes = record::encode(JOB_V, &rec).unwrap();
            jobs.insert(rec.job_id.as_str(), bytes).unwrap();
        }
        db.flush().unwrap();
    }
    let s = reopen(dir.path());
    assert_eq!(list_all(&s, &JobFilter::default(), 2), ["j2", "j1", "j0"]);
    let k1 = JobFilter {
        kiosk: Some(k("k1")),
        ..JobFilter::default()
    };
    assert_eq!(list_all(&s, &k1, 2), ["j2", "j0"]);
    let queued = JobFilter {
        states: vec![JobState::Queued],
        ..JobFilter::default()
    };
    assert_eq!(list_all(&s, &queued, 2), ["j2", "j1", "j0"]);
    assert_eq!(s.build_job_index().unwrap(), 0, "built once");
    drop(s);
    let s = reopen(dir.path());
    assert_eq!(s.by_time.len(), 3);
}

#[test]
fn cursors_read_back_and_garbage_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for n in 0..3 {
        s.create_job(job_at(&format!("j{n}"), "k1", "receipt", n), PAYLOAD, None)
            .unwrap();
    }
    let page = s.list_jobs(&JobFilter::default(), None, 2).unwrap();
    let cursor = page.next.expect("more");
    let text = cursor.encode();
    assert_eq!(Cursor::decode(&text), Some(cursor));
    for bad in ["", "!!!", "AQ", "AA", &text[1..], "AgAAAAAAAAAAeA"] {
        assert_eq!(Cursor::decode(bad), None, "{bad:?}");
    }
}
