//! Print jobs: create, read, list, reprint, cancel.
//!
//! Cancel answers by the job's state at the gateway ([`crate::state::cancel`]):
//! `queued` → `200`, the job `cancelled` (never sent again; its kiosk is
//! sent the `cancel` command all the same, in case it holds an earlier
//! publish); `received` → `202`, the job still `received` with
//! `cancel_pending: true` (the kiosk is asked; the job becomes `cancelled`
//! when it confirms, or `printed`/`failed` when its write had started —
//! the gateway has no `printing` state, so a job printing on the kiosk is
//! answered this way); `cancelled` → `200` again; `printed`, `failed`,
//! `expired` → `409 not_cancellable` with the state.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use kiosk_schemas::{Document, JobId, JobState, KioskId, PrintJob, Timestamp, V1, wire};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::store::{
    CancelOutcome, CreateOutcome, Cursor, JobFilter, JobRecord, Origin, Transition,
};

/// Header carrying the caller's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Body of `POST /v1/kiosks/{kiosk_id}/print-jobs`.
///
/// ```json
/// {"printer":"receipt","document":{"kind":"text","text":"Hello\n"},"copies":1,"expires_in_s":3600}
/// ```
#[derive(Debug, Deserialize)]
pub struct CreatePrintJob {
    /// Logical printer on the kiosk.
    pub printer: String,
    /// What to print (`text`, `raw` or `receipt`).
    pub document: Document,
    /// Copies, 1 to 10; default 1.
    #[serde(default)]
    pub copies: Option<u8>,
    /// Seconds until the job expires unprinted; default
    /// `delivery.default_expires_in`, at most `delivery.max_expires_in`.
    #[serde(default)]
    pub expires_in_s: Option<u64>,
    /// Caller-chosen job id (`[A-Za-z0-9._:~-]{1,128}`); default a ULID.
    #[serde(default)]
    pub job_id: Option<JobId>,
}

/// Optional body of `POST /v1/print-jobs/{job_id}/reprint`.
#[derive(Debug, Default, Deserialize)]
pub struct Reprint {
    /// Copies; default those of the original job.
    #[serde(default)]
    pub copies: Option<u8>,
    /// Seconds until the new job expires; default `delivery.default_expires_in`.
    #[serde(default)]
    pub expires_in_s: Option<u64>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct JobView {
    /// Job id.
    pub job_id: JobId,
    /// Kiosk.
    pub kiosk_id: KioskId,
    /// Logical printer.
    pub printer: String,
    /// `queued`, `received`, `printed`, `failed`, `expired` or `cancelled`.
    pub state: JobState,
    /// Why, for `failed` and `expired`.
    pub reason: Option<String>,
    /// For a `failed` job whose write had started on the kiosk: bytes
    /// written to the printer before it stopped (after a crash, a lower
    /// bound); `0` means the ticket never started. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<u64>,
    /// With `bytes_written`: bytes of the whole job (all copies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Copies.
    pub copies: u8,
    /// Creation time (RFC 3339): the gateway's clock for jobs created
    /// over HTTP, the publisher's `created_at` for jobs seen over MQTT.
    pub created_at: Timestamp,
    /// When the gateway first stored the job (RFC 3339): what listings
    /// are ordered by and `created_after`/`created_before` compare. The
    /// same instant as `created_at` for jobs created over HTTP.
    pub accepted_at: Timestamp,
    /// Expiry (RFC 3339), if any.
    pub expires_at: Option<Timestamp>,
    /// `http` or `mqtt`.
    pub origin: &'static str,
    /// The job this one reprints.
    pub reprint_of: Option<JobId>,
    /// Every state with its time, oldest first.
    pub history: Vec<HistoryView>,
    /// The document, when known: the `document` of the job's wire bytes,
    /// as stored.
    pub document: Option<Box<RawValue>>,
    /// True while the job's cancel is unanswered by its kiosk (the
    /// gateway keeps sending the `cancel` command): a `received` job asked
    /// to cancel, or a `cancelled` one the kiosk has not confirmed yet.
    /// Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancel_pending: bool,
}

/// One history entry.
#[derive(Debug, Serialize)]
pub struct HistoryView {
    /// State entered.
    pub state: JobState,
    /// When (RFC 3339).
    pub at: Timestamp,
    /// Why, for `failed` and `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `document` of a job's wire bytes, without parsing it.
fn document_of(payload: &[u8]) -> Option<Box<RawValue>> {
    #[derive(Deserialize)]
    struct Job<'a> {
        #[serde(borrow)]
        document: &'a RawValue,
    }
    serde_json::from_slice::<Job<'_>>(payload)
        .ok()
        .map(|j| j.document.to_owned())
}

impl JobView {
    /// The view of `r`, whose wire bytes are `payload` (`None` while the
    /// gateway has not seen the job's content).
    pub fn new(r: JobRecord, payload: Option<&[u8]>) -> Self {
        JobView {
            cancel_pending: false,
            document: payload.and_then(document_of),
            job_id: r.job_id,
            kiosk_id: r.kiosk_id,
            printer: r.printer,
            state: r.state,
            reason: r.reason,
            bytes_written: r.bytes.map(|b| b.written),
            bytes_total: r.bytes.map(|b| b.total),
            copies: r.copies,
            created_at: r.created_at,
            accepted_at: r.accepted_at,
            expires_at: r.expires_at,
            origin: match r.origin {
                Origin::Http { .. } => "http",
                Origin::Mqtt => "mqtt",
            },
            reprint_of: r.reprint_of,
            history: r
                .history
                .into_iter()
                .map(|t: Transition| HistoryView {
                    state: t.state,
                    at: t.at,
                    reason: t.reason,
                })
                .collect(),
        }
    }
}

impl JobView {
    /// The view of job `id` as stored now, with its cancel state.
    fn read(app: &AppState, id: &JobId) -> Result<Option<Self>, ApiError> {
        let Some(rec) = app.store.job(id)? else {
            return Ok(None);
        };
        let pending = app.store.cancel_pending(&rec.kiosk_id, id)?;
        let payload = app.store.payload(id)?;
        let mut view = JobView::new(rec, payload.as_deref());
        view.cancel_pending = pending;
        Ok(Some(view))
    }
}

pub(super) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "request body larger than {limit} bytes (http.max_body_bytes)"
            ))
        } else {
            ApiError::InvalidRequest(rej.body_text())
        }
    })
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::InvalidRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::InvalidRequest(format!("invalid JSON body: {path}: {inner}"))
        }
    })
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".to_owned(),
            )
        })?;
    Ok(Some(key.to_owned()))
}

