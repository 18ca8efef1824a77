//! The WhatsApp hand-off of a caller turned away, as the Twilio handlers start it: the voice
//! webhook's reject mode and the waiting room's overflow (docs/reference.md#waiting-room).

use calls_core::call_sid::CallSid;

use super::TwilioForm;
use crate::app::App;
use crate::whatsapp::TurnedAway;

/// The WhatsApp message for a caller turned away, where `WHATSAPP_FROM` is set: sent in its own
/// task, so the TwiML answer never waits for it.
pub(super) fn hand_off(app: &App, call_sid: &CallSid, form: &TwilioForm<'_>) {
    let Some(whatsapp) = app.whatsapp() else {
        return;
    };
    let tenant = app
        .calls()
        .config()
        .tenant_key
        .of_webhook(form.get("AccountSid"), form.get("To"))
        .ok()
        .flatten();
    whatsapp.hand_off(TurnedAway {
        call_sid: call_sid.to_string(),
        from: form.get("From").map(str::to_owned),
        to: form.get("To").map(str::to_owned),
        tenant,
    });
}
