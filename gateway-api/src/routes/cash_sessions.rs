//! Cash payment sessions: open, read, cancel (two-phase), live events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt as _};
use kiosk_schemas::{Currency, KioskId};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;

use super::print_jobs::{body_bytes, idempotency_key, parse_json};
use super::{AppState, Caller};
use crate::cash::event::CashEventKind;
use crate::cash::live::LiveEvent;
use crate::cash::resend::{self, send_controls};
use crate::cash::store::{CancelOutcome, OpenOutcome};
use crate::cash::{SessionRecord, SessionView};
use crate::error::ApiError;

/// Body of `POST /v1/cash-sessions`.
///
/// ```json
/// {"kiosk_id":"demo-1","order_id":"1042","amount_due":2000,"currency":"EUR"}
/// ```
#[derive(Debug, Deserialize)]
pub struct OpenSession {
    /// Kiosk whose acceptor takes the money.
    pub kiosk_id: KioskId,
    /// The backend's order reference (1 to 128 characters).
    pub order_id: String,
    /// Amount to pay, in minor units (> 0).
    pub amount_due: i64,
    /// ISO 4217 code; must be the kiosk acceptor's currency.
    pub currency: Currency,
}

/// Most a session may ask for, in minor units (10,000,000 = 100,000.00 EUR).
const MAX_AMOUNT_DUE: i64 = 10_000_000;

fn view_with_token(app: &AppState, s: &SessionRecord) -> Value {
    let token = app.tokens.token(&s.session_id);
    let mut v = serde_json::to_value(SessionView::from(s)).unwrap_or_default();
    v["pay_url"] = json!(format!("/pay/{}?token={token}", s.session_id));
    v["view_token"] = json!(token);
    v
}

/// `POST /v1/cash-sessions`, body [`OpenSession`], optional
/// `Idempotency-Key` → `201` the session with `state: "open"`,
/// `amount_inserted: 0`, its read-only `view_token` and `pay_url`. The
/// session is flushed to disk first; then `enable` goes to the kiosk on
/// `kiosk/<id>/cash/control`.
///
/// Sessions of the kiosk that are `cancelling` or `paid` but not final
/// do not block a new one.
///
/// # Errors
/// 400 for an invalid body, 404 `kiosk_not_found`, 409 `conflict` when the
/// kiosk already has an open session, 422 for a reused Idempotency-Key, 401.
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body_bytes(body, app.config.http.max_body_bytes)?;
    let key = idempotency_key(&headers)?;
    let req: OpenSession = parse_json(&body)?;
    if !app.fleet.is_known(&req.kiosk_id)? {
        return Err(ApiError::KioskNotFound(req.kiosk_id.to_string()));
    }
    if req.amount_due <= 0 || req.amount_due > MAX_AMOUNT_DUE {
        return Err(ApiError::InvalidRequest(format!(
            "amount_due must be between 1 and {MAX_AMOUNT_DUE} minor units"
        )));
    }
    if req.order_id.is_empty() || req.order_id.len() > 128 {
        return Err(ApiError::InvalidRequest(
            "order_id must be 1 to 128 characters".to_owned(),
        ));
    }
    let session = SessionRecord::open(
        ulid::Ulid::new().to_string(),
        req.kiosk_id.clone(),
        req.order_id,
        req.amount_due,
        req.currency,
        caller.0,
        chrono::Utc::now(),
    );
    let hash: [u8; 32] = Sha256::digest(&body).into();
    let (cash, closure_key) = (app.cash.clone(), key.clone());
    let opened = kiosk_store::unblocked(move || {
        cash.open_session(session, closure_key.as_deref().map(|k| (k, hash)))
    })
    .await?;
    match opened {
        OpenOutcome::Opened(s) => {
            app.cash.flush().await?;
            tracing::info!(session = %s.session_id, kiosk = %s.kiosk_id, amount_due = s.amount_due,
                currency = %s.currency, "cash session opened");
            send_controls(&app.cash, &app.link, &s.kiosk_id, false);
            Ok((StatusCode::CREATED, Json(view_with_token(&app, &s))))
        }
        OpenOutcome::Replayed(s) => Ok((StatusCode::CREATED, Json(view_with_token(&app, &s)))),
        OpenOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused(key.unwrap_or_default())),
        OpenOutcome::Busy(id) => Err(ApiError::Conflict(format!(
            "kiosk {} already has an open session {id}; cancel it first",
            req.kiosk_id
        ))),
    }
}

fn load(app: &AppState, session_id: &str) -> Result<SessionRecord, ApiError> {
    app.cash
        .session(session_id)?
        .ok_or_else(|| ApiError::SessionNotFound(session_id.to_owned()))
}

/// `GET /v1/cash-sessions/{session_id}` → `200` the session: state
/// (`open`, `paid`, `cancelling`, `cancelled`), `final` (totals can no
/// longer change), amounts (`amount_due`, `amount_inserted`, `remaining`,
/// `change_due` when paid, `refund_due` when cancelling or cancelled — so
/// far until `final`; minor units), every credit with `outbox`, `seq`,
/// `kind`, `amount`, `at` and `origin` (`kiosk`, `late`, `assigned`),
/// `closed_at`, `settled_at` and the kiosk's `confirmation`
/// (`{outbox, last_seq, at}` or null).
///
/// # Errors
/// 404 `session_not_found`, 401.
pub async fn get(
    State(app): State<AppState>,
    Path(session_id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json((&load(&app, &session_id)?).into()))
}

