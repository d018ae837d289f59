//! The HTTP API, grouped by resource.
//!
//! | route | auth | |
//! |---|---|---|
//! | `POST /v1/kiosks/{kiosk_id}/print-jobs` | API key | [`print_jobs::create`] |
//! | `GET /v1/kiosks/{kiosk_id}/print-jobs` | API key | [`print_jobs::list_for_kiosk`] |
//! | `GET /v1/print-jobs` | API key | [`print_jobs::list`] |
//! | `GET /v1/print-jobs/{job_id}` | API key | [`print_jobs::get`] |
//! | `POST /v1/print-jobs/{job_id}/reprint` | API key | [`print_jobs::reprint`] |
//! | `POST /v1/print-jobs/{job_id}/cancel` | API key | [`print_jobs::cancel`] |
//! | `GET /v1/kiosks` | API key | [`kiosks::list`] |
//! | `GET /v1/kiosks/{kiosk_id}` | API key | [`kiosks::get`] |
//! | `POST /v1/cash-sessions` | API key | [`cash_sessions::create`] |
//! | `GET /v1/cash-sessions/{session_id}` | API key | [`cash_sessions::get`] |
//! | `POST /v1/cash-sessions/{session_id}/cancel` | API key | [`cash_sessions::cancel`] |
//! | `GET /v1/cash-sessions/{session_id}/events` | API key or view token | [`cash_sessions::events`] (SSE) |
//! | `GET /v1/kiosks/{kiosk_id}/unassigned-credits` | API key | [`unassigned_credits::list`] |
//! | `POST /v1/kiosks/{kiosk_id}/unassigned-credits/{credit_id}/assign` | API key | [`unassigned_credits::assign`] |
//! | `POST /v1/kiosks/{kiosk_id}/unassigned-credits/{credit_id}/refund` | API key | [`unassigned_credits::refund`] |
//! | `GET /pay/{session_id}?token=` | view token | [`pay::page`] |
//! | `GET /healthz` | none | [`health::healthz`] |
//! | `GET /metrics` | none | [`health::metrics`] (Prometheus text) |

pub mod cash_sessions;
pub mod events;
pub mod fleet_page;
pub mod health;
pub mod kiosks;
pub mod pay;
pub mod print_jobs;
#[cfg(test)]
mod tests;
pub mod unassigned_credits;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::trace::TraceLayer;

use crate::api_keys::ApiKeys;
use crate::config::GatewayConfig;
use crate::delivery::Delivery;
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::mqtt::MqttLink;
use crate::rate_limit::RateLimits;
use crate::store::Store;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// The parts of [`AppState`].
pub struct AppInner {
    /// Durable store.
    pub store: Store,
    /// Kiosk registry.
    pub fleet: Arc<Fleet>,
    /// Publishing jobs.
    pub delivery: Arc<Delivery>,
    /// API keys.
    pub api_keys: ApiKeys,
    /// Each API key's request rate; `None` with
    /// `http.rate_limit_per_second = 0`.
    pub rate_limits: Option<RateLimits>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// MQTT session state.
    pub link: MqttLink,
    /// Configuration.
    pub config: Arc<GatewayConfig>,
    /// Cash sessions and credits.
    pub cash: crate::cash::store::CashStore,
    /// Live session events.
    pub live: Arc<crate::cash::live::Live>,
    /// View tokens of sessions.
    pub tokens: crate::cash::token::ViewTokens,
    /// Cancelled on shutdown (ends event streams).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The HTTP server's limits (event streams take a place).
    pub http_limits: Arc<crate::http_server::Limits>,
    /// Operators of the fleet page and their sessions.
    pub operators: Arc<crate::operators::Operators>,
}

