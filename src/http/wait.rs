//! `POST /twilio/wait` and the waiting room's answers (docs/reference.md#waiting-room): a call over
//! the cap waits in line, comes back every `WAIT_POLL_SECS`, and is connected, kept, or sent on.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use calls_core::call_sid::CallSid;
use calls_core::calls::{Intake, WaitAnswer, WebhookCall};
use calls_core::wait::OverflowReason;
use twilio::twiml;

use super::turned_away::hand_off;
use super::urls::{stream_url, wait_url};
use super::voice::{self, connect, fallback_twiml, reject, xml};
use super::{TwilioForm, TwilioRequest, twilio_call_form};
use crate::app::App;

pub(super) async fn handle(State(app): State<Arc<App>>, request: TwilioRequest) -> Response {
    let (form, call_sid) = match twilio_call_form(&app, &request) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    let intake = voice::intake(&app).await;
    let digit = form
        .get("Digits")
        .is_some_and(|d| d.starts_with(app.config().waiting_room.overflow_digit));
    let call = webhook_call(&app, &request.headers, &form);
    visit(
        &app,
        &request.headers,
        &call_sid,
        &form,
        call,
        intake,
        digit,
        Via::Wait,
    )
    .await
}

/// `POST /twilio/voice` with the waiting room on (docs/reference.md#waiting-room): an inbound call
/// visits the line, which admits it at once when a slot is free that nobody in line could use.
/// Without the waiting room, and for a call placed through the REST API (it holds its slot before
/// it rings, and never waits), the voice webhook as `voice.rs` answers it.
pub(super) async fn voice_webhook(State(app): State<Arc<App>>, request: TwilioRequest) -> Response {
    if app.calls().waiting_room().is_none() {
        return voice::handle(State(app), request).await;
    }
    let (form, call_sid) = match twilio_call_form(&app, &request) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    if form
        .get("Direction")
        .is_some_and(|d| d.starts_with("outbound"))
    {
        return voice::handle(State(app), request).await;
    }
    let intake = voice::intake(&app).await;
    let call = webhook_call(&app, &request.headers, &form);
    visit(
        &app,
        &request.headers,
        &call_sid,
        &form,
        call,
        intake,
        false,
        Via::Voice,
    )
    .await
}

/// Where a visit came from: the voice webhook (the call not yet answered: a refusal is the reject
/// mode) or `/twilio/wait` (the call is answered and on hold: a refusal is the spoken fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Voice,
    Wait,
}

/// What the webhook tells the core about the call.
pub(super) fn webhook_call(app: &App, headers: &HeaderMap, form: &TwilioForm<'_>) -> WebhookCall {
    WebhookCall {
        account_sid: form.get("AccountSid").map(str::to_owned),
        from: form.get("From").map(str::to_owned),
        to: form.get("To").map(str::to_owned),
        stream_url: Some(stream_url(app, headers).into_owned()),
    }
}

/// One visit to the line, answered.
#[allow(clippy::too_many_arguments)]
pub(super) async fn visit(
    app: &App,
    headers: &HeaderMap,
    call_sid: &CallSid,
    form: &TwilioForm<'_>,
    call: WebhookCall,
    intake: Intake,
    digit: bool,
    via: Via,
) -> Response {
    match app.calls().visit_line(call_sid, call, digit, intake).await {
        WaitAnswer::Connect { .. } => {
            let parameters = twiml::StreamParameters {
                call_sid: call_sid.as_str(),
                from_number: form.get("From"),
                to_number: form.get("To"),
                resumed: None,
            };
            connect(app, headers, &parameters)
        }
        WaitAnswer::Wait { position, announce } => hold(app, headers, position, announce),
        WaitAnswer::Overflow { reason } => {
            hand_off(app, call_sid, form);
            if via == Via::Voice && reason == OverflowReason::Full {
                // Never answered: the line was full, the reject mode as configured.
                reject(app, calls_core::calls::RejectReason::MaxConcurrent)
            } else {
                fallback_twiml(app)
            }
        }
        WaitAnswer::Reject(reason) => {
            hand_off(app, call_sid, form);
            match via {
                Via::Voice => reject(app, reason),
                Via::Wait => fallback_twiml(app),
            }
        }
        WaitAnswer::Ended => xml(StatusCode::OK, twiml::hangup()),
    }
}

/// The hold: `WAIT_MESSAGE` with the position when it changed, hold music or silence, the digit
/// gathered, and back to `/twilio/wait`, in about `WAIT_POLL_SECS` all told.
fn hold(app: &App, headers: &HeaderMap, position: u64, announce: bool) -> Response {
    let room = &app.config().waiting_room;
    let poll = app
        .calls()
        .waiting_room()
        .map_or(5, |settings| settings.poll.as_secs());
    let message = room.message.replace("{position}", &position.to_string());
    let say = announce.then_some(message.as_str());
    // What is left of the poll after the message is silence; a long message makes the hold
    // longer, and the line sizes its margins from the longest (WaitSettings::hold).
    let (pause_secs, _) = twiml::hold_timing(poll, say.map_or(0.0, twiml::spoken_secs));
    let url = wait_url(app, headers);
    let body = twiml::hold(&twiml::Hold {
        wait_url: &url,
        say,
        music_url: room.hold_music_url.as_deref(),
        pause_secs,
    });
    xml(StatusCode::OK, body)
}