fn expiry(
    app: &AppState,
    expires_in_s: Option<u64>,
    now: Timestamp,
) -> Result<Timestamp, ApiError> {
    let cfg = &app.config.delivery;
    let lifetime = match expires_in_s {
        None => cfg.default_expires_in,
        Some(0) => {
            return Err(ApiError::InvalidRequest(
                "expires_in_s must be > 0".to_owned(),
            ));
        }
        Some(s) if s > cfg.max_expires_in.as_secs() => {
            return Err(ApiError::InvalidRequest(format!(
                "expires_in_s must be at most {}",
                cfg.max_expires_in.as_secs()
            )));
        }
        Some(s) => std::time::Duration::from_secs(s),
    };
    let lifetime = chrono::Duration::from_std(lifetime)
        .map_err(|_| ApiError::InvalidRequest("expires_in_s out of range".to_owned()))?;
    Ok(now + lifetime)
}

fn known_kiosk(app: &AppState, raw: &str) -> Result<KioskId, ApiError> {
    let id = KioskId::new(raw).map_err(|_| ApiError::KioskNotFound(raw.to_owned()))?;
    if app.fleet.is_known(&id)? {
        Ok(id)
    } else {
        Err(ApiError::KioskNotFound(raw.to_owned()))
    }
}

/// Stores (flushed) and publishes a new job whose wire bytes are `payload`.
async fn submit(
    app: &AppState,
    record: JobRecord,
    payload: Vec<u8>,
    idempotency: Option<(&str, [u8; 32])>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let (store, key) = (
        app.store.clone(),
        idempotency.map(|(k, h)| (k.to_owned(), h)),
    );
    let (outcome, payload) = kiosk_store::unblocked(move || {
        let key = key.as_ref().map(|(k, h)| (k.as_str(), *h));
        (store.create_job(record, &payload, key), payload)
    })
    .await;
    let outcome = outcome?;
    match outcome {
        CreateOutcome::Created(rec) => {
            // Durable before we say 202: a crash after this line loses nothing.
            app.store.flush().await?;
            app.metrics.job_created("http");
            tracing::info!(job_id = %rec.job_id, kiosk = %rec.kiosk_id, printer = %rec.printer, "job accepted");
            let view = JobView::new(rec.clone(), Some(&payload));
            // Only to an online kiosk: for an offline one the broker would
            // keep the job in its session and hand it over first thing on
            // reconnect, ahead of a `cancel` made meanwhile. An offline
            // kiosk gets it when it comes online, after its unanswered
            // cancels ([`crate::delivery`]).
            if app.fleet.is_online(&rec.kiosk_id) {
                app.delivery.publish(&rec.kiosk_id, &rec.job_id, payload);
            }
            Ok((StatusCode::ACCEPTED, Json(view)))
        }
        CreateOutcome::Replayed(rec) => {
            // The first request may still be waiting for its flush: this
            // 202 too waits for one that covers the job.
            app.store.flush().await?;
            let payload = app.store.payload(&rec.job_id)?;
            Ok((
                StatusCode::ACCEPTED,
                Json(JobView::new(rec, payload.as_deref())),
            ))
        }
        CreateOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused(
            idempotency.map(|(k, _)| k.to_owned()).unwrap_or_default(),
        )),
        CreateOutcome::JobIdTaken => Err(ApiError::Conflict("job_id already exists".to_owned())),
    }
}

