//! `POST|GET /twilio/after-stream`: Twilio's `<Connect action>` request once a call's stream has
//! closed (SPEC §9). Answered from the call's stored state, so any replica gives the same answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use calls_core::after_stream::AfterStream;
use twilio::twiml;

use super::voice::{fallback_twiml, xml};
use super::{TwilioRequest, twilio_call_form};
use crate::app::App;

pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = TwilioRequest {
        method: &method,
        headers: &headers,
        uri: &uri,
        body: &body,
    };
    let (_, call_sid) = match twilio_call_form(&app, &request) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    match app.calls.after_stream(&call_sid).await {
        AfterStream::Hangup => xml(StatusCode::OK, twiml::hangup()),
        // Continuations are not granted yet (`Calls::after_stream` never answers Continue); were
        // one to come, the fallback is still an answer the caller can hear.
        AfterStream::Fallback | AfterStream::Continue { .. } => {
            app.metrics.fallbacks_served.inc();
            fallback_twiml(&app)
        }
    }
}
