//! The customer's payment page in a real browser: headless Chromium (Debian's
//! `chromium` + `chromium-driver`, installed by scripts/test.sh) driven over
//! WebDriver.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use kiosk_e2e::{FleetOptions, TestFleet, WAIT};
use kiosk_testkit::{FakeAcceptor, FakePrinter};
use serde_json::json;

async fn text_of(client: &fantoccini::Client, id: &str) -> String {
    match client.find(Locator::Id(id)).await {
        Ok(el) => el.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_text(client: &fantoccini::Client, id: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = text_of(client, id).await;
        if got.contains(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "#{id} never showed {want:?}; last: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A headless Chromium session through a chromedriver of its own, with
/// its profile in `dir`; drop the process handle to stop the driver.
async fn browser(dir: &std::path::Path) -> (tokio::process::Child, fantoccini::Client) {
    let port = kiosk_testkit::free_port().unwrap();
    let driver = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver is installed (scripts/test.sh installs chromium-driver)");
    let up = kiosk_e2e::wait_for(WAIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "chromedriver did not start");
    let profile = dir.join("chromium-profile");
    let caps = json!({"goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", format!("--user-data-dir={}", profile.display())]
    }});
    let caps = caps.as_object().unwrap().clone().into_iter().collect();
    // chromedriver speaks plain HTTP on loopback: no TLS stack needed.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("WebDriver session");
    (driver, client)
}

/// Fills in the sign-in form and sends it.
async fn sign_in(client: &fantoccini::Client, name: &str, password: &str) {
    for (id, value) in [("name", name), ("password", password)] {
        let field = client.find(Locator::Id(id)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }
    let button = client.find(Locator::Id("sign-in")).await.unwrap();
    button.click().await.unwrap();
}

/// Clicks the element `css` selects, finding it again when the page
/// re-rendered it in between (the fleet page redraws on every event).
async fn click(client: &fantoccini::Client, css: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let clicked = match client.find(Locator::Css(css)).await {
            Ok(el) => el.click().await.is_ok(),
            Err(_) => false,
        };
        if clicked {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never clickable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pay_page_in_headless_chromium_shows_the_new_amount() {
    let fleet = TestFleet::start(&["k1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let acceptor = FakeAcceptor::start(dir.path()).unwrap();
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet
        .start_agent_with(fleet.cash_agent_config("k1", printer.addr(), acceptor.path(), None))
        .await;
    fleet.wait_cash_connected("k1", true).await;
    let session = fleet.open_session("k1", 2000).await;
    assert!(acceptor.wait_last_command("ENABLE", WAIT).await);

    let (_driver, client) = browser(dir.path()).await;

    let url = format!(
        "{}{}",
        fleet.http_base,
        session["pay_url"].as_str().unwrap()
    );
    client.goto(&url).await.unwrap();
    wait_text(&client, "amount", "0.00 EUR of 20.00 EUR inserted").await;
    acceptor.send("BILL:1000").await.unwrap();
    wait_text(&client, "amount", "10.00 EUR of 20.00 EUR inserted").await;
    acceptor.send("BILL:2000").await.unwrap();
    wait_text(&client, "amount", "30.00 EUR of 20.00 EUR inserted").await;
    wait_text(&client, "status", "Paid. Change due: 10.00 EUR").await;
    client.close().await.unwrap();
    agent.shutdown().await;
}

/// The operators' fleet page: sign in, watch a kiosk go offline and come
/// back, press test print and see the job reach the printer. With
/// `KIOSK_FLEET_SCREENSHOT=<file.png>` it also saves a screenshot (the one
/// in README).
#[tokio::test]
async fn fleet_page_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let operators = dir.path().join("operators");
    kiosk_gateway::operators::add(&operators, "ana", &kiosk_schemas::Secret::new("ana-pw"))
        .unwrap();
    let mut opts = FleetOptions::new(&["k1", "k2"]);
    opts.http_extra = format!("operators = \"{}\"", operators.display());
    let fleet = TestFleet::start_with(opts).await;
    let printer = FakePrinter::start().await.unwrap();
    let agent = fleet.start_agent("k1", printer.addr()).await;
    fleet.wait_kiosk("k1", "online").await;
    let (_driver, client) = browser(dir.path()).await;

    client
        .goto(&format!("{}/fleet", fleet.http_base))
        .await
        .unwrap();
    sign_in(&client, "ana", "wrong").await;
    wait_text(&client, "error", "Wrong name or password").await;
    sign_in(&client, "ana", "ana-pw").await;
    wait_text(&client, "kiosk-k1", "online").await;
    wait_text(&client, "kiosk-k1", "receipt").await;

    // Live from the event stream: offline, then online again.
    agent.shutdown().await;
    wait_text(&client, "kiosk-k1", "offline").await;
    let agent = fleet.start_agent("k1", printer.addr()).await;
    wait_text(&client, "kiosk-k1", "online").await;

    // The offline filter shows k2 (never connected) and not k1.
    click(&client, "button[data-filter='offline']").await;
    wait_text(&client, "kiosks", "k2").await;
    assert!(
        client.find(Locator::Id("kiosk-k1")).await.is_err(),
        "k1 is online: not under Offline"
    );
    click(&client, "button[data-filter='all']").await;
    wait_text(&client, "kiosk-k1", "Test print").await;

    if let Ok(path) = std::env::var("KIOSK_FLEET_SCREENSHOT") {
        let png = client.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
    }
    click(
        &client,
        "button.test-print[data-kiosk='k1'][data-printer='receipt']",
    )
    .await;
    wait_text(&client, "note", "Test print").await;
    let jobs = printer
        .wait_for_jobs(1, WAIT)
        .await
        .expect("the test print reached the printer");
    assert_eq!(kiosk_e2e::count_with(&jobs, "Test print"), 1);

    // A kiosk's page: its jobs, with cancel for a queued one (k2 is
    // offline, so its job waits) and reprint for a failed one.
    let failed = fleet
        .create_job(
            "k1",
            serde_json::json!({"printer": "nope", "document": {"kind": "text", "text": "x"}}),
        )
        .await;
    fleet.wait_job(&failed, "failed").await;
    client
        .goto(&format!("{}/fleet#kiosk/k1", fleet.http_base))
        .await
        .unwrap();
    wait_text(&client, &format!("job-{failed}"), "failed").await;
    click(&client, &format!("button.reprint[data-job='{failed}']")).await;
    wait_text(&client, "note", "Reprint:").await;
    let (_, reprints) = fleet.get("/v1/print-jobs?kiosk_id=k1&printer=nope").await;
    assert_eq!(reprints["jobs"].as_array().unwrap().len(), 2, "{reprints}");
    let queued = fleet.create_job("k2", kiosk_e2e::text_job("waits")).await;
    client
        .goto(&format!("{}/fleet#kiosk/k2", fleet.http_base))
        .await
        .unwrap();
    wait_text(&client, &format!("job-{queued}"), "queued").await;
    click(&client, &format!("button.cancel[data-job='{queued}']")).await;
    wait_text(&client, &format!("job-{queued}"), "cancelled").await;
    assert_eq!(fleet.job(&queued).await["state"], "cancelled");
    client.close().await.unwrap();
    agent.shutdown().await;
}
