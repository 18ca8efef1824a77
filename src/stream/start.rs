//! A stream's first phase: read until Twilio's `start`, then take the call's lock and its slot in
//! one call to the core; the `start` deadline, the drain and bad input close the socket instead.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use calls_core::call_sid::CallSid;
use calls_core::calls::{RESUMED_PARAMETER, StreamRefusal, StreamStart};
use calls_core::live_calls::LiveCall;
use calls_core::store::AdmitPolicy;
use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use twilio::messages::{self, Inbound};
use twilio::stream_token;

use super::StreamContext;
use super::ending::{Ending, close};
use super::socket::{self, Read, TwilioSocket, read_twilio};
use crate::metrics::MediaDrop;

/// A call admitted at its `start`: what either mode goes on from.
pub(crate) struct Started {
    pub live: Arc<LiveCall>,
    pub stream_sid: String,
    /// Twilio's `connected` (if it came) and `start`, as Twilio wrote them: a bridge sends them
    /// to the agent first.
    pub connected: Option<Utf8Bytes>,
    pub start: Utf8Bytes,
    pub account_sid: Option<String>,
}

/// Reads until a valid `start` arrives and the call is admitted, or the socket must close (then
/// closes it and returns `None`).
pub(crate) async fn await_start<S: TwilioSocket>(
    ctx: &StreamContext,
    socket: &mut S,
) -> Option<Started> {
    let mut connected = None;
    let deadline = Instant::now() + ctx.timeouts.start;
    let stop = ctx.lifecycle.stop_streams.clone();
    loop {
        let message = tokio::select! {
            biased;
            // The drain is over (or this socket arrived after its deadline): no call to end.
            () = stop.cancelled() => {
                let (code, reason) = Ending::DRAIN_CLOSE;
                socket::close(socket, code, reason).await;
                return None;
            }
            message = socket.next() => message,
            _ = tokio::time::sleep_until(deadline) => {
                ctx.metrics.dropped(MediaDrop::NoStart);
                debug!("no start message in time");
                socket::close(socket, close::POLICY, "no start message").await;
                return None;
            }
        };
        let text = match read_twilio(message, &ctx.metrics) {
            Read::Text(text) => text,
            Read::Skip => continue,
            Read::End(ending) => {
                if let Some((code, reason)) = ending.close {
                    socket::close(socket, code, reason).await;
                }
                return None;
            }
        };
        let start = match messages::parse(&text) {
            Ok(Inbound::Start(start)) => start,
            Ok(Inbound::Connected(_)) => {
                connected = Some(text.clone());
                continue;
            }
            Ok(Inbound::Stop(_)) => return None,
            Ok(Inbound::Media(_)) => {
                ctx.metrics.dropped(MediaDrop::MediaBeforeStart);
                continue;
            }
            Ok(_) => {
                ctx.metrics.dropped(MediaDrop::BeforeStart);
                continue;
            }
            Err(err) => {
                ctx.metrics.dropped(MediaDrop::of(&err));
                continue;
            }
        };
        let Ok(call_sid) = CallSid::parse(&start.call_sid) else {
            ctx.metrics.dropped(MediaDrop::BadStart);
            warn!(call_sid = %start.call_sid, "start with an invalid callSid");
            socket::close(socket, close::POLICY, "invalid callSid").await;
            return None;
        };
        let bound = is_bound(ctx, &call_sid, &start.custom_parameters);
        let stream_sid = start.stream_sid.into_owned();
        let request = StreamStart {
            bound,
            stream_sid: stream_sid.clone(),
            account_sid: start
                .account_sid
                .map(Cow::into_owned)
                .filter(|s| !s.is_empty()),
            media_format: Some(start.media_format),
            custom_parameters: start.custom_parameters,
        };
        let account_sid = request.account_sid.clone();
        let policy = if ctx.lifecycle.is_draining() {
            AdmitPolicy::ExistingOnly
        } else {
            AdmitPolicy::MayTakeSlot
        };
        return match ctx.calls.start_stream(&call_sid, request, policy).await {
            Ok(live) => Some(Started {
                live,
                stream_sid,
                connected,
                start: text,
                account_sid,
            }),
            Err(StreamRefusal::Unbound) => {
                ctx.metrics.dropped(MediaDrop::BadToken);
                socket::close(
                    socket,
                    close::POLICY,
                    "stream token does not match the call",
                )
                .await;
                None
            }
            Err(StreamRefusal::LockedElsewhere) => {
                socket::close(socket, close::POLICY, "call is streaming elsewhere").await;
                None
            }
            Err(StreamRefusal::Rejected(reason)) => {
                info!(%call_sid, reason = reason.as_str(), "stream refused");
                socket::close(socket, close::TRY_AGAIN_LATER, reason.as_str()).await;
                None
            }
        };
    }
}

/// Whether the `start` carries its call's stream token for the stream it claims to be
/// (docs/reference.md#stream-token): the first (0), or the continuation its `resumed` names.
/// Always true with tokens off; a `resumed` that is no number matches no token.
fn is_bound(
    ctx: &StreamContext,
    call_sid: &CallSid,
    parameters: &std::collections::BTreeMap<String, String>,
) -> bool {
    let Some(key) = &ctx.stream_key else {
        return true;
    };
    let continuation = match parameters.get(RESUMED_PARAMETER) {
        None => Some(0),
        Some(value) => value.parse::<u32>().ok(),
    };
    match (continuation, parameters.get(stream_token::PARAMETER)) {
        (Some(continuation), Some(token)) => key.verify(call_sid.as_str(), continuation, token),
        _ => false,
    }
}
