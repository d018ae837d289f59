//! The customer's payment page in a real browser: headless Chromium (Debian's
//! `chromium` + `chromium-driver`, installed by scripts/test.sh) driven over
//! WebDriver.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use kiosk_e2e::{TestFleet, WAIT};
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

    let port = kiosk_testkit::free_port().unwrap();
    let _driver = tokio::process::Command::new("chromedriver")
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
    let profile = dir.path().join("chromium-profile");
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