/// A fresh job id: a ULID (26 characters, sortable by creation time).
fn new_job_id() -> JobId {
    JobId::new(ulid::Ulid::new().to_string())
        .unwrap_or_else(|e| unreachable!("ULIDs are valid job ids: {e}"))
}

/// The wire job of a job accepted over HTTP at `now`, due at `expires_at`.
fn accepted_job(
    job_id: JobId,
    printer: String,
    document: Document,
    copies: u8,
    expires_at: Timestamp,
    now: Timestamp,
) -> PrintJob {
    PrintJob {
        v: V1,
        job_id,
        printer,
        document,
        copies,
        created_at: now,
        expires_at: Some(expires_at),
    }
}

fn request_hash(kiosk: &KioskId, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kiosk.as_str().as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

/// Bytes of an MQTT PUBLISH around its payload, at most: fixed header (5),
/// topic length and `kiosk/<id up to 64>/print` (2 + 76), packet id (2),
/// rounded up. The broker's limit counts the whole packet.
const MQTT_OVERHEAD: usize = 128;

/// The largest job, as JSON bytes, that every hop after the HTTP edge
/// takes, and the key that sets it: `delivery.max_job_bytes`, or the
/// broker's `broker.max_payload_bytes` less a PUBLISH's overhead when that
/// is smaller (a job the broker would refuse is refused here instead of
/// being lost on the way).
pub fn job_limit(config: &crate::config::GatewayConfig) -> (usize, &'static str) {
    let by_broker = config
        .broker
        .max_payload_bytes()
        .saturating_sub(MQTT_OVERHEAD);
    if by_broker < config.delivery.max_job_bytes {
        (by_broker, "broker.max_payload_bytes")
    } else {
        (config.delivery.max_job_bytes, "delivery.max_job_bytes")
    }
}

/// Checks a wire job, so nothing is stored that a kiosk would refuse;
/// returns its wire bytes, which are stored and published as they are.
fn check_job(app: &AppState, job: &PrintJob) -> Result<Vec<u8>, ApiError> {
    job.validate().map_err(ApiError::InvalidRequest)?;
    let payload = wire::encode(job);
    let size = payload.len();
    let (limit, key) = job_limit(&app.config);
    if size > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "print job is {size} bytes as JSON, limit {limit} bytes ({key})"
        )));
    }
    Ok(payload)
}