impl AppState {
    /// Wraps the parts.
    pub fn new(inner: AppInner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Name of the API key that authenticated the request (for logs and job
/// origin); never the key itself.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// Lets a request through with a valid API key that is within its rate
/// (`http.rate_limit_per_second`): `401 unauthorized` without one, `429
/// rate_limited` with `Retry-After` beyond the rate, counted by key name in
/// `kiosk_http_rate_limited_total{api_key}`. The key is authenticated
/// first, so unknown keys never get a bucket.
async fn require_api_key(
    State(app): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let name = match presented {
        Some(key) => app
            .api_keys
            .authenticate(key)
            .ok_or(ApiError::Unauthorized)?,
        // The fleet page: an operator's session cookie instead of a key,
        // and for a change the session's CSRF token.
        None => {
            let session = fleet_page::session(&app, req.headers()).ok_or(ApiError::Unauthorized)?;
            let csrf = req
                .headers()
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok());
            if !fleet_page::is_safe(req.method())
                && !fleet_page::same_site(&session, req.headers(), csrf)
            {
                return Err(ApiError::Forbidden(
                    "a change from the fleet page needs its X-CSRF-Token".to_owned(),
                ));
            }
            format!("operator:{}", session.name)
        }
    };
    if let Some(limits) = &app.rate_limits
        && let Err(limited) = limits.admit(&name, tokio::time::Instant::now())
    {
        app.metrics.http_rate_limited(&name);
        return Err(ApiError::RateLimited {
            retry_after: limited.retry_after_secs(),
        });
    }
    req.extensions_mut().insert(Caller(name));
    Ok(next.run(req).await)
}

/// Logs and counts refusals that happen before a handler runs: bodies over
/// `http.max_body_bytes` (413) and missing or unknown API keys (401).
async fn count_refusals(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = next.run(req).await;
    let reason = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNAUTHORIZED => "unauthorized",
        _ => return response,
    };
    app.metrics.http_refused(reason);
    tracing::warn!(%method, path, reason, "HTTP request refused");
    response
}

async fn not_found() -> Response {
    let body =
        Json(serde_json::json!({"error": {"code": "not_found", "message": "no such route"}}));
    (StatusCode::NOT_FOUND, body).into_response()
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.http.max_body_bytes;
    let with_api_key = Router::new()
        .route("/v1/kiosks", get(kiosks::list))
        .route("/v1/kiosks/{kiosk_id}", get(kiosks::get))
        .route(
            "/v1/kiosks/{kiosk_id}/print-jobs",
            post(print_jobs::create).get(print_jobs::list_for_kiosk),
        )
        .route(
            "/v1/kiosks/{kiosk_id}/unassigned-credits",
            get(unassigned_credits::list),
        )
        .route(
            "/v1/kiosks/{kiosk_id}/unassigned-credits/{credit_id}/assign",
            post(unassigned_credits::assign),
        )
        .route(
            "/v1/kiosks/{kiosk_id}/unassigned-credits/{credit_id}/refund",
            post(unassigned_credits::refund),
        )
        .route("/v1/print-jobs", get(print_jobs::list))
        .route("/v1/print-jobs/{job_id}", get(print_jobs::get))
        .route("/v1/print-jobs/{job_id}/reprint", post(print_jobs::reprint))
        .route("/v1/print-jobs/{job_id}/cancel", post(print_jobs::cancel))
        .route("/v1/events", get(events::stream))
        .route(
            "/v1/kiosks/{kiosk_id}/printers/{printer}/test-print",
            post(print_jobs::test_print),
        )
        .route("/v1/cash-sessions", post(cash_sessions::create))
        .route("/v1/cash-sessions/{session_id}", get(cash_sessions::get))
        .route(
            "/v1/cash-sessions/{session_id}/cancel",
            post(cash_sessions::cancel),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .merge(with_api_key)
        // API key or the session's view token, checked by the handler.
        .route(
            "/v1/cash-sessions/{session_id}/events",
            get(cash_sessions::events),
        )
        .route("/pay/static/pay.js", get(pay::script))
        .route("/pay/{session_id}", get(pay::page))
        .route("/fleet", get(fleet_page::page))
        .route("/fleet/login", post(fleet_page::login))
        .route("/fleet/logout", post(fleet_page::logout))
        .route("/fleet/static/fleet.js", get(fleet_page::script))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_refusals,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
