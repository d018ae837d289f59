//! `/fleet`: the operators' page, plain HTML and JavaScript served by the
//! gateway (no CDN, no build step). Sign-in with a name and password from
//! `http.operators` ([`crate::operators`]) opens a session cookie; the page
//! then calls the gateway's own API (`/v1/kiosks`, `/v1/events`, the test
//! print) with that cookie instead of an API key. State-changing requests
//! must carry the session's CSRF token (`X-CSRF-Token`, or the form field
//! `csrf`) and, when the browser sends one, an `Origin` of this host; the
//! cookie is `SameSite=Strict` as well.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use kiosk_schemas::Secret;
use serde::Deserialize;

use super::AppState;
use super::pay::escape;
use crate::operators::{COOKIE, OperatorSession, SESSION_TTL, SignIn};

const FLEET: &str = include_str!("fleet/fleet.html");
const LOGIN: &str = include_str!("fleet/login.html");
const SCRIPT: &str = include_str!("fleet/fleet.js");
/// Scripts and connections only from the gateway itself.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// The session token of the request's `kiosk_fleet` cookie, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The operator session of the request's cookie.
pub fn session(app: &AppState, headers: &HeaderMap) -> Option<OperatorSession> {
    let token = cookie_token(headers)?;
    app.operators.session(token, tokio::time::Instant::now())
}

/// True when a state-changing request from `session` may go on: it carries
/// the session's CSRF token (`presented`), and its `Origin`, when the
/// browser sends one, is this host.
pub fn same_site(session: &OperatorSession, headers: &HeaderMap, presented: Option<&str>) -> bool {
    let token_ok = presented.is_some_and(|t| {
        t.len() == session.csrf.len()
            && t.bytes()
                .zip(session.csrf.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    token_ok && origin_is_host(headers)
}

/// True when the request has no `Origin` (not a cross-site browser
/// request) or one naming this host.
fn origin_is_host(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

/// True for methods that change nothing.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(body),
    )
        .into_response()
}

fn login_page(status: StatusCode, error: &str) -> Response {
    html(status, LOGIN.replace("{{ERROR}}", &escape(error)))
}

fn cookie(app: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if app.config.http.tls_cert.is_some() {
        "; Secure"
    } else {
        ""
    };
    let text =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `GET /fleet`: the fleet for a signed-in operator, else the sign-in form.
pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if !app.operators.enabled() {
        return login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Nobody can sign in: set http.operators and run `kiosk-gateway operator add NAME`.",
        );
    }
    match session(&app, &headers) {
        Some(s) => html(
            StatusCode::OK,
            FLEET
                .replace("{{CSRF}}", &escape(&s.csrf))
                .replace("{{OPERATOR}}", &escape(&s.name)),
        ),
        None => login_page(StatusCode::OK, ""),
    }
}

/// `GET /fleet/static/fleet.js`.
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: Secret,
}

/// `POST /fleet/login` (form `name`, `password`): `303` to `/fleet` with
/// the session cookie; `401` with the form again for a wrong name or
/// password; `429` after too many failures from the address.
pub async fn login(
    State(app): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let from = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.0.ip());
    if !origin_is_host(&headers) {
        return login_page(StatusCode::FORBIDDEN, "Sign in from this page.");
    }
    let operators = app.operators.clone();
    let name = form.name.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        operators.sign_in(from, &name, &form.password, tokio::time::Instant::now())
    })
    .await;
    match outcome {
        Ok(Ok(SignIn::Welcome { token })) => {
            tracing::info!(operator = %form.name, "operator signed in");
            let mut resp = Redirect::to("/fleet").into_response();
            *resp.status_mut() = StatusCode::SEE_OTHER;
            resp.headers_mut().insert(
                header::SET_COOKIE,
                cookie(&app, &token, SESSION_TTL.as_secs()),
            );
            resp
        }
        Ok(Ok(SignIn::Refused)) => {
            tracing::warn!(operator = %form.name, address = %from, "operator sign-in refused");
            login_page(StatusCode::UNAUTHORIZED, "Wrong name or password.")
        }
        Ok(Ok(SignIn::Throttled)) => login_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins from here; wait a minute.",
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "operators file unusable");
            login_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in is not possible now.",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in task failed");
            login_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in is not possible now.",
            )
        }
    }
}

/// The sign-out form.
#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /fleet/logout` (form `csrf`): ends the session, `303` to `/fleet`;
/// `403` without the session's CSRF token.
pub async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let Some(s) = session(&app, &headers) else {
        return Redirect::to("/fleet").into_response();
    };
    if !same_site(&s, &headers, Some(&form.csrf)) {
        return login_page(StatusCode::FORBIDDEN, "Sign out from this page.");
    }
    if let Some(token) = cookie_token(&headers) {
        app.operators.sign_out(token);
    }
    let mut resp = Redirect::to("/fleet").into_response();
    *resp.status_mut() = StatusCode::SEE_OTHER;
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&app, "", 0));
    resp
}
