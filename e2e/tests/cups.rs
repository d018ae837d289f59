//! The print path through CUPS: HTTP → gateway → agent → its `cups`
//! driver → a real cupsd ([`kiosk_testkit::Cupsd`]) → a raw queue whose
//! `socket://` device is the fake port-9100 printer. A stopped queue shows
//! in the kiosk status and holds the job, which prints once, after the
//! queue runs again. Skips without CUPS unless `KIOSK_REQUIRE_CUPS=1`.

use std::time::Duration;

use kiosk_agent::config::{AgentConfig, Checked};
use kiosk_e2e::{TestFleet, WAIT, count_with, text_job};
use kiosk_testkit::{Cupsd, FakePrinter};

#[tokio::test(flavor = "multi_thread")]
async fn job_prints_through_a_cups_queue_and_waits_while_it_is_stopped() {
    let Some(cupsd) = Cupsd::start().expect("cupsd") else {
        return;
    };
    let fleet = TestFleet::start(&["k1"]).await;
    let printer = FakePrinter::start().await.unwrap();
    cupsd
        .add_raw_queue("kitchen", &format!("socket://{}", printer.addr()))
        .unwrap();
    let tcp = format!("driver = \"tcp\"\naddress = \"{}\"", printer.addr());
    let toml = fleet.agent_toml("k1", printer.addr());
    assert!(toml.contains(&tcp), "{toml}");
    let toml = toml.replace(
        &tcp,
        &format!(
            "driver = \"cups\"\nqueue = \"kitchen\"\nserver = \"{}\"",
            cupsd.server()
        ),
    );
    let agent = fleet
        .start_agent_with(AgentConfig::from_toml(&toml).unwrap())
        .await;
    fleet.wait_kiosk("k1", "online").await;
    let kiosk = fleet
        .wait_get("/v1/kiosks/k1", |k| {
            k["printers"]["receipt"]["ready"] == true
        })
        .await
        .expect("the cups queue is ready");
    assert_eq!(kiosk["printers"]["receipt"]["paper"], "unknown");

    let job_id = fleet.create_job("k1", text_job("VIA-CUPS\n")).await;
    fleet.wait_job(&job_id, "printed").await;
    // `printed` comes after CUPS reported the job completed: it is there.
    assert_eq!(count_with(&printer.jobs(), "VIA-CUPS"), 1);

    cupsd.disable("kitchen", "paper jam at the pass").unwrap();
    let kiosk = fleet
        .wait_get("/v1/kiosks/k1", |k| {
            k["printers"]["receipt"]["ready"] == false
        })
        .await
        .expect("the stopped queue shows");
    assert_eq!(
        kiosk["printers"]["receipt"]["error"],
        "cups queue kitchen is stopped: paper jam at the pass"
    );
    let held = fleet.create_job("k1", text_job("HELD-BY-CUPS\n")).await;
    fleet.wait_job(&held, "received").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fleet.job(&held).await["state"], "received");
    assert_eq!(count_with(&printer.jobs(), "HELD-BY-CUPS"), 0);

    cupsd.enable("kitchen").unwrap();
    fleet.wait_job(&held, "printed").await;
    printer.wait_for_jobs(2, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_with(&printer.jobs(), "HELD-BY-CUPS"), 1);
    assert_eq!(cupsd.pending_jobs("kitchen").unwrap().trim(), "");
    agent.shutdown().await;
}
