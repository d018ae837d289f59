//! `GET /v1/events`: the event log ([`crate::events`]) as Server-Sent
//! Events, filtered by type and kiosk, resumable with `Last-Event-ID`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt as _};

use super::AppState;
use crate::error::ApiError;
use crate::events::{self, Event};

/// Events read from the log per turn of a stream.
const PAGE: usize = 100;

/// What a stream selects.
#[derive(Debug, Clone, Default)]
struct Filter {
    /// Type patterns (`print_job.*`, `kiosk.online`, `*`); none: all.
    types: Vec<String>,
    /// Kiosk ids; none: all.
    kiosks: Vec<String>,
}

impl Filter {
    /// Parses `type` (repeatable, patterns) and `kiosk_id` (repeatable).
    fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::InvalidRequest(format!("query: {e}")))?;
        let mut filter = Filter::default();
        for (key, value) in pairs {
            match key.as_str() {
                "type" if events::is_pattern(&value) => filter.types.push(value),
                "type" => {
                    return Err(ApiError::InvalidRequest(format!(
                        "type {value:?} is not an event type, a family such as \"print_job.*\", or \"*\""
                    )));
                }
                "kiosk_id" => filter.kiosks.push(value),
                other => {
                    return Err(ApiError::InvalidRequest(format!(
                        "unknown parameter {other:?}"
                    )));
                }
            }
        }
        Ok(filter)
    }

    fn wants(&self, kind: &str, kiosk: Option<&str>) -> bool {
        (self.types.is_empty() || events::matches(&self.types, kind))
            && (self.kiosks.is_empty() || kiosk.is_some_and(|k| self.kiosks.iter().any(|w| w == k)))
    }
}

fn sse(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.id.to_string())
        .event(event.kind.as_str())
        .data(event.to_json())
}

/// `GET /v1/events` (API key): Server-Sent Events of the event log, each
/// with `id:` (the event's id), `event:` (its type) and `data:` (the event
/// as webhooks send it). Filters: `type` (repeatable; a type, a family
/// `print_job.*`, or `*`) and `kiosk_id` (repeatable). Without
/// `Last-Event-ID` the stream starts with the next event; with it, with
/// the events after that id still in the log (`events.retention`).
///
/// # Errors
/// 400 for an unknown parameter, type or a `Last-Event-ID` that is not a
/// number; 401 without a valid key; 503 `too_many_streams` while
/// `http.max_sse_streams` streams are open.
pub async fn stream(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let filter = Filter::parse(query.as_deref())?;
    let log = app.store.events().clone();
    let start = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::InvalidRequest("Last-Event-ID must be an event id".to_owned())
            })?,
        None => log.durable(),
    };
    let permit = app.http_limits.open_stream()?;
    // Subscribe before the first read, so no event falls between the two.
    let durable = log.watch();
    let events = futures::stream::unfold(
        (start, durable, Vec::<Event>::new().into_iter()),
        move |(mut at, mut durable, mut ready)| {
            let (log, filter) = (log.clone(), filter.clone());
            async move {
                loop {
                    if let Some(event) = ready.next() {
                        return Some((event, (at, durable, ready)));
                    }
                    match log.page(at, PAGE, |k, kiosk| filter.wants(k, kiosk)) {
                        Ok((page, through)) => {
                            at = through;
                            if !page.is_empty() {
                                ready = page.into_iter();
                                continue;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the event log; event stream ends");
                            return None;
                        }
                    }
                    if durable.changed().await.is_err() {
                        return None;
                    }
                }
            }
        },
    );
    let stream = events
        .map(|e| Ok(sse(&e)))
        .take_until(app.shutdown.clone().cancelled_owned())
        // The stream holds its place in http.max_sse_streams until dropped.
        .inspect(move |_| {
            let _ = &permit;
        });
    let keep_alive = (app.config.http.idle_timeout / 2).min(Duration::from_secs(15));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
}
