//! The kiosk edge of cash payments (issue 9): what the customer and the
//! operator see stays exact through agent restarts, outages, cancels and
//! board resets. Real gateway and agent; the acceptor is
//! [`kiosk_testkit::FakeBoard`] (protocol v2) or [`FakeAcceptor`] (v1) on a
//! real pty.

use std::time::Duration;

use kiosk_agent::{Agent, AgentConfig};
use kiosk_e2e::{TestFleet, WAIT, credit_amounts};
use kiosk_testkit::{CutProxy, FakeAcceptor, FakeBoard, FakePrinter, Money};
use serde_json::{Value, json};

fn unassigned(list: &Value) -> usize {
    list["credits"].as_array().map_or(0, Vec::len)
}

struct Kiosk {
    board: FakeBoard,
    printer: FakePrinter,
    _dir: tempfile::TempDir,
}

async fn kiosk() -> Kiosk {
    let dir = tempfile::tempdir().unwrap();
    Kiosk {
        board: FakeBoard::start(dir.path()).unwrap(),
        printer: FakePrinter::start().await.unwrap(),
        _dir: dir,
    }
}

impl Kiosk {
    fn config(&self, fleet: &TestFleet, proxy: Option<&CutProxy>) -> AgentConfig {
        fleet.cash_agent_config(
            "k1",
            self.printer.addr(),
            self.board.path(),
            proxy.map(CutProxy::addr),
        )
    }

    async fn start_agent(&self, fleet: &TestFleet, proxy: Option<&CutProxy>) -> Agent {
        let agent = fleet.start_agent_with(self.config(fleet, proxy)).await;
        fleet.wait_cash_connected("k1", true).await;
        agent
    }

    /// Inserts money the board must accept.
    async fn insert(&self, money: &[(Money, i64)]) {
        for &(kind, amount) in money {
            assert!(
                self.board.wait_accepting(true, WAIT).await,
                "the board accepts"
            );
            assert!(self.board.insert(kind, amount).await, "{amount} taken");
        }
    }
}

async fn cancel(fleet: &TestFleet, id: &str) -> (u16, Value) {
    fleet
        .post(&format!("/v1/cash-sessions/{id}/cancel"), &json!({}))
        .await
}

/// Finding 1: open a session, insert four notes, kill the agent, insert
/// four coins, restart the agent: the coins are the session's.
#[tokio::test]
async fn credits_taken_across_an_agent_restart_stay_on_the_session() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let config = k.config(&fleet, None);
    let agent = k.start_agent(&fleet, None).await;
    let s = fleet.open_session("k1", 100_000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    k.insert(&[(Money::Bill, 1000); 4]).await;
    fleet
        .wait_session(&id, |s| s["amount_inserted"] == 4000)
        .await;
    agent.kill().await;
    // The board's lease has not run out yet: it still takes coins, keeps
    // them unacknowledged and reports them again.
    for _ in 0..4 {
        assert!(k.board.insert(Money::Coin, 200).await, "coin taken");
    }
    let agent = fleet.start_agent_with(config).await;
    let s = fleet
        .wait_session(&id, |s| s["amount_inserted"] == 4800)
        .await;
    assert_eq!(
        credit_amounts(&s),
        [1000, 1000, 1000, 1000, 200, 200, 200, 200]
    );
    assert!(k.board.wait_all_acked(WAIT).await, "the board forgot them");
    let (_, list) = fleet.get("/v1/kiosks/k1/unassigned-credits").await;
    assert_eq!(unassigned(&list), 0, "{list}");
    agent.shutdown().await;
}

