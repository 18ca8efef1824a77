//! `POST|GET /twilio/fallback`: for the number's Fallback URL. Answers the `twiml` reject whatever
//! `REJECT_MODE` is, so a refused or failed call never hears Twilio's "application error".

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::voice::fallback_twiml;
use super::{TwilioRequest, twilio_form};
use crate::app::App;

pub(super) async fn handle(State(app): State<Arc<App>>, request: TwilioRequest) -> Response {
    let form = match twilio_form(&app, &request) {
        Ok(form) => form,
        Err(refused) => return refused.into_response(),
    };
    // Twilio says what failed: our 503 (the reject mode), a timeout, or an error it could not parse.
    warn!(
        call_sid = form.get("CallSid").unwrap_or(""),
        error_code = form.get("ErrorCode").unwrap_or(""),
        error_url = form.get("ErrorUrl").unwrap_or(""),
        "Twilio requested the fallback URL; answering the fallback message"
    );
    app.metrics().fallbacks_served.inc();
    fallback_twiml(&app)
}
