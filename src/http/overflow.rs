//! What a connection past `MAX_CONNECTIONS` is answered (docs/reference.md#connections): liveness
//! still 200, everything else 503 at once, so the replica is never restarted for being full.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::warn;

use crate::app::App;
use crate::metrics::HttpReject;

use super::ops;

/// Seconds a refused client is told to wait: connections free as calls end.
const RETRY_AFTER_SECS: &str = "1";

pub(crate) fn overflow_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .fallback(over_limit)
        .with_state(app)
}

async fn over_limit(State(app): State<Arc<App>>, uri: Uri) -> Response {
    app.metrics().http_rejected(HttpReject::ConnectionLimit);
    warn!(
        path = uri.path(),
        reason = HttpReject::ConnectionLimit.as_str(),
        status = StatusCode::SERVICE_UNAVAILABLE.as_u16(),
        max_connections = app.config().max_connections,
        "request refused: the replica holds MAX_CONNECTIONS connections"
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, RETRY_AFTER_SECS),
            (header::CONNECTION, "close"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "not ready: connection limit\n",
    )
        .into_response()
}