/// `POST /v1/kiosks/{kiosk_id}/print-jobs`, body [`CreatePrintJob`],
/// optional `Idempotency-Key` header → `202` [`JobView`] with state
/// `queued`. The job is flushed to disk before the answer. Repeating a
/// request with the same Idempotency-Key answers the job it created, and
/// nothing is printed twice.
///
/// # Errors
/// 401 without a valid key; 404 `kiosk_not_found`; 400 `invalid_request`
/// for a malformed body (the message names the field); 413 for a body over
/// `http.max_body_bytes` or a job over `delivery.max_job_bytes`; 409 when
/// `job_id` is taken; 422 when the Idempotency-Key was used with another
/// request.
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(kiosk_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let kiosk = known_kiosk(&app, &kiosk_id)?;
    let body = body_bytes(body, app.config.http.max_body_bytes)?;
    let key = idempotency_key(&headers)?;
    let req: CreatePrintJob = parse_json(&body)?;
    let now = Utc::now();
    let expires_at = expiry(&app, req.expires_in_s, now)?;
    let job = accepted_job(
        req.job_id.unwrap_or_else(new_job_id),
        req.printer,
        req.document,
        req.copies.unwrap_or(1),
        expires_at,
        now,
    );
    let payload = check_job(&app, &job)?;
    let origin = Origin::Http { api_key: caller.0 };
    let record = JobRecord::queued(&kiosk, &job, origin, None, now);
    let hash = request_hash(&kiosk, &body);
    submit(&app, record, payload, key.as_deref().map(|k| (k, hash))).await
}

/// `GET /v1/print-jobs/{job_id}` → `200` [`JobView`] with the history of
/// states.
///
/// # Errors
/// 404 `job_not_found`; 401; 500.
pub async fn get(
    State(app): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = JobId::new(job_id.as_str()).map_err(|_| ApiError::JobNotFound(job_id.clone()))?;
    let view = JobView::read(&app, &id)?.ok_or(ApiError::JobNotFound(job_id))?;
    Ok(Json(view))
}

/// `POST /v1/print-jobs/{job_id}/cancel` (no body) → `200` [`JobView`]
/// `cancelled` for a job the kiosk had not received (cancelled now, never
/// sent again) or one cancelled before; `202` [`JobView`] still
/// `received`, `cancel_pending: true`, for a job the kiosk holds: it is
/// sent the `cancel` command and the job becomes `cancelled` when it
/// confirms (or `printed`/`failed` if its write had started). The change
/// is flushed before the answer; the command goes out after it, and again
/// on every republish until the kiosk answers.
///
/// # Errors
/// 404 `job_not_found`; 409 `not_cancellable` (with `error.state`) for a
/// job `printed`, `failed` or `expired`; 401; 500.
pub async fn cancel(
    State(app): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let id = JobId::new(job_id.as_str()).map_err(|_| ApiError::JobNotFound(job_id.clone()))?;
    let (store, job) = (app.store.clone(), id.clone());
    let outcome = kiosk_store::unblocked(move || store.cancel_job(&job, Utc::now())).await?;
    let (status, rec) = match outcome {
        CancelOutcome::Unknown => return Err(ApiError::JobNotFound(job_id)),
        CancelOutcome::NotCancellable(rec) => {
            app.metrics.job_cancel("not_cancellable");
            return Err(ApiError::NotCancellable {
                job_id,
                state: rec.state,
            });
        }
        CancelOutcome::AlreadyCancelled(rec) => {
            app.metrics.job_cancel("already_cancelled");
            (StatusCode::OK, rec)
        }
        CancelOutcome::Cancelled(rec) => {
            app.metrics.job_cancel("cancelled");
            tracing::info!(job_id = %rec.job_id, kiosk = %rec.kiosk_id, "queued job cancelled");
            (StatusCode::OK, rec)
        }
        CancelOutcome::Requested(rec) => {
            app.metrics.job_cancel("requested");
            tracing::info!(job_id = %rec.job_id, kiosk = %rec.kiosk_id, "cancel requested from the kiosk");
            (StatusCode::ACCEPTED, rec)
        }
    };
    // Durable before the answer (and before the kiosk hears of it): a
    // crash after this line still never sends the job, and still tells
    // the kiosk.
    app.store.flush().await?;
    let pending = app.store.cancel_pending(&rec.kiosk_id, &rec.job_id)?;
    if pending {
        app.delivery.send_cancel(&rec.kiosk_id, &rec.job_id);
    }
    let payload = app.store.payload(&rec.job_id)?;
    let mut view = JobView::new(rec, payload.as_deref());
    view.cancel_pending = pending;
    Ok((status, Json(view)))
}

