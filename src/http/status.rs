//! `POST /twilio/status`: Twilio's call status callback. A final status releases the call's slot;
//! every request with a `CallSid` gets 204, known call or not.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{TwilioRequest, twilio_call_form};
use crate::app::App;

pub(super) async fn handle(State(app): State<Arc<App>>, request: TwilioRequest) -> Response {
    let (form, call_sid) = match twilio_call_form(&app, &request) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    let call_status = form.get("CallStatus").unwrap_or("");
    // docs/reference.md#outbound: a call the cluster placed; its record follows Twilio's word.
    if let Some(id) = crate::outbound::id_of(&request.uri) {
        crate::outbound::status_callback(&app, &id, &call_sid, call_status).await;
    }
    app.calls().call_status(&call_sid, call_status).await;
    StatusCode::NO_CONTENT.into_response()
}
