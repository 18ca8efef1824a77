//! `POST /twilio/voice`: admit the call as a reservation and answer the stream TwiML, or the reject
//! mode when it cannot be admitted.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use calls_core::calls::{RejectReason, WebhookCall, WebhookOutcome};
use tracing::info;
use twilio::twiml;

use super::{stream_url, twilio_call_form};
use crate::app::App;
use crate::config::RejectMode;

pub async fn handle(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, call_sid) = match twilio_call_form(&app, &headers, &uri, &body) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    if app.is_draining() {
        app.metrics.rejected(RejectReason::Draining.as_str());
        info!(%call_sid, "call refused: replica is draining");
        return reject(&app);
    }
    let call = WebhookCall {
        account_sid: form.get("AccountSid").map(str::to_owned),
        from: form.get("From").map(str::to_owned),
        to: form.get("To").map(str::to_owned),
    };
    match app.calls.admit_webhook(&call_sid, call).await {
        WebhookOutcome::Connect { .. } => {
            let url = stream_url(&app, &headers);
            // The call SID travels as a <Parameter>, never in the stream URL's query string.
            let body = twiml::connect_stream(&url, &[("CallSid", call_sid.as_str())]);
            xml(StatusCode::OK, body)
        }
        WebhookOutcome::Reject(_) => reject(&app),
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The configured reject mode (SPEC §2 `REJECT_MODE`).
fn reject(app: &App) -> Response {
    let reject = &app.config.reject;
    match reject.mode {
        RejectMode::ServiceUnavailable => {
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "all lines are busy\n",
            )
                .into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(reject.retry_after_secs),
            );
            response
        }
        RejectMode::Twiml => xml(
            StatusCode::OK,
            twiml::say_then(&reject.message, reject.redirect_url.as_deref()),
        ),
        RejectMode::Busy => xml(StatusCode::OK, twiml::reject_busy()),
    }
}
