//! The relay over in-memory sockets in paused time: a stalled agent holds Twilio's side back (the
//! queue stays bounded, memory flat) and ends the bridge after the write stall; pings go out.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message as TwilioMessage;
use calls_core::call_sid::CallSid;
use calls_core::live_calls::LiveCall;
use calls_core::state::{CallState, EndReason};
use futures_util::{Sink, Stream};
use tungstenite::Message as AgentFrame;

use super::relay::{self, Opening, QUEUE_MESSAGES};
use crate::config::{BridgeConfig, BridgeUrl, Media};
use crate::stream::StreamContext;
use crate::stream::tests::{context, sample};

const CALL: &str = "CA00000000000000000000000000000001";

fn ctx() -> Arc<StreamContext> {
    let bridge = BridgeConfig {
        url: BridgeUrl::parse("ws://127.0.0.1:9/").expect("a ws:// URL"),
        headers: Vec::new(),
        connect_timeout: Duration::from_secs(5),
    };
    context(Media::Bridge(bridge))
}

/// Twilio as a firehose: an endless run of media frames, counting how many the relay pulled.
struct Firehose {
    pulled: Arc<AtomicUsize>,
}

impl Stream for Firehose {
    type Item = Result<TwilioMessage, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let n = self.pulled.fetch_add(1, Ordering::Relaxed);
        let text = format!(
            r#"{{"event":"media","sequenceNumber":"{n}","streamSid":"MZ1","media":{{"payload":"//8A"}}}}"#
        );
        Poll::Ready(Some(Ok(TwilioMessage::Text(text.into()))))
    }
}

impl Sink<TwilioMessage> for Firehose {
    type Error = axum::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, _: TwilioMessage) -> Result<(), Self::Error> {
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// An agent that takes `accepts` messages, then never reads again, and never says anything.
struct StalledAgent {
    accepts: usize,
    taken: Arc<AtomicUsize>,
}

impl Stream for StalledAgent {
    type Item = Result<AgentFrame, tungstenite::Error>;
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Pending
    }
}

