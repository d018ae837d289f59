//! `GET /v1/kiosks` and `GET /v1/kiosks/{kiosk_id}`.

use axum::Json;
use axum::extract::{Path, State};
use kiosk_schemas::KioskId;
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;
use crate::fleet::KioskView;

/// `GET /v1/kiosks` → `200 {"kiosks": [KioskView, ...]}`, ordered by id.
///
/// # Errors
/// 401 without a valid API key; 500 on store failure.
pub async fn list(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let kiosks = app.fleet.list()?;
    Ok(Json(json!({ "kiosks": kiosks })))
}

/// `GET /v1/kiosks/{kiosk_id}` → `200 KioskView`:
/// `{"kiosk_id","status":"online|offline|unknown","last_seen","agent_version","printers":{..},"pending_jobs"}`.
///
/// # Errors
/// 404 `kiosk_not_found`; 401; 500.
pub async fn get(
    State(app): State<AppState>,
    Path(kiosk_id): Path<String>,
) -> Result<Json<KioskView>, ApiError> {
    let id =
        KioskId::new(kiosk_id.as_str()).map_err(|_| ApiError::KioskNotFound(kiosk_id.clone()))?;
    app.fleet
        .view(&id)?
        .map(Json)
        .ok_or(ApiError::KioskNotFound(kiosk_id))
}
