//! `POST|GET /twilio/after-stream`: Twilio's `<Connect action>` request once a stream has closed
//! (docs/reference.md#after-stream). Any replica answers from the call's state: hang up, the
//! fallback, or a continuation.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracing::info;

use calls_core::calls::{AfterStream, is_final_status};
use twilio::twiml;

use super::voice::{connect, fallback_twiml, xml};
use super::{STREAM_NUMBER, TwilioRequest, after_stream_url, twilio_call_form_signed_over};
use crate::app::App;
use crate::metrics::Answer;

/// The stream number of the request's action URL; `None` for an action URL given without one
/// (by an older version), `Some(u32::MAX)` (no stream's) for one that is not a number.
fn stream_number(request: &TwilioRequest) -> Option<u32> {
    let query = request.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == STREAM_NUMBER)
        .map(|(_, value)| value.parse().unwrap_or(u32::MAX))
}

pub(super) async fn handle(State(app): State<Arc<App>>, request: TwilioRequest) -> Response {
    // Twilio signs this request over the action URL exactly as our TwiML gave it: built from the
    // normalised PUBLIC_URL (lower-case host, no default port), not PUBLIC_URL as written.
    let signed_url = match request.uri.query() {
        Some(query) => format!("{}?{query}", after_stream_url(&app, &request.headers)),
        None => after_stream_url(&app, &request.headers).into_owned(),
    };
    let (form, call_sid) = match twilio_call_form_signed_over(&app, &request, &signed_url) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    // A call Twilio already reports over needs no continuation, whatever its state says: its
    // stream's own ending may not be recorded yet when the caller hung up.
    if let Some(status) = form.get("CallStatus")
        && is_final_status(status)
    {
        info!(%call_sid, call_status = status, "after-stream for a finished call; hanging up");
        app.metrics().after_stream(Answer::Hangup);
        return xml(StatusCode::OK, twiml::hangup());
    }
    match app
        .calls()
        .after_stream(&call_sid, stream_number(&request))
        .await
    {
        AfterStream::Hangup => {
            app.metrics().after_stream(Answer::Hangup);
            xml(StatusCode::OK, twiml::hangup())
        }
        AfterStream::Fallback => {
            app.metrics().after_stream(Answer::Fallback);
            fallback_twiml(&app)
        }
        AfterStream::Continue { resumed, from, to } => {
            app.metrics().after_stream(Answer::Continue);
            let parameters = twiml::StreamParameters {
                call_sid: call_sid.as_str(),
                from_number: from.as_deref(),
                to_number: to.as_deref(),
                resumed: Some(resumed),
            };
            connect(&app, &request.headers, &parameters)
        }
    }
}
