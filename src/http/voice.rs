//! `POST /twilio/voice`: admit the call as a reservation and answer the stream TwiML (with its
//! `<Connect action>`, docs/reference.md#after-stream), or the reject mode when it cannot be
//! admitted.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use calls_core::calls::{Intake, Origin, RejectReason, WebhookCall, WebhookOutcome};
use twilio::stream_token::StreamKey;
use twilio::twiml;

use super::turned_away;
use super::{TwilioRequest, after_stream_url, stream_url, twilio_call_form};
use crate::app::App;
use crate::config::RejectMode;

pub(super) async fn handle(State(app): State<Arc<App>>, request: TwilioRequest) -> Response {
    let (form, call_sid) = match twilio_call_form(&app, &request) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    // docs/reference.md#outbound: a call the cluster placed finds the slot its dial took.
    let outbound = match crate::outbound::id_of(&request.uri) {
        Some(id) => crate::outbound::answered(&app, &id, &call_sid).await,
        None => None,
    };
    let intake = if outbound.is_some() {
        // Its slot is held: a callee we called is never turned away.
        Intake::Open
    } else {
        intake(&app).await
    };
    let from = form.get("From");
    let to = form.get("To");
    let call = WebhookCall {
        account_sid: form.get("AccountSid").map(str::to_owned),
        from: from.map(str::to_owned),
        to: to.map(str::to_owned),
        stream_url: Some(stream_url(&app, &request.headers).into_owned()),
    };
    let origin = match &outbound {
        Some(record) => Origin::Outbound {
            tenant: record.tenant.clone(),
        },
        None => Origin::Inbound,
    };
    match app
        .calls()
        .admit_webhook_as(&call_sid, call, intake, origin)
        .await
    {
        WebhookOutcome::Connect { .. } => {
            // Per-call values travel as <Parameter>s, never in the stream URL's query string
            // (Twilio strips it); `from_number`/`to_number` are the names voice-agent frameworks
            // read from `start.customParameters`.
            let parameters = twiml::StreamParameters {
                call_sid: call_sid.as_str(),
                from_number: from,
                to_number: to,
                resumed: None,
            };
            match &outbound {
                // The request's `parameters` reach the agent as stream parameters.
                Some(record) => {
                    let extra: Vec<(&str, &str)> = record
                        .parameters
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    connect_with(&app, &request.headers, &parameters, &extra)
                }
                None => connect(&app, &request.headers, &parameters),
            }
        }
        WebhookOutcome::Reject(reason) => {
            turned_away::hand_off(&app, &call_sid, &form);
            reject(&app, reason)
        }
        WebhookOutcome::Ended => xml(StatusCode::OK, twiml::hangup()),
    }
}

/// Whether this replica takes new calls now. Admission is cluster-wide and the stream URL leads
/// back through nginx, so a draining replica admits like any other while a live one exists to take
/// the stream (docs/reference.md#drain).
pub(super) async fn intake(app: &App) -> Intake {
    if app.is_draining() && !app.lifecycle().others_live(app.calls()).await {
        Intake::Closed
    } else {
        Intake::Open
    }
}

/// `<Connect action><Stream>`: the first stream of a call, or its continuation
/// (docs/reference.md#after-stream). Every admitted call's TwiML is built here, so each carries
/// its stream token when `TWILIO_AUTH_TOKEN` is set (docs/reference.md#stream-token).
pub(super) fn connect(
    app: &App,
    headers: &HeaderMap,
    parameters: &twiml::StreamParameters<'_>,
) -> Response {
    connect_with(app, headers, parameters, &[])
}

/// [`connect`] with `extra` stream parameters (an outbound call's, docs/reference.md#outbound).
pub(super) fn connect_with(
    app: &App,
    headers: &HeaderMap,
    parameters: &twiml::StreamParameters<'_>,
    extra: &[(&str, &str)],
) -> Response {
    let stream = parameters.resumed.unwrap_or(0);
    let token = app
        .config()
        .auth_token()
        .map(|auth_token| StreamKey::derive(auth_token).token(parameters.call_sid, stream));
    // The action names the stream it follows, so a replayed request for an earlier stream spends
    // nothing (docs/reference.md#after-stream).
    let action = format!(
        "{}?{}={stream}",
        after_stream_url(app, headers),
        super::STREAM_NUMBER
    );
    let body = twiml::connect_with(
        &action,
        &stream_url(app, headers),
        parameters,
        token.as_deref(),
        extra,
    );
    xml(StatusCode::OK, body)
}

pub(super) fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The configured reject mode (docs/reference.md#configuration `REJECT_MODE`). A 503's body says
/// why (it is no secret, and an operator reading Twilio's debugger needs it); the caller hears the
/// same either way.
pub(super) fn reject(app: &App, reason: RejectReason) -> Response {
    let reject = &app.config().reject;
    match reject.mode {
        RejectMode::ServiceUnavailable => {
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                refusal_text(reason),
            )
                .into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(reject.retry_after_secs),
            );
            response
        }
        RejectMode::Twiml => fallback_twiml(app),
        RejectMode::Busy => xml(StatusCode::OK, twiml::reject_busy()),
    }
}

/// The `twiml` reject: `REJECT_MESSAGE`, then `REJECT_REDIRECT_URL` or hang up. Also what the
/// fallback endpoint answers, whatever `REJECT_MODE` is.
pub(super) fn fallback_twiml(app: &App) -> Response {
    let reject = &app.config().reject;
    xml(
        StatusCode::OK,
        twiml::say_then(&reject.message, reject.redirect_url.as_deref()),
    )
}

/// The 503 body for each refusal.
fn refusal_text(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::MaxConcurrent => "all lines are busy\n",
        RejectReason::TenantLimit => "all of this account's lines are busy (tenant limit)\n",
        RejectReason::Draining => "this replica is draining\n",
        RejectReason::Recovering => {
            "the state store lost its data; live calls are re-registering\n"
        }
        RejectReason::StoreUnavailable => "the state store is unreachable\n",
    }
}
