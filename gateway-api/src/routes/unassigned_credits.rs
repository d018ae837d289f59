//! Unassigned credits of a kiosk: list them, assign one to a session, or
//! mark one refunded. Each resolution is durable (flushed before the
//! answer), set once, idempotent, shown in the listing and an event
//! (webhook `cash_credit.assigned` / `cash_credit.refunded`; an assignment
//! is also a `credit`/`late_credit` event on the session's stream).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use kiosk_schemas::KioskId;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::print_jobs::{body_bytes, idempotency_key, parse_json};
use super::{AppState, Caller};
use crate::cash::live::LiveEvent;
use crate::cash::resend::{self, send_controls};
use crate::cash::store::{ResolveOutcome, ResolveRequest};
use crate::cash::{CreditEffect, CreditView, ResolutionAction, ResolveRefusal, SessionView};
use crate::error::ApiError;

/// Longest refund reason, in bytes.
const MAX_REASON: usize = 500;

/// Body of `.../assign`: `{"session_id":"01J9..."}`.
#[derive(Debug, Deserialize)]
pub struct Assign {
    /// The session to apply the credit to (same kiosk, same currency).
    pub session_id: String,
}

/// Body of `.../refund`: `{"reason":"given back at the counter"}`.
#[derive(Debug, Deserialize)]
pub struct Refund {
    /// Why, for the books (1 to 500 bytes).
    pub reason: String,
}

fn known_kiosk(app: &AppState, kiosk_id: &str) -> Result<KioskId, ApiError> {
    let id = KioskId::new(kiosk_id).map_err(|_| ApiError::KioskNotFound(kiosk_id.to_owned()))?;
    if !app.fleet.is_known(&id)? {
        return Err(ApiError::KioskNotFound(kiosk_id.to_owned()));
    }
    Ok(id)
}

