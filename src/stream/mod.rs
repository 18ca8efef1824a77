//! Everything about one Twilio Media Streams socket after the upgrade
//! (docs/reference.md#media-stream): the `start` (lock and slot), then one of two modes, chosen
//! once: each frame through a handler (`echo`, `silent`), or the call relayed to a voice agent
//! (`bridge`); then the ending.
//!
//! The stream gets what it needs as a [`StreamContext`], built by the HTTP layer: it never sees the
//! HTTP state, and it touches Redis only at the start and the end, never per frame.

pub(crate) mod bridge;
mod ending;
mod frames;
pub(crate) mod handler;
mod socket;
mod start;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use calls_core::calls::Calls;
use tracing::{Instrument, info_span};
use twilio::stream_token::StreamKey;

use crate::config::{Media, StreamTimeouts};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use ending::Ending;
use start::Started;

pub(crate) use self::socket::{MAX_MESSAGE_BYTES, TwilioSocket};

/// What a stream needs from its replica.
pub(crate) struct StreamContext {
    /// The call lifecycle: the stream's start and end.
    pub calls: Arc<Calls>,
    pub metrics: Arc<Metrics>,
    /// Whether the replica drains (a draining replica starts no new call), and the drain's
    /// deadline signal, which ends every stream still open.
    pub lifecycle: Arc<Lifecycle>,
    pub timeouts: StreamTimeouts,
    /// `MEDIA_HANDLER`: the mode every call of this replica runs in.
    pub media: Media,
    /// The key of the stream tokens (docs/reference.md#stream-token), from `TWILIO_AUTH_TOKEN`;
    /// `None`: tokens are off, and every `start` counts as bound to its call.
    pub stream_key: Option<StreamKey>,
}

/// Serves one upgraded socket to the end.
pub(crate) async fn serve<S: TwilioSocket>(ctx: &StreamContext, mut socket: S) {
    ctx.metrics.sockets_open.inc();
    if let Some(started) = start::await_start(ctx, &mut socket).await {
        let ending = live(ctx, &mut socket, &started).await;
        let span = info_span!("call", call_sid = %started.live.call_sid);
        async {
            // The ending is recorded before Twilio's socket closes: the after-stream request
            // Twilio sends next must read it (docs/reference.md#after-stream).
            ctx.calls.end_stream(&started.live, ending.reason).await;
            if let Some((code, reason)) = ending.close {
                socket::close(&mut socket, code, reason).await;
            }
        }
        .instrument(span)
        .await;
    }
    ctx.metrics.sockets_open.dec();
}

/// The live phase, in the replica's one mode. It runs outside the call's span: entering and
/// leaving it on every poll cost more than parsing the frame; its log lines name the call.
async fn live<S: TwilioSocket>(ctx: &StreamContext, socket: &mut S, started: &Started) -> Ending {
    let (mut echo, mut silent) = (handler::Echo, handler::Silent);
    let handler: &mut dyn handler::MediaHandler = match &ctx.media {
        Media::Echo => &mut echo,
        Media::Silent => &mut silent,
        // Boxed: an echo call's future stays as small as it was without the bridge.
        Media::Bridge(config) => {
            return Box::pin(bridge::serve(ctx, config, socket, started)).await;
        }
    };
    frames::run(ctx, socket, started, handler).await
}