/// `POST /v1/cash-sessions/{session_id}/cancel` → `202` the session,
/// `cancelling`, with `refund_due` so far; `disable(S)` goes to the kiosk.
/// The session becomes `cancelled` (final `refund_due`, webhook
/// `cash_session.cancelled`) once the kiosk confirmed on `cash/state` and
/// every credit up to its `last_seq` arrived — at once, answering
/// `cancelled`, when that is already the case. Repeating the cancel of a
/// `cancelling` session answers `202` again and changes nothing.
///
/// # Errors
/// 404 `session_not_found`, 409 `conflict` when the session is paid or
/// cancelled, 401.
pub async fn cancel(
    State(app): State<AppState>,
    Path(session_id): Path<String>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    let cash = app.cash.clone();
    let id = session_id.clone();
    match kiosk_store::unblocked(move || cash.cancel(&id)).await? {
        CancelOutcome::Cancelling(s) => {
            let mut events = vec![(
                s.session_id.clone(),
                LiveEvent::new(CashEventKind::Cancelling, &s),
            )];
            events.extend(resend::settle(&app.cash, &app.metrics, &s.kiosk_id));
            app.cash.flush().await?;
            tracing::info!(session = %s.session_id, refund_due = s.amount_inserted, "cash session cancelling");
            send_controls(&app.cash, &app.link, &s.kiosk_id, false);
            for (id, ev) in events {
                app.live.publish(&id, ev);
            }
            let now = load(&app, &session_id)?;
            Ok((StatusCode::ACCEPTED, Json((&now).into())))
        }
        CancelOutcome::AlreadyCancelling(s) => Ok((StatusCode::ACCEPTED, Json((&s).into()))),
        CancelOutcome::Refused(s) => Err(ApiError::Conflict(format!(
            "session {} is {}, not open",
            s.session_id,
            s.state.as_str()
        ))),
        CancelOutcome::Missing => Err(ApiError::SessionNotFound(session_id)),
    }
}

/// Query of the event stream and the pay page.
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    /// The session's view token.
    pub token: Option<String>,
}

/// Accepts the backend's API key (Bearer) or the session's view token
/// (`?token=` or Bearer).
pub(super) fn authorize(
    app: &AppState,
    session_id: &str,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> Result<(), ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(b) = bearer
        && (app.api_keys.authenticate(b).is_some() || app.tokens.verify(session_id, b))
    {
        return Ok(());
    }
    if let Some(t) = &query.token
        && app.tokens.verify(session_id, t)
    {
        return Ok(());
    }
    Err(ApiError::Unauthorized)
}

fn sse(event: &LiveEvent) -> Event {
    Event::default()
        .event(event.name())
        .data(serde_json::to_string(event).unwrap_or_default())
}

/// `GET /v1/cash-sessions/{session_id}/events` (API key, or the session's
/// view token as `?token=` or Bearer): Server-Sent Events. First `session`
/// with the current state (followed by `paid`, `cancelling` or `cancelled`
/// when the session is in that state, and `settled` for a final paid
/// one), then `credit`, `late_credit`, `paid`, `cancelling`, `cancelled`
/// and `settled` as they happen; each carries `{"session": {...as GET shows
/// it...}, "credit": {...}}` (`credit` only for `credit` and
/// `late_credit`). The stream ends once the session is final: after
/// `cancelled` or `settled`.
///
/// # Errors
/// 401 without a valid key or token (the session's existence is not
/// revealed), 404 for an unknown session with a valid API key, 503
/// `too_many_streams` while `http.max_sse_streams` streams are open.
pub async fn events(
    State(app): State<AppState>,
    Path(session_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    authorize(&app, &session_id, &headers, &query)?;
    let permit = app.http_limits.open_stream()?;
    // Subscribe before reading, so nothing falls between the two.
    let rx = app.live.subscribe(&session_id);
    let session = load(&app, &session_id)?;
    let first = LiveEvent::opening(&session);
    let closed = session.is_final();
    let cash = app.cash.clone();
    let id = session_id.clone();
    let live = futures::stream::unfold((rx, closed), move |(mut rx, done)| {
        let cash = cash.clone();
        let id = id.clone();
        async move {
            if done {
                return None;
            }
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let last = ev.is_final();
                        return Some((ev, (rx, last)));
                    }
                    // Too slow: send the current state instead of the lost events.
                    Err(RecvError::Lagged(_)) => {
                        if let Ok(Some(s)) = cash.session(&id) {
                            let last = s.is_final();
                            return Some((LiveEvent::snapshot(&s), (rx, last)));
                        }
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    let stream = futures::stream::iter(first)
        .chain(live)
        .map(|ev| Ok(sse(&ev)))
        .take_until(app.shutdown.clone().cancelled_owned())
        // The stream holds its place in http.max_sse_streams until dropped.
        .inspect(move |_| {
            let _ = &permit;
        });
    // A comment at least every half of http.idle_timeout, so the server
    // does not take a quiet stream for an idle connection.
    let keep_alive = (app.config.http.idle_timeout / 2).min(Duration::from_secs(15));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
}
