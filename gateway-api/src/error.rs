//! HTTP errors: a stable JSON body, never internals.
//!
//! Every error answers `{"error": {"code": "...", "message": "..."}}` with
//! the status below; `code` is stable and meant for programs, `message` for
//! people (`not_cancellable` adds the job's `state`). Internal failures are logged with their cause and answered with
//! a generic message.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `unauthorized`: missing or unknown API key.
    #[error("missing or invalid API key; send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// 404 `kiosk_not_found`.
    #[error("unknown kiosk {0:?}")]
    KioskNotFound(String),
    /// 404 `job_not_found`.
    #[error("unknown print job {0:?}")]
    JobNotFound(String),
    /// 404 `session_not_found`.
    #[error("unknown cash session {0:?}")]
    SessionNotFound(String),
    /// 404 `credit_not_found`: no such unassigned credit of that kiosk.
    #[error("unknown unassigned credit {0:?}")]
    CreditNotFound(String),
    /// 409 `credit_already_resolved`: the credit was assigned or refunded
    /// differently before.
    #[error("{0}")]
    CreditAlreadyResolved(String),
    /// 422 `session_of_other_kiosk`: the session belongs to another kiosk.
    #[error("{0}")]
    SessionOfOtherKiosk(String),
    /// 422 `currency_mismatch`: the credit and the session differ in
    /// currency.
    #[error("{0}")]
    CurrencyMismatch(String),
    /// 400 `invalid_request`: the body or a header is not acceptable.
    #[error("{0}")]
    InvalidRequest(String),
    /// 413 `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 409 `conflict`: e.g. the job id is taken, a reprint of a job whose
    /// content the gateway never saw, a cancel of a paid or cancelled
    /// session.
    #[error("{0}")]
    Conflict(String),
    /// 409 `not_cancellable`: a cancel of a job that is printed, failed
    /// or expired; the body's `error.state` is the job's state.
    #[error("print job {job_id:?} is {}; only a queued or received job can be cancelled", state.as_str())]
    NotCancellable {
        /// The job.
        job_id: String,
        /// Its state.
        state: kiosk_schemas::JobState,
    },
    /// 422 `idempotency_key_reused`: same key, different request.
    #[error("Idempotency-Key {0:?} was already used with a different request")]
    IdempotencyKeyReused(String),
    /// 429 `rate_limited`: the API key made more requests than
    /// `http.rate_limit_per_second` allows after its burst of
    /// `http.rate_limit_burst`; answered with `Retry-After: <seconds>`
    /// (whole seconds until the key has a token again, at least 1).
    #[error("too many requests with this API key; retry after {retry_after} s")]
    RateLimited {
        /// Seconds until a request with the key is let in again.
        retry_after: u64,
    },
    /// 403 `forbidden`: a change from the fleet page without its CSRF
    /// token, or from another site.
    #[error("{0}")]
    Forbidden(String),
    /// 503 `unavailable`.
    #[error("{0}")]
    Unavailable(String),
    /// 503 `too_many_streams`: `http.max_sse_streams` event streams are
    /// open; answered with `Retry-After`.
    #[error("too many open event streams; retry later")]
    TooManyStreams,
    /// 500 `internal`: logged, answered without details.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// HTTP status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::KioskNotFound(_) => (StatusCode::NOT_FOUND, "kiosk_not_found"),
            ApiError::JobNotFound(_) => (StatusCode::NOT_FOUND, "job_not_found"),
            ApiError::SessionNotFound(_) => (StatusCode::NOT_FOUND, "session_not_found"),
            ApiError::CreditNotFound(_) => (StatusCode::NOT_FOUND, "credit_not_found"),
            ApiError::CreditAlreadyResolved(_) => (StatusCode::CONFLICT, "credit_already_resolved"),
            ApiError::SessionOfOtherKiosk(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "session_of_other_kiosk")
            }
            ApiError::CurrencyMismatch(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch")
            }
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::NotCancellable { .. } => (StatusCode::CONFLICT, "not_cancellable"),
            ApiError::IdempotencyKeyReused(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::TooManyStreams => (StatusCode::SERVICE_UNAVAILABLE, "too_many_streams"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(
                error = format!("{cause:#}"),
                "internal error answering request"
            );
        } else {
            tracing::debug!(status = status.as_u16(), code, message = %self, "request refused");
        }
        let mut body = json!({"error": {"code": code, "message": self.to_string()}});
        if let ApiError::NotCancellable { state, .. } = &self {
            body["error"]["state"] = json!(state.as_str());
        }
        let body = Json(body);
        let mut resp = (status, body).into_response();
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if matches!(self, ApiError::TooManyStreams) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        if let ApiError::RateLimited { retry_after } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
        }
        resp
    }
}