/// `POST /v1/kiosks/{kiosk_id}/printers/{printer}/test-print` (no body) →
/// `202` [`JobView`]: a short text job saying who asked and when, delivered
/// like any other job (the fleet page's test print button). Not
/// idempotent: every call prints.
///
/// # Errors
/// 404 `kiosk_not_found`; 400 `invalid_request` for a printer the kiosk
/// has not reported (when it reported any).
pub async fn test_print(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((kiosk_id, printer)): Path<(String, String)>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let kiosk = known_kiosk(&app, &kiosk_id)?;
    if let Some(view) = app.fleet.view(&kiosk)?
        && !view.printers.is_empty()
        && !view.printers.contains_key(&printer)
    {
        return Err(ApiError::InvalidRequest(format!(
            "kiosk {kiosk} has no printer {printer:?} (it reports {:?})",
            view.printers.keys().collect::<Vec<_>>()
        )));
    }
    let now = Utc::now();
    let text = format!(
        "Test print\nkiosk {kiosk}, printer {printer}\nasked by {} at {}\n",
        caller.0,
        now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let document: Document =
        serde_json::from_value(serde_json::json!({"kind": "text", "text": text}))
            .map_err(|e| ApiError::Internal(e.into()))?;
    let expires_at = expiry(&app, None, now)?;
    let job = accepted_job(new_job_id(), printer, document, 1, expires_at, now);
    let payload = check_job(&app, &job)?;
    let record = JobRecord::queued(&kiosk, &job, Origin::Http { api_key: caller.0 }, None, now);
    submit(&app, record, payload, None).await
}

/// Jobs per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest `limit`.
pub const MAX_LIMIT: usize = 500;

/// Body of `GET /v1/print-jobs` and `GET /v1/kiosks/{kiosk_id}/print-jobs`.
///
/// ```json
/// {"jobs":[{"job_id":"...","state":"printed","...":"..."}],"next_cursor":"AQ..."}
/// ```
#[derive(Debug, Serialize)]
pub struct JobList {
    /// Newest first (by `accepted_at`, ties by job id).
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One listing request, as its query string asks.
#[derive(Debug, PartialEq)]
struct ListQuery {
    filter: JobFilter,
    cursor: Option<Cursor>,
    limit: usize,
}

fn bad(name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidRequest(format!("query parameter {name}: {why}"))
}

fn timestamp(name: &str, value: &str) -> Result<Timestamp, ApiError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            bad(
                name,
                format!("{value:?} is not an RFC 3339 time ({e}; write `+` as %2B)"),
            )
        })
}

/// Reads the query of a listing; `kiosk` is the path's kiosk of
/// `GET /v1/kiosks/{kiosk_id}/print-jobs`, where `kiosk_id` is no
/// parameter. Unknown parameters, and any but `state` given twice, are
/// refused, so that a misspelt filter is not silently ignored.
fn list_query(query: Option<&str>, kiosk: Option<KioskId>) -> Result<ListQuery, ApiError> {
    let per_kiosk = kiosk.is_some();
    let mut q = ListQuery {
        filter: JobFilter {
            kiosk,
            ..JobFilter::default()
        },
        cursor: None,
        limit: DEFAULT_LIMIT,
    };
    let mut seen = std::collections::HashSet::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name != "state" && !seen.insert(name.clone()) {
            return Err(bad(&name, "given more than once"));
        }
        match &*name {
            "kiosk_id" if !per_kiosk => {
                let id = KioskId::new(&*value).map_err(|e| bad(&name, e))?;
                q.filter.kiosk = Some(id);
            }
            "printer" => q.filter.printer = Some(value.into_owned()),
            "state" => {
                let state = JobState::ALL
                    .into_iter()
                    .find(|s| s.as_str() == value)
                    .ok_or_else(|| {
                        bad(
                            &name,
                            format!(
                                "unknown state {value:?} (queued, received, printed, failed, expired)"
                            ),
                        )
                    })?;
                q.filter.states.push(state);
            }
            "created_after" => q.filter.created_after = Some(timestamp(&name, &value)?),
            "created_before" => q.filter.created_before = Some(timestamp(&name, &value)?),
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(&name, format!("must be 1 to {MAX_LIMIT}")))?;
            }
            "cursor" => {
                q.cursor = Some(
                    Cursor::decode(&value)
                        .ok_or_else(|| bad(&name, "not a next_cursor this gateway answered"))?,
                );
            }
            _ => return Err(bad(&name, "unknown parameter")),
        }
    }
    Ok(q)
}

