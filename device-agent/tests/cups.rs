//! The `cups` driver against a real cupsd ([`kiosk_testkit::Cupsd`]): a
//! raw queue whose `socket://` device is testkit's fake port-9100
//! printer. Skips without CUPS installed unless `KIOSK_REQUIRE_CUPS=1`.
//!
//! Real processes, so real time: waits have deadlines, no paused clock.

use std::time::{Duration, Instant};

use kiosk_agent::printer::cups::CupsDriver;
use kiosk_agent::printer::{PrinterDriver, Progress};
use kiosk_schemas::PaperStatus;
use kiosk_testkit::{Cupsd, FakePrinter};

/// Runs blocking driver calls off the runtime that serves the fake printer.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking call")
}

/// A cupsd with raw queue `q` printing to a fake printer; `None`: skip.
async fn cupsd_with_queue() -> Option<(Cupsd, FakePrinter)> {
    let cupsd = Cupsd::start().expect("cupsd")?;
    let printer = FakePrinter::start().await.expect("fake printer");
    cupsd
        .add_raw_queue("q", &format!("socket://{}", printer.addr()))
        .expect("lpadmin");
    Some((cupsd, printer))
}

/// Every byte value, twice, between ESC/POS init and cut: CUPS must pass
/// all of it through unfiltered.
fn binary_job() -> Vec<u8> {
    let mut job = b"\x1b@kiosk-fleet via cups\n".to_vec();
    job.extend((0..=255u8).chain(0..=255u8));
    job.extend_from_slice(b"\x1dV\x00");
    job
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_job_arrives_byte_exact_once_cups_reports_it_completed() {
    let Some((cupsd, printer)) = cupsd_with_queue().await else {
        return;
    };
    let mut driver = CupsDriver::new("q", Some(cupsd.server()), Duration::from_secs(10));
    let (driver, status) = blocking(move || {
        let s = driver.status();
        (driver, s)
    })
    .await;
    assert!(status.ready && status.online, "{status:?}");
    assert_eq!(status.paper, PaperStatus::Unknown);

    let job = binary_job();
    let progress = Progress::default();
    let counted = progress.clone();
    let sent = job.clone();
    let mut driver = driver;
    let outcome = blocking(move || driver.hand_over(&sent, &counted)).await;
    outcome.unwrap_or_else(|e| panic!("{e}\n{}", cupsd.log()));
    assert_eq!(progress.get(), job.len() as u64);
    // Completed means the backend is done: the printer already has it.
    let jobs = printer.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(jobs[0] == job, "bytes changed on the way");
    assert_eq!(cupsd.pending_jobs("q").unwrap().trim(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn stopped_queue_is_not_ready_and_a_job_there_is_cancelled_unprinted() {
    let Some((cupsd, printer)) = cupsd_with_queue().await else {
        return;
    };
    cupsd.disable("q", "paper jam at the bar").unwrap();
    let mut driver = CupsDriver::new("q", Some(cupsd.server()), Duration::from_secs(1));
    let (mut driver, status) = blocking(move || {
        let s = driver.status();
        (driver, s)
    })
    .await;
    assert!(!status.ready && !status.online, "{status:?}");
    assert_eq!(
        status.error.as_deref(),
        Some("cups queue q is stopped: paper jam at the bar")
    );

    let progress = Progress::default();
    let counted = progress.clone();
    let started = Instant::now();
    let err = blocking(move || driver.hand_over(&binary_job(), &counted))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(err.nothing_written(), "{err}");
    assert_eq!(progress.get(), 0);
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("made no progress") && message.contains("cancelled"),
        "{message}"
    );
    assert_eq!(cupsd.pending_jobs("q").unwrap().trim(), "");

    // Cancelled for good: the queue running again does not print it.
    cupsd.enable("q").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(printer.jobs().is_empty(), "{:?}", printer.jobs());
}

#[tokio::test(flavor = "multi_thread")]
async fn job_that_started_but_cannot_finish_is_cancelled_and_may_have_printed() {
    let Some(cupsd) = Cupsd::start().expect("cupsd") else {
        return;
    };
    // Nobody listens there: the socket backend starts and keeps retrying.
    let nowhere = kiosk_testkit::reserve_local_addr().unwrap();
    cupsd
        .add_raw_queue("off", &format!("socket://{nowhere}"))
        .unwrap();
    let mut driver = CupsDriver::new("off", Some(cupsd.server()), Duration::from_secs(1));
    let progress = Progress::default();
    let counted = progress.clone();
    let err = blocking(move || driver.hand_over(&binary_job(), &counted))
        .await
        .unwrap_err();
    // CUPS had begun sending it: it must not be retried as unprinted.
    assert!(!err.nothing_written(), "{err}");
    assert_eq!(progress.get(), binary_job().len() as u64);
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert_eq!(cupsd.pending_jobs("off").unwrap().trim(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_queue_is_named_and_nothing_is_queued() {
    let Some(cupsd) = Cupsd::start().expect("cupsd") else {
        return;
    };
    let mut driver = CupsDriver::new("nope", Some(cupsd.server()), Duration::from_secs(2));
    let (status, err) = blocking(move || {
        let s = driver.status();
        (s, driver.hand_over(b"x", &Progress::default()))
    })
    .await;
    assert_eq!(status.error.as_deref(), Some("cups queue nope not found"));
    assert!(!status.ready);
    let err = err.unwrap_err();
    assert!(err.nothing_written(), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn job_cancelled_in_cups_fails_and_is_not_retried() {
    let Some((cupsd, printer)) = cupsd_with_queue().await else {
        return;
    };
    cupsd.disable("q", "held for the test").unwrap();
    let mut driver = CupsDriver::new("q", Some(cupsd.server()), Duration::from_secs(20));
    let progress = Progress::default();
    let counted = progress.clone();
    // Spawned now (a `blocking` future would only start when awaited).
    let hand_over = tokio::task::spawn_blocking(move || driver.hand_over(&binary_job(), &counted));
    let queued =
        kiosk_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            cupsd
                .pending_jobs("q")
                .is_ok_and(|jobs| !jobs.trim().is_empty())
        })
        .await;
    assert!(queued, "the job never showed in lpstat");
    // An operator cancels it with the CUPS tools.
    cupsd.run("cancel", &["-a", "q"]).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), hand_over)
        .await
        .expect("hand_over returns soon after the cancel")
        .unwrap()
        .unwrap_err();
    assert!(!err.nothing_written(), "{err}");
    assert!(err.to_string().contains("ended canceled"), "{err}");
    assert_eq!(progress.get(), 0);
    cupsd.enable("q").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(printer.jobs().is_empty());
}
