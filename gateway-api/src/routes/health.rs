//! `GET /healthz` and `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// `GET /healthz`: `200 {"status":"ok","mqtt":"connected","broker":"host:port"}`
/// while the gateway's MQTT sessions are up, `503
/// {"status":"degraded","mqtt":"disconnected","broker":...}` otherwise
/// (jobs are still accepted and stored then, and delivered later).
/// `broker` is the broker (cluster node) the gateway's consumer session is
/// on, or was last on, as it dialed it; `null` before the first connection.
/// With the embedded broker it is the broker's internal listener.
pub async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    let broker = app.link.broker();
    if app.link.is_connected() {
        (
            StatusCode::OK,
            Json(json!({"status": "ok", "mqtt": "connected", "broker": broker})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "mqtt": "disconnected", "broker": broker})),
        )
    }
}

/// `GET /metrics`: Prometheus text exposition (see [`crate::metrics`]).
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let counts = app.store.counts();
    let text = app.metrics.render(
        |s| counts.get(s),
        app.fleet.online_count(),
        app.link.is_connected(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
