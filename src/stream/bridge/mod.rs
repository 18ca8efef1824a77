//! `MEDIA_HANDLER=bridge` (docs/reference.md#bridge): each admitted call relayed to the team's
//! voice agent, which sees exactly what Twilio would have sent it. `dial` opens the agent's socket,
//! `relay` copies both ways, `agent_message` reads what the agent sends.

mod agent_message;
mod dial;
mod relay;
#[cfg(test)]
mod tests;

use super::StreamContext;
use super::ending::Ending;
use super::socket::TwilioSocket;
use super::start::Started;
use crate::config::BridgeConfig;
use relay::Opening;

/// Bridges one admitted call: dials `BRIDGE_URL` for it and relays until either side ends.
pub(crate) async fn serve<S: TwilioSocket>(
    ctx: &StreamContext,
    config: &BridgeConfig,
    twilio: &mut S,
    started: &Started,
) -> Ending {
    let url = dial::render_url(config, &started.live.snapshot());
    relay::run(
        ctx,
        twilio,
        &started.live,
        &started.stream_sid,
        Opening::of(started),
        config.connect_timeout,
        // Boxed: the TLS handshake's state is large, and lives only until the agent answers.
        // A URL refused for the call's values fails as any unreachable agent does.
        Box::pin(async move { dial::dial(config, &url?).await }),
    )
    .await
}