impl Sink<AgentFrame> for StalledAgent {
    type Error = tungstenite::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.taken.load(Ordering::Relaxed) < self.accepts {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
    fn start_send(self: Pin<&mut Self>, _: AgentFrame) -> Result<(), Self::Error> {
        self.taken.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }
}

fn opening() -> Opening {
    Opening {
        connected: Some(r#"{"event":"connected"}"#.into()),
        start: r#"{"event":"start"}"#.into(),
        call_sid: CALL.into(),
        account_sid: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_agent_holds_twilio_back_with_a_bounded_queue_and_ends_the_bridge() {
    let ctx = ctx();
    let live = LiveCall::new(
        CallSid::parse(CALL).unwrap(),
        "token".into(),
        CallState::reserved(CALL, "unit"),
    );
    let pulled = Arc::new(AtomicUsize::new(0));
    let taken = Arc::new(AtomicUsize::new(0));
    let mut twilio = Firehose {
        pulled: pulled.clone(),
    };
    let agent = StalledAgent {
        accepts: 100,
        taken: taken.clone(),
    };
    let started = tokio::time::Instant::now();
    let ending = relay::run(
        &ctx,
        &mut twilio,
        &live,
        "MZ1",
        opening(),
        Duration::from_secs(5),
        std::future::ready(Ok(agent)),
    )
    .await;
    assert_eq!(ending.reason, EndReason::BridgeStalled);
    assert_eq!(ending.close.map(|(code, _)| code), Some(1000));
    let waited = started.elapsed();
    assert!(
        waited >= ctx.timeouts.write_stall,
        "stalled after {waited:?}"
    );
    // What was read from Twilio is what the agent took plus at most one queue: Twilio's side
    // was not read once the queue filled, however long the agent stalled.
    let pulled = pulled.load(Ordering::Relaxed);
    let taken = taken.load(Ordering::Relaxed);
    assert_eq!(taken, 100);
    assert!(
        pulled <= taken + QUEUE_MESSAGES + 1,
        "pulled {pulled} with {taken} taken"
    );
    assert_eq!(
        sample(&ctx.metrics, "bridge_failures_total{reason=\"stalled\"}"),
        1
    );
}

/// An agent that reads everything and never speaks: only pings and Twilio's messages reach it.
struct QuietAgent {
    frames: Arc<std::sync::Mutex<Vec<AgentFrame>>>,
}

impl Stream for QuietAgent {
    type Item = Result<AgentFrame, tungstenite::Error>;
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Pending
    }
}

impl Sink<AgentFrame> for QuietAgent {
    type Error = tungstenite::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: AgentFrame) -> Result<(), Self::Error> {
        self.frames.lock().unwrap().push(item);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// Twilio, quiet after its opening: never sends, takes everything.
struct QuietTwilio;

impl Stream for QuietTwilio {
    type Item = Result<TwilioMessage, axum::Error>;
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Pending
    }
}

impl Sink<TwilioMessage> for QuietTwilio {
    type Error = axum::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, _: TwilioMessage) -> Result<(), Self::Error> {
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(start_paused = true)]
async fn the_agent_is_pinged_every_20_s_and_a_silent_twilio_times_out() {
    let ctx = ctx();
    let live = LiveCall::new(
        CallSid::parse(CALL).unwrap(),
        "token".into(),
        CallState::reserved(CALL, "unit"),
    );
    let frames = Arc::new(std::sync::Mutex::new(Vec::new()));
    let agent = QuietAgent {
        frames: frames.clone(),
    };
    let ending = relay::run(
        &ctx,
        &mut QuietTwilio,
        &live,
        "MZ1",
        opening(),
        Duration::from_secs(5),
        std::future::ready(Ok(agent)),
    )
    .await;
    // Twilio said nothing for 30 s: idle timeout; the agent got a stop and a close.
    assert_eq!(ending.reason, EndReason::IdleTimeout);
    let frames = frames.lock().unwrap();
    let kinds: Vec<&str> = frames
        .iter()
        .map(|f| match f {
            AgentFrame::Text(t) if t.contains("\"stop\"") => "stop",
            AgentFrame::Text(_) => "text",
            AgentFrame::Ping(_) => "ping",
            AgentFrame::Close(_) => "close",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["text", "text", "ping", "stop", "close"]);
}

/// Twilio sending `messages` at once, then nothing more.
struct Burst {
    messages: std::collections::VecDeque<String>,
}

impl Burst {
    fn media(count: usize, payload_bytes: usize) -> Self {
        let payload = "A".repeat(payload_bytes);
        Self {
            messages: (0..count)
                .map(|n| {
                    format!(
                        r#"{{"event":"media","sequenceNumber":"{n}","streamSid":"MZ1","media":{{"payload":"{payload}"}}}}"#
                    )
                })
                .collect(),
        }
    }
}

impl Stream for Burst {
    type Item = Result<TwilioMessage, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.messages.pop_front() {
            Some(text) => Poll::Ready(Some(Ok(TwilioMessage::Text(text.into())))),
            None => Poll::Pending,
        }
    }
}

impl Sink<TwilioMessage> for Burst {
    type Error = axum::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, _: TwilioMessage) -> Result<(), Self::Error> {
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// Relays `twilio` to an agent that never answers its handshake; returns the drops counted.
async fn dial_never_answered(twilio: &mut Burst, connect_timeout: Duration) -> u64 {
    let ctx = ctx();
    let live = LiveCall::new(
        CallSid::parse(CALL).unwrap(),
        "token".into(),
        CallState::reserved(CALL, "unit"),
    );
    let ending = relay::run(
        &ctx,
        twilio,
        &live,
        "MZ1",
        opening(),
        connect_timeout,
        std::future::pending::<Result<StalledAgent, super::dial::DialError>>(),
    )
    .await;
    assert_eq!(ending.reason, EndReason::BridgeConnectFailed);
    assert!(twilio.messages.is_empty(), "Twilio is read to the end");
    sample(
        &ctx.metrics,
        "media_messages_dropped_total{reason=\"dial_queue_full\"}",
    )
}

#[tokio::test(start_paused = true)]
async fn what_waits_for_the_agent_is_bounded_and_the_rest_dropped_and_counted() {
    // 1.5 s of audio rounds up to 2 s: 100 frames plus 64 of room, `connected` and `start` in it.
    let cap = relay::dial_queue_cap(Duration::from_millis(1500));
    assert_eq!(cap, 164);
    let dropped =
        dial_never_answered(&mut Burst::media(1000, 4), Duration::from_millis(1500)).await;
    assert_eq!(dropped, 1000 - (164 - 2) as u64);

    // A connect timeout of an hour still holds 30 s of audio at most ...
    assert_eq!(
        relay::dial_queue_cap(Duration::from_secs(3600)),
        30 * 50 + 64
    );
    // ... and 1 MiB: 60 KiB messages stop after 17.
    let dropped =
        dial_never_answered(&mut Burst::media(40, 60 * 1024), Duration::from_secs(5)).await;
    assert_eq!(dropped, 40 - 17);
}
