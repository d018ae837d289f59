//! The HTTP API, grouped by resource.
//!
//! | route | auth | |
//! |---|---|---|
//! | `POST /v1/kiosks/{kiosk_id}/print-jobs` | API key | [`print_jobs::create`] |
//! | `GET /v1/print-jobs/{job_id}` | API key | [`print_jobs::get`] |
//! | `POST /v1/print-jobs/{job_id}/reprint` | API key | [`print_jobs::reprint`] |
//! | `GET /v1/kiosks` | API key | [`kiosks::list`] |
//! | `GET /v1/kiosks/{kiosk_id}` | API key | [`kiosks::get`] |
//! | `GET /healthz` | none | [`health::healthz`] |
//! | `GET /metrics` | none | [`health::metrics`] (Prometheus text) |

pub mod health;
pub mod kiosks;
pub mod print_jobs;

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
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// MQTT session state.
    pub link: MqttLink,
    /// Configuration.
    pub config: Arc<GatewayConfig>,
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
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    let name = app
        .api_keys
        .authenticate(presented)
        .ok_or(ApiError::Unauthorized)?;
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
    let v1 = Router::new()
        .route("/kiosks", get(kiosks::list))
        .route("/kiosks/{kiosk_id}", get(kiosks::get))
        .route("/kiosks/{kiosk_id}/print-jobs", post(print_jobs::create))
        .route("/print-jobs/{job_id}", get(print_jobs::get))
        .route("/print-jobs/{job_id}/reprint", post(print_jobs::reprint))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .nest("/v1", v1)
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
