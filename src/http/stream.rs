//! `GET /twilio/stream`: checks the handshake's signature, sizes the WebSocket for 20 ms frames, and
//! hands the socket to the stream wing, tracked so the drain waits for it.

use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{check_signature, stream_url};
use crate::app::App;
use crate::lifecycle::NewStream;
use crate::metrics::HttpReject;
use crate::stream::{self, MAX_MESSAGE_BYTES, StreamContext};

/// A media message is ~400 bytes on the wire. tungstenite zero-fills the free part of its read
/// buffer before every socket read, so the buffer is the smallest that still holds several
/// messages: 1 KiB makes every third message take two reads, 4 KiB zero-fills twice as much.
const READ_BUFFER_BYTES: usize = 2048;
/// Writes go out per message; a small buffer batches nothing we need.
const WRITE_BUFFER_BYTES: usize = 0;
/// What may queue for a peer that stopped reading before writes fail: memory stays flat.
const MAX_WRITE_BUFFER_BYTES: usize = 64 * 1024;

pub(super) async fn handle(
    State(app): State<Arc<App>>,
    Extension(streams): Extension<Arc<StreamContext>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Twilio signs the stream URL exactly as the TwiML gave it, with no parameters.
    let url = stream_url(&app, &headers);
    if let Err(refused) = check_signature(&app, &headers, &uri, &url, &[]) {
        return refused.into_response();
    }
    // docs/reference.md#drain: a draining replica passes a new stream to a live one (nginx retries
    // a 503'd upgrade on the next upstream) and hosts it only when no other replica can.
    if app.lifecycle().new_stream(app.calls()).await == NewStream::PassOn {
        app.metrics().http_rejected(HttpReject::StreamPassedOn);
        tracing::info!("stream upgrade passed on: this replica is draining and another is live");
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "this replica is draining\n",
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    // Tracked from the 101 on, not from when the upgrade completes: the drain must not find the
    // tracker empty while an upgraded socket is on its way to its session.
    let tracked = app.lifecycle().streams.token();
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            stream::serve(&streams, socket).await;
            drop(tracked);
        })
}
