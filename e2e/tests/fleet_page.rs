//! The fleet page's door, without a browser: no session no data, a wrong
//! password no session, and a change without the session's CSRF token or
//! from another site refused.

use kiosk_e2e::{FleetOptions, TestFleet};
use kiosk_schemas::Secret;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

async fn fleet() -> (TestFleet, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let operators = dir.path().join("operators");
    kiosk_gateway::operators::add(&operators, "ana", &Secret::new("ana-pw")).unwrap();
    let mut opts = FleetOptions::new(&["k1"]);
    opts.http_extra = format!("operators = \"{}\"", operators.display());
    (TestFleet::start_with(opts).await, dir)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in; returns the cookie header value and the page's CSRF token.
async fn sign_in(fleet: &TestFleet, password: &str) -> Option<(String, String)> {
    let client = no_redirects();
    let resp = client
        .post(format!("{}/fleet/login", fleet.http_base))
        .form(&[("name", "ana"), ("password", password)])
        .send()
        .await
        .unwrap();
    if resp.status() != StatusCode::SEE_OTHER {
        return None;
    }
    assert_eq!(resp.headers()[LOCATION], "/fleet");
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = client
        .get(format!("{}/fleet", fleet.http_base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_owned();
    Some((cookie, csrf))
}

#[tokio::test]
async fn the_fleet_page_needs_a_session_and_refuses_forged_changes() {
    let (fleet, _dir) = fleet().await;
    let client = no_redirects();
    let url = |p: &str| format!("{}{p}", fleet.http_base);

    // No session: the sign-in form, and no data.
    let page = client.get(url("/fleet")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("action=\"/fleet/login\"")
    );
    let r = client.get(url("/v1/kiosks")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .get(url("/v1/kiosks"))
        .header(COOKIE, "kiosk_fleet=made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    assert!(
        sign_in(&fleet, "wrong").await.is_none(),
        "a wrong password opens nothing"
    );
    let (cookie, csrf) = sign_in(&fleet, "ana-pw").await.expect("signed in");

    // Reading with the session works.
    let r = client
        .get(url("/v1/kiosks"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let test_print = url("/v1/kiosks/k1/printers/receipt/test-print");
    // A forged change: the cookie alone, as a cross-site form would send it
    // (were it not SameSite=Strict), or the token with another Origin.
    let r = client
        .post(&test_print)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    let r = client
        .post(&test_print)
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client
        .post(&test_print)
        .header(COOKIE, &cookie)
        .header("x-csrf-token", "not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The real thing.
    let r = client
        .post(&test_print)
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job: serde_json::Value = r.json().await.unwrap();
    assert!(
        job["document"]["text"]
            .as_str()
            .unwrap()
            .contains("asked by operator:ana"),
        "{job}"
    );

    // Sign-out needs the token too, and ends the session.
    let r = client
        .post(url("/fleet/logout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client
        .post(url("/fleet/logout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = client
        .get(url("/v1/kiosks"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
