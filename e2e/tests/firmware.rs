//! The real agent against the real cash-acceptor firmware, compiled with
//! Debian's AVR toolchain and run in simavr with its UART on a pty
//! ([`kiosk_testkit::SimAcceptor`]; `scripts/firmware.sh` builds it, and
//! without it these tests skip unless `KIOSK_REQUIRE_FIRMWARE=1`).
//!
//! The simulation runs in real time: waits have deadlines, nothing asserts
//! an upper bound on elapsed time.

use std::time::Duration;

use kiosk_e2e::{TestFleet, WAIT};
use kiosk_testkit::{FakePrinter, SimAcceptor};

/// Issue 9, test 3 with the real firmware: money goes in on the session
/// through protocol v2 (`CREDIT`, `ACK`), a killed agent leaves the board
/// inhibited by its own lease, and a restarted agent (which the board
/// does not notice: no reset, so it asks `HELLO`) takes over the session.
#[tokio::test]
async fn the_firmware_takes_money_for_the_session_and_inhibits_when_the_agent_dies() {
    let dir = tempfile::tempdir().unwrap();
    let Some(sim) = SimAcceptor::start(dir.path()).await.unwrap() else {
        return;
    };
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    let config = fleet.cash_agent_config("k1", printer.addr(), sim.path(), None);
    let agent = fleet.start_agent_with(config.clone()).await;
    fleet.wait_cash_connected("k1", true).await;
    assert!(
        sim.wait_inhibited(true, WAIT).await,
        "inhibited without a session"
    );

    let s = fleet.open_session("k1", 100_000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    assert!(
        sim.wait_inhibited(false, WAIT).await,
        "enabled for the session"
    );
    sim.coin(2).await.unwrap();
    sim.bill(1).await.unwrap();
    let s = fleet
        .wait_session(&id, |s| s["amount_inserted"] == 520)
        .await;
    assert_eq!(s["credits"].as_array().unwrap().len(), 2, "{s}");
    // Still accepting after several lease periods: the agent renews it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sim.inhibited(), Some(false), "the lease is renewed");

    agent.kill().await;
    assert!(
        sim.wait_inhibited(true, Duration::from_secs(10)).await,
        "the board inhibits itself once its lease runs out"
    );

    let agent = fleet.start_agent_with(config).await;
    assert!(
        sim.wait_inhibited(false, WAIT).await,
        "the restarted agent enables the session again"
    );
    sim.coin(5).await.unwrap();
    let s = fleet
        .wait_session(&id, |s| s["amount_inserted"] == 570)
        .await;
    let seqs: Vec<u64> = s["credits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 3, "each credit once: {s}");
    // Re-sends after the restart change nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fleet.wait_session(&id, |_| true).await["amount_inserted"],
        570
    );
    agent.shutdown().await;
}