/// Finding 1 with a v1 board (no lease, no ACK): a line written while the
/// agent was down is read after its restart, under the session that was
/// enabled before it (the old agent started disabled: unassigned).
#[tokio::test]
async fn a_v1_board_keeps_working_and_restarts_keep_the_session() {
    let fleet = TestFleet::start(&["k1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let acceptor = FakeAcceptor::start(dir.path()).unwrap();
    let printer = FakePrinter::start().await.unwrap();
    let config = fleet.cash_agent_config("k1", printer.addr(), acceptor.path(), None);
    let agent = fleet.start_agent_with(config.clone()).await;
    fleet.wait_cash_connected("k1", true).await;
    acceptor.send("READY").await.unwrap();
    let s = fleet.open_session("k1", 100_000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    assert!(acceptor.wait_last_command("ENABLE", WAIT).await);
    acceptor.send("BILL:1000").await.unwrap();
    fleet
        .wait_session(&id, |s| s["amount_inserted"] == 1000)
        .await;
    agent.kill().await;
    // Written while nobody reads the port: the pty keeps it, and the
    // restarted agent reads it at once, before the gateway's next enable
    // can arrive. It must still be the session's.
    acceptor.send("COIN:200").await.unwrap();
    let agent = fleet.start_agent_with(config).await;
    let s = fleet
        .wait_session(&id, |s| s["amount_inserted"] == 1200)
        .await;
    assert_eq!(credit_amounts(&s), [1000, 200]);
    agent.shutdown().await;
}

/// Finding 2 and test 4: a cancel while the kiosk is cut off stays
/// `cancelling` with the refund so far; once the kiosk is back, its
/// credits and its confirmation make it `cancelled` with everything
/// inserted under the session as the refund.
#[tokio::test]
async fn cancel_during_an_outage_refunds_everything_once_the_kiosk_is_back() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let proxy = CutProxy::start(fleet.mqtt_addr).await.unwrap();
    let agent = k.start_agent(&fleet, Some(&proxy)).await;
    let s = fleet.open_session("k1", 100_000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    k.insert(&[(Money::Bill, 1000)]).await;
    fleet
        .wait_session(&id, |s| s["amount_inserted"] == 1000)
        .await;

    proxy.cut();
    fleet.wait_kiosk("k1", "offline").await;
    k.insert(&[(Money::Bill, 500), (Money::Coin, 200)]).await;
    let (status, s) = cancel(&fleet, &id).await;
    assert_eq!(status, 202, "{s}");
    assert_eq!(s["state"], "cancelling", "{s}");
    assert_eq!(s["refund_due"], 1000, "the refund so far: {s}");
    // Money keeps going in on the kiosk: it cannot know yet.
    k.insert(&[(Money::Coin, 100)]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = fleet.wait_session(&id, |_| true).await;
    assert_eq!(
        s["state"], "cancelling",
        "no confirmation while offline: {s}"
    );

    proxy.restore();
    let s = fleet.wait_session(&id, |s| s["state"] == "cancelled").await;
    assert_eq!(s["refund_due"], 1800, "{s}");
    assert_eq!(credit_amounts(&s), [1000, 500, 200, 100]);
    assert!(
        k.board.wait_accepting(false, WAIT).await,
        "the acceptor is off"
    );
    let (_, list) = fleet.get("/v1/kiosks/k1/unassigned-credits").await;
    assert_eq!(unassigned(&list), 0, "{list}");
    agent.shutdown().await;
}

/// Finding 3 and test 5: cut off from the gateway, the kiosk stops taking
/// money once the session's amount is reached; the last note's excess is
/// change on the session.
#[tokio::test]
async fn overpayment_while_offline_is_change_on_the_session() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let proxy = CutProxy::start(fleet.mqtt_addr).await.unwrap();
    let agent = k.start_agent(&fleet, Some(&proxy)).await;
    let s = fleet.open_session("k1", 2000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    assert!(k.board.wait_accepting(true, WAIT).await);
    proxy.cut();
    fleet.wait_kiosk("k1", "offline").await;
    k.insert(&[(Money::Bill, 1000), (Money::Bill, 2000)]).await;
    assert!(
        k.board.wait_accepting(false, WAIT).await,
        "the kiosk disabled the acceptor by itself at the amount due"
    );
    assert!(!k.board.insert(Money::Coin, 200).await, "refused");

    proxy.restore();
    let s = fleet
        .wait_session(&id, |s| s["state"] == "paid" && s["final"] == true)
        .await;
    assert_eq!(credit_amounts(&s), [1000, 2000]);
    assert_eq!(s["change_due"], 1000, "{s}");
    let (_, list) = fleet.get("/v1/kiosks/k1/unassigned-credits").await;
    assert_eq!(unassigned(&list), 0, "{list}");
    agent.shutdown().await;
}

/// Finding 4 and test 3: an agent that dies leaves no open slot; the
/// board's lease runs out within 3 s of the host's last line.
#[tokio::test]
async fn a_killed_agent_leaves_the_acceptor_inhibited_within_the_lease() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let config = k.config(&fleet, None);
    let agent = k.start_agent(&fleet, None).await;
    fleet.open_session("k1", 100_000).await;
    assert!(k.board.wait_accepting(true, WAIT).await);
    // Renewed while the agent lives.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(k.board.accepting(), "the agent renews the lease");
    agent.kill().await;
    assert!(k.board.wait_accepting(false, WAIT).await, "inhibited");
    let after = k.board.inhibited_after().expect("inhibited by the lease");
    assert!(
        after <= Duration::from_millis(3500),
        "the board's own lease: {after:?}"
    );
    assert!(k.board.errors_sent().iter().any(|e| e == "lease"));
    // A restarted agent takes over the session again.
    let agent = fleet.start_agent_with(config).await;
    assert!(k.board.wait_accepting(true, WAIT).await, "enabled again");
    agent.shutdown().await;
}

/// Test 3 with a real process: SIGSTOP freezes the agent (as a hung Pi
/// would); the board inhibits itself, and SIGCONT brings acceptance back.
#[tokio::test]
async fn a_stopped_agent_process_lets_the_lease_run_out() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let config = k.board.path().parent().unwrap().join("agent.toml");
    std::fs::write(
        &config,
        fleet.cash_agent_toml("k1", k.printer.addr(), k.board.path()),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-process"))
        .arg("--config")
        .arg(&config)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    fleet.wait_cash_connected("k1", true).await;
    fleet.open_session("k1", 100_000).await;
    assert!(k.board.wait_accepting(true, WAIT).await);
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, pid.as_str()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    assert!(
        k.board.wait_accepting(false, WAIT).await,
        "inhibited while stopped"
    );
    let after = k.board.inhibited_after().expect("by the lease");
    assert!(after <= Duration::from_millis(3500), "{after:?}");
    assert!(!k.board.insert(Money::Coin, 200).await, "money refused");
    signal("-CONT");
    assert!(k.board.wait_accepting(true, WAIT).await, "renewed again");
    assert!(k.board.insert(Money::Coin, 200).await);
    assert!(k.board.wait_all_acked(WAIT).await);
    child.kill().await.unwrap();
}

/// Test 2: a board reset mid-session (new boot id, seq from 1 again) with
/// a credit whose ACK was lost before it: each credit counted once.
#[tokio::test]
async fn a_board_reset_mid_session_counts_each_credit_once() {
    let fleet = TestFleet::start(&["k1"]).await;
    let k = kiosk().await;
    let agent = k.start_agent(&fleet, None).await;
    let s = fleet.open_session("k1", 100_000).await;
    let id = s["session_id"].as_str().unwrap().to_owned();
    k.insert(&[(Money::Bill, 1000), (Money::Bill, 500)]).await;
    assert!(k.board.wait_all_acked(WAIT).await);
    let boot = k.board.boot_id();
    // ACKs lost on the wire: the board reports the coin again and again.
    k.board.set_ignore_acks(true);
    k.insert(&[(Money::Coin, 200)]).await;
    fleet
        .wait_session(&id, |s| s["amount_inserted"] == 1700)
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let lost = k.board.reset().await;
    assert_eq!(lost.len(), 1, "the coin was still unacknowledged: {lost:?}");
    k.board.set_ignore_acks(false);
    assert_ne!(k.board.boot_id(), boot);
    // The new boot numbers from 1 again: these are new credits.
    k.insert(&[(Money::Coin, 50), (Money::Bill, 2000)]).await;
    assert!(k.board.wait_all_acked(WAIT).await);
    let s = fleet
        .wait_session(&id, |s| s["amount_inserted"] == 3750)
        .await;
    assert_eq!(credit_amounts(&s), [1000, 500, 200, 50, 2000]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = fleet.wait_session(&id, |_| true).await;
    assert_eq!(s["amount_inserted"], 3750, "nothing counted twice: {s}");
    agent.shutdown().await;
}
