//! `MEDIA_HANDLER=bridge` (SPEC §8): each admitted call relayed to the team's voice agent, which sees
//! exactly what Twilio would have sent it. `dial` opens the agent's socket, `relay` copies both ways.

pub mod agent_message;
pub mod dial;
pub mod relay;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use calls_core::live_calls::LiveCall;

use crate::app::App;
use crate::stream::ending::Ending;
use relay::{Opening, TwilioSocket};

/// `bridge_failures_total{reason}`: why an agent could not be reached, or was lost or stalled.
pub const FAILURE_REASONS: [&str; 8] = [
    "connect_timeout",
    "connect_refused",
    "connect_error",
    "tls",
    "handshake_rejected",
    "handshake",
    "lost",
    "stalled",
];

/// `bridge_messages_total{direction}`.
pub const DIRECTIONS: [&str; 2] = ["to_agent", "to_twilio"];

/// `bridge_messages_dropped_total{reason}`: what an agent sent that never reached Twilio.
pub const DROP_REASONS: [&str; 6] = [
    "unknown_event",
    "not_json",
    "bad_message",
    "binary_frame",
    "too_large",
    "cleared",
];

/// Bridges one admitted call: dials `BRIDGE_URL` for it and relays until either side ends.
pub(crate) async fn serve<S: TwilioSocket>(
    app: &Arc<App>,
    twilio: &mut S,
    live: &LiveCall,
    stream_sid: &str,
    opening: Opening,
) -> Ending {
    let Some(config) = app.config.bridge.as_ref() else {
        // Config::from_raw sets `bridge` exactly when MEDIA_HANDLER=bridge.
        return Ending::new(
            calls_core::state::EndReason::Error,
            Some((
                crate::stream::ending::close::INTERNAL,
                "bridge not configured",
            )),
        );
    };
    let url = dial::render_url(config, &live.snapshot());
    relay::run(
        app,
        twilio,
        live,
        stream_sid,
        opening,
        config.connect_timeout,
        // Boxed: the TLS handshake's state is large, and lives only until the agent answers.
        Box::pin(dial::dial(config, &url)),
    )
    .await
}