/// A page of the listing `query` asks for (in `kiosk`, if given).
async fn list_page(
    app: &AppState,
    query: Option<String>,
    kiosk: Option<KioskId>,
) -> Result<Json<JobList>, ApiError> {
    let q = list_query(query.as_deref(), kiosk)?;
    let store = app.store.clone();
    let list = kiosk_store::unblocked(move || {
        let page = store.list_jobs(&q.filter, q.cursor.as_ref(), q.limit)?;
        let mut jobs = Vec::with_capacity(page.jobs.len());
        for rec in page.jobs {
            let payload = store.payload(&rec.job_id)?;
            jobs.push(JobView::new(rec, payload.as_deref()));
        }
        Ok::<_, crate::store::StoreError>(JobList {
            jobs,
            next_cursor: page.next.as_ref().map(Cursor::encode),
        })
    })
    .await?;
    Ok(Json(list))
}

/// `GET /v1/print-jobs?kiosk_id=&printer=&state=&created_after=&created_before=&limit=&cursor=`
/// → `200` [`JobList`]: jobs newest first (by `accepted_at`, ties by job
/// id), `limit` (1 to 500, default 50) of them, and the `next_cursor` to
/// pass as `cursor` for the next page (`null` on the last). `state` may
/// be repeated (any of them); `created_after`/`created_before` are RFC
/// 3339, exclusive, and compare `accepted_at`. A page costs about its
/// size through the store's indexes (by kiosk, by state); `printer`
/// filters on top of them. Jobs created while paging sort before the
/// cursor: no job is skipped or repeated.
///
/// # Errors
/// 400 `invalid_request` for an unknown parameter or state, a bad time,
/// a `limit` out of range, a cursor this gateway did not answer; 401; 500.
pub async fn list(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<JobList>, ApiError> {
    list_page(&app, query, None).await
}

/// `GET /v1/kiosks/{kiosk_id}/print-jobs` → `200` [`JobList`]: as
/// [`list`], of this kiosk's jobs (no `kiosk_id` parameter).
///
/// # Errors
/// 404 `kiosk_not_found`; otherwise as [`list`].
pub async fn list_for_kiosk(
    State(app): State<AppState>,
    Path(kiosk_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<JobList>, ApiError> {
    let kiosk = known_kiosk(&app, &kiosk_id)?;
    list_page(&app, query, Some(kiosk)).await
}

/// `POST /v1/print-jobs/{job_id}/reprint`, optional body [`Reprint`],
/// optional `Idempotency-Key` → `202` a new [`JobView`] with the same
/// document, printer and kiosk, `reprint_of` set to the original.
///
/// # Errors
/// 404 `job_not_found`; 409 when the gateway never saw the job's content;
/// 400/413/422 as for create.
pub async fn reprint(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let id = JobId::new(job_id.as_str()).map_err(|_| ApiError::JobNotFound(job_id.clone()))?;
    let original = app.store.job(&id)?.ok_or(ApiError::JobNotFound(job_id))?;
    let body = body_bytes(body, app.config.http.max_body_bytes)?;
    let key = idempotency_key(&headers)?;
    let req: Reprint = if body.iter().all(u8::is_ascii_whitespace) {
        Reprint::default()
    } else {
        parse_json(&body)?
    };
    let Some(payload) = app.store.payload(&id)? else {
        return Err(ApiError::Conflict(
            "the job's document is unknown to the gateway; it cannot be reprinted".to_owned(),
        ));
    };
    let document = serde_json::from_slice::<PrintJob>(&payload)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored job {id}: {e}")))?
        .document;
    let now = Utc::now();
    let expires_at = expiry(&app, req.expires_in_s, now)?;
    let job = accepted_job(
        new_job_id(),
        original.printer.clone(),
        document,
        req.copies.unwrap_or(original.copies),
        expires_at,
        now,
    );
    let payload = check_job(&app, &job)?;
    let origin = Origin::Http { api_key: caller.0 };
    let reprint_of = Some(original.job_id.clone());
    let record = JobRecord::queued(&original.kiosk_id, &job, origin, reprint_of, now);
    let mut hashed = b"reprint:".to_vec();
    hashed.extend_from_slice(original.job_id.as_str().as_bytes());
    hashed.extend_from_slice(&body);
    let hash = request_hash(&original.kiosk_id, &hashed);
    submit(&app, record, payload, key.as_deref().map(|k| (k, hash))).await
}
