//! `GET /pay/{session_id}?token=<view token>`: the customer's payment
//! screen, plain HTML and JavaScript served by the gateway. It shows
//! "12.50 EUR of 20.00 EUR inserted", follows the session's event stream
//! (opened with the same view token, never an API key), and shows paid,
//! cancelling (refund so far) or cancelled with the change or refund due,
//! updated by late credits until the session is final.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::cash_sessions::TokenQuery;
use crate::cash::SessionView;

const PAGE: &str = include_str!("pay/pay.html");
const SCRIPT: &str = include_str!("pay/pay.js");
/// Scripts and connections only from the gateway itself.
const CSP: &str =
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'";

/// `s` safe inside HTML text and attribute values.
pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn money(minor: i64, exponent: u32, currency: &str) -> String {
    let digits = format!(
        "{:0>width$}",
        minor.unsigned_abs(),
        width = exponent as usize + 1
    );
    let (int, frac) = digits.split_at(digits.len() - exponent as usize);
    let sign = if minor < 0 { "-" } else { "" };
    if exponent == 0 {
        format!("{sign}{int} {currency}")
    } else {
        format!("{sign}{int}.{frac} {currency}")
    }
}

fn unauthorized() -> Response {
    let page = "<!doctype html><meta charset=\"utf-8\"><title>Payment</title>\
                <p>This payment link is not valid.</p>";
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_SECURITY_POLICY, CSP)],
        Html(page),
    )
        .into_response()
}

/// The page. `401` with no details for a missing or wrong token (another
/// session's token, or the backend's API key, opens nothing).
pub async fn page(
    State(app): State<AppState>,
    Path(session_id): Path<String>,
    Query(query): Query<TokenQuery>,
) -> Response {
    let Some(token) = query.token.as_deref() else {
        return unauthorized();
    };
    if !app.tokens.verify(&session_id, token) {
        return unauthorized();
    }
    let session = match app.cash.session(&session_id) {
        Ok(Some(s)) => s,
        Ok(None) => return unauthorized(),
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    let view = SessionView::from(&session);
    let amount = format!(
        "{} of {} inserted",
        money(view.amount_inserted, view.exponent, view.currency.as_str()),
        money(view.amount_due, view.exponent, view.currency.as_str())
    );
    let html = PAGE
        .replace("{{SESSION_ID}}", &escape(&session_id))
        .replace("{{TOKEN}}", &escape(token))
        .replace("{{ORDER_ID}}", &escape(&session.order_id))
        .replace("{{AMOUNT}}", &escape(&amount));
    (
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}

/// `GET /pay/static/pay.js`.
pub async fn script(_headers: HeaderMap) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_money_like_the_script() {
        assert_eq!(money(1250, 2, "EUR"), "12.50 EUR");
        assert_eq!(money(5, 2, "EUR"), "0.05 EUR");
        assert_eq!(money(0, 2, "EUR"), "0.00 EUR");
        assert_eq!(money(1500, 0, "JPY"), "1500 JPY");
        assert_eq!(money(-250, 2, "EUR"), "-2.50 EUR");
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