/// `GET /v1/kiosks/{kiosk_id}/unassigned-credits` → `200 {"credits":
/// [...]}`: every credit of the kiosk that arrived unassigned, oldest
/// first, resolved or not: `credit_id` (`<outbox>-<seq>`), `kiosk_id`,
/// `outbox`, `seq`, `kind`, `amount`, `currency`, `at`, `received_at`,
/// `board_boot_id`, `board_seq`, `session_id` (where it counts now, after an
/// assignment), `taken_for` (the session the kiosk named), `unassigned_reason`
/// (`no_session`, `unknown_session`, `other_kiosk`, `currency_mismatch`,
/// `no_open_session`) and `resolution` (null, or `{action: "assigned",
/// session_id, at, by}` / `{action: "refunded", reason, at, by}`).
///
/// # Errors
/// 404 `kiosk_not_found`, 401.
pub async fn list(
    State(app): State<AppState>,
    Path(kiosk_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = known_kiosk(&app, &kiosk_id)?;
    let credits: Vec<CreditView> = app.cash.unassigned(&id)?.iter().map(Into::into).collect();
    Ok(Json(json!({"credits": credits})))
}

/// `POST /v1/kiosks/{kiosk_id}/unassigned-credits/{credit_id}/assign`, body
/// [`Assign`], optional `Idempotency-Key` → `200 {"credit": {...},
/// "session": {...}}`. Applies the credit to the session like any credit
/// (open: counts towards `amount_due` and may make it paid; paid: more
/// `change_due`; cancelling/cancelled: more `refund_due`). Repeating the
/// same assignment answers the same, changing nothing.
///
/// # Errors
/// 400 invalid body or key, 404 `kiosk_not_found`, `credit_not_found`,
/// `session_not_found`, 409 `credit_already_resolved` (assigned elsewhere
/// or refunded), 422 `session_of_other_kiosk`, `currency_mismatch`,
/// `idempotency_key_reused`, 401.
pub async fn assign(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((kiosk_id, credit_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body_bytes(body, app.config.http.max_body_bytes)?;
    let req: Assign = parse_json(&body)?;
    resolve(
        &app,
        &caller,
        &kiosk_id,
        &credit_id,
        &headers,
        &body,
        ResolutionAction::Assigned,
        Some(&req.session_id),
        None,
    )
    .await
}

/// `POST /v1/kiosks/{kiosk_id}/unassigned-credits/{credit_id}/refund`, body
/// [`Refund`], optional `Idempotency-Key` → `200 {"credit": {...}}` with
/// `resolution.action: "refunded"`: the money was given back outside any
/// session. Repeating it with the same reason answers the same.
///
/// # Errors
/// 400 invalid body or key, 404 `kiosk_not_found`, `credit_not_found`,
/// 409 `credit_already_resolved`, 422 `idempotency_key_reused`, 401.
pub async fn refund(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((kiosk_id, credit_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body_bytes(body, app.config.http.max_body_bytes)?;
    let req: Refund = parse_json(&body)?;
    if req.reason.trim().is_empty() || req.reason.len() > MAX_REASON {
        return Err(ApiError::InvalidRequest(format!(
            "reason must be 1 to {MAX_REASON} bytes"
        )));
    }
    resolve(
        &app,
        &caller,
        &kiosk_id,
        &credit_id,
        &headers,
        &body,
        ResolutionAction::Refunded,
        None,
        Some(&req.reason),
    )
    .await
}

fn answer(
    credit: &crate::cash::CreditRecord,
    session: Option<&crate::cash::SessionRecord>,
) -> Value {
    let mut v = json!({"credit": CreditView::from(credit)});
    if let Some(s) = session {
        v["session"] = serde_json::to_value(SessionView::from(s)).unwrap_or_default();
    }
    v
}

#[allow(clippy::too_many_arguments)]
async fn resolve(
    app: &AppState,
    caller: &Caller,
    kiosk_id: &str,
    credit_id: &str,
    headers: &HeaderMap,
    body: &[u8],
    action: ResolutionAction,
    session_id: Option<&str>,
    reason: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let kiosk = known_kiosk(app, kiosk_id)?;
    let key = idempotency_key(headers)?;
    // The key covers the route as well as the body: the same key on
    // another credit or action is a different request.
    let mut hash = Sha256::new();
    hash.update(format!("{action:?}\0{credit_id}\0").as_bytes());
    hash.update(body);
    let hash: [u8; 32] = hash.finalize().into();
    let outcome = app.cash.resolve(&ResolveRequest {
        kiosk: &kiosk,
        credit_id,
        action,
        session_id,
        reason,
        by: &caller.0,
        idempotency: key.as_deref().map(|k| (k, hash)),
    })?;
    match outcome {
        ResolveOutcome::Resolved {
            credit,
            applied,
            events,
        } => {
            let mut events: Vec<_> = events.iter().filter_map(LiveEvent::of).collect();
            if applied.is_some() {
                events.extend(resend::settle(&app.cash, &app.metrics, &kiosk));
            }
            app.cash.flush().await?;
            app.metrics.resolved(action);
            tracing::info!(kiosk = %kiosk, credit = credit_id, action = ?action,
                session = session_id.unwrap_or(""), by = %caller.0, "unassigned credit resolved");
            if let Some((s, _, CreditEffect::Paid)) = &applied {
                send_controls(&app.cash, &app.link, &s.kiosk_id, false);
            }
            for (id, ev) in events {
                app.live.publish(&id, ev);
            }
            let session = match &applied {
                Some((s, _, _)) => app.cash.session(&s.session_id)?,
                None => None,
            };
            Ok(Json(answer(&credit, session.as_ref())))
        }
        ResolveOutcome::Replayed { credit, session } => Ok(Json(answer(&credit, session.as_ref()))),
        ResolveOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused(key.unwrap_or_default())),
        ResolveOutcome::CreditMissing => Err(ApiError::CreditNotFound(credit_id.to_owned())),
        ResolveOutcome::SessionMissing => Err(ApiError::SessionNotFound(
            session_id.unwrap_or_default().to_owned(),
        )),
        ResolveOutcome::Refused(why) => Err(match why {
            ResolveRefusal::NotUnassigned => ApiError::CreditNotFound(credit_id.to_owned()),
            ResolveRefusal::AlreadyResolved(prev) => ApiError::CreditAlreadyResolved(format!(
                "credit {credit_id} was already {} ({}) by {} at {}",
                match prev.action {
                    ResolutionAction::Assigned => "assigned",
                    ResolutionAction::Refunded => "refunded",
                },
                prev.session_id.or(prev.reason).unwrap_or_default(),
                prev.by,
                prev.at.to_rfc3339(),
            )),
            ResolveRefusal::OtherKiosk => ApiError::SessionOfOtherKiosk(format!(
                "session {} does not belong to kiosk {kiosk}",
                session_id.unwrap_or_default()
            )),
            ResolveRefusal::CurrencyMismatch => ApiError::CurrencyMismatch(format!(
                "credit {credit_id} and session {} are in different currencies",
                session_id.unwrap_or_default()
            )),
        }),
    }
}
