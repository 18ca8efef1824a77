//! `/v1/calls` (docs/reference.md#outbound): queue, read, list and cancel outbound calls, behind
//! the bearer `API_TOKEN`. Thin: the checks of a request are `NewOutbound`'s, the rest the store's.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use calls_core::outbound::{MAX_IDEMPOTENCY_KEY, NewOutbound, OutboundId, OutboundStatus};
use calls_core::store::StoreError;
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use crate::app::App;
use crate::outbound::{self, CancelError};

/// The routes, only where `API_TOKEN` is set: without it `/v1/*` is a 404 like any unknown path.
pub(super) fn routes(app: &App) -> Option<Router<Arc<App>>> {
    app.config().outbound.as_ref()?;
    Some(
        Router::new()
            .route("/v1/calls", get(list).post(create))
            .route("/v1/calls/{id}", get(read).delete(cancel)),
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"message": message}}))).into_response()
}

fn bad_field(field: &str, reason: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": {"field": field, "message": format!("{field}: {reason}")}})),
    )
        .into_response()
}

fn store_failed(app: &App, err: &StoreError) -> Response {
    app.metrics().redis_error(err.op());
    warn!(error = %err, "outbound API: state store failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the state store is unreachable; nothing was changed",
    )
}

/// Why a request was refused before anything was read or changed.
enum Refused {
    /// `API_TOKEN` unset: the API does not exist.
    Off,
    Unauthorized,
    BadField(&'static str, &'static str),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Off => StatusCode::NOT_FOUND.into_response(),
            Self::Unauthorized => {
                let mut response = error(
                    StatusCode::UNAUTHORIZED,
                    "a valid Authorization: Bearer token is required",
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                response
            }
            Self::BadField(field, reason) => bad_field(field, reason),
        }
    }
}

/// `Authorization: Bearer API_TOKEN`, compared in constant time; else a 401 that changes nothing.
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Refused> {
    let Some(outbound) = &app.config().outbound else {
        return Err(Refused::Off);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if given.is_some_and(|token| same(token.as_bytes(), outbound.api_token.expose().as_bytes())) {
        return Ok(());
    }
    Err(Refused::Unauthorized)
}

/// Equal, in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Idempotency-Key` header: visible ASCII, at most 255 characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refused> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= MAX_IDEMPOTENCY_KEY
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(Refused::BadField(
            "Idempotency-Key",
            "expected 1 to 255 visible ASCII characters",
        )),
    }
}

async fn create(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = authorize(&app, &headers) {
        return refused.into_response();
    }
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(refused) => return refused.into_response(),
    };
    let json: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(json) => json,
        Err(err) => return bad_field("body", &format!("not JSON: {err}")),
    };
    let request = match NewOutbound::from_json(&json) {
        Ok(request) => request,
        Err(err) => return bad_field(&err.field, &err.reason),
    };
    match outbound::queue(&app, request, key.as_deref()).await {
        Ok(enqueued) => {
            let mut response = (StatusCode::ACCEPTED, axum::Json(&enqueued.record)).into_response();
            if !enqueued.new {
                response.headers_mut().insert(
                    "idempotent-replayed",
                    header::HeaderValue::from_static("true"),
                );
            }
            response
        }
        Err(err) => store_failed(&app, &err),
    }
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such call")
}

async fn read(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(refused) = authorize(&app, &headers) {
        return refused.into_response();
    }
    let Ok(id) = OutboundId::parse(&id) else {
        return not_found();
    };
    match app.calls().store().outbound_call(&id).await {
        Ok(Some(record)) => axum::Json(record).into_response(),
        Ok(None) => not_found(),
        Err(err) => store_failed(&app, &err),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Err(refused) = authorize(&app, &headers) {
        return refused.into_response();
    }
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => match OutboundStatus::parse(raw) {
            Some(status) => Some(status),
            None => {
                let names: Vec<&str> = OutboundStatus::ALL.iter().map(|s| s.as_str()).collect();
                return bad_field("status", &format!("expected one of: {}", names.join(", ")));
            }
        },
    };
    match app.calls().store().outbound_calls(status).await {
        Ok(calls) => axum::Json(json!({ "calls": calls })).into_response(),
        Err(err) => store_failed(&app, &err),
    }
}

async fn cancel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = authorize(&app, &headers) {
        return refused.into_response();
    }
    let Ok(id) = OutboundId::parse(&id) else {
        return not_found();
    };
    match outbound::cancel(&app, &id).await {
        Ok(Some(record)) => axum::Json(record).into_response(),
        Ok(None) => not_found(),
        Err(CancelError::Store(err)) => store_failed(&app, &err),
        Err(err @ CancelError::NotYetPlaced) => error(StatusCode::CONFLICT, &err.to_string()),
        Err(err @ CancelError::Twilio(_)) => error(StatusCode::BAD_GATEWAY, &err.to_string()),
    }
}
