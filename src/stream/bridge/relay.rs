//! The two-socket loop of a bridged call (docs/reference.md#bridge): Twilio's text frames to the
//! agent byte for byte, the agent's `media`/`mark`/`clear` to Twilio with the call's `streamSid`,
//! bounded both ways.
//!
//! One task polls both sockets: each direction has a small queue, a socket is read only while its
//! queue has room, so a slow side holds the other back instead of growing memory; a write that
//! waits `write_stall` ends the call (`bridge_stalled` for the agent, `slow_consumer` for Twilio).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{Message as TwilioMessage, Utf8Bytes as TwilioText};
use bytes::{Bytes, BytesMut};
use calls_core::live_calls::LiveCall;
use calls_core::state::EndReason;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Interval, Sleep, sleep, timeout};
use tracing::{info, warn};
use tungstenite::Message as AgentFrame;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use twilio::messages::{self, Inbound};

use super::agent_message::{self, AgentMessage};
use super::dial::DialError;
use crate::metrics::{BridgeDrop, BridgeFailure, Direction, MediaDrop};
use crate::stream::StreamContext;
use crate::stream::ending::{Ending, close, ended_from_outside};
use crate::stream::socket::{
    MAX_MESSAGE_BYTES, Read, StopWatch, TwilioSocket, read_twilio, slow_consumer,
};
use crate::stream::start::Started;

/// Messages queued each way once the agent is connected: a few frames of slack, no more.
pub(super) const QUEUE_MESSAGES: usize = 64;
/// Audio frames a second (20 ms each): what waits while the agent is dialled is bounded by
/// `BRIDGE_CONNECT_TIMEOUT_SECS` of them, plus room for `connected`, `start`, marks and DTMF.
const FRAMES_PER_SECOND: usize = 50;
/// However long `BRIDGE_CONNECT_TIMEOUT_SECS` is, what waits for the agent never passes 30 s of
/// audio nor 1 MiB (a frame is ~330 bytes; 64 KiB messages would reach it after 16): past either
/// bound Twilio's messages are dropped and counted (`media_messages_dropped_total{reason=
/// "dial_queue_full"}`), and still read, so a `stop` ends the call.
const DIAL_QUEUE_MAX_MESSAGES: usize = 30 * FRAMES_PER_SECOND + QUEUE_MESSAGES;
const DIAL_QUEUE_MAX_BYTES: usize = 1024 * 1024;
/// How often the agent is pinged, so idle proxies in between keep the socket.
pub(super) const PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long the last messages and the close may take on the way out of a call.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Relayed-message counters are shared by every call; batching keeps them quiet.
const COUNTER_BATCH: u64 = 64;

/// What the agent is sent first: Twilio's `connected` and `start`, as Twilio wrote them.
pub(super) struct Opening {
    pub connected: Option<TwilioText>,
    pub start: TwilioText,
    /// For a `stop` of our own when Twilio's socket closes without one.
    pub call_sid: String,
    pub account_sid: Option<String>,
}

impl Opening {
    pub(super) fn of(started: &Started) -> Self {
        Self {
            connected: started.connected.clone(),
            start: started.start.clone(),
            call_sid: started.live.call_sid.as_str().to_owned(),
            account_sid: started.account_sid.clone(),
        }
    }
}

/// An agent-side socket: tokio-tungstenite's client, or channels in the unit tests.
pub(super) trait AgentSocket:
    Stream<Item = Result<AgentFrame, tungstenite::Error>>
    + Sink<AgentFrame, Error = tungstenite::Error>
    + Unpin
    + Send
{
}
impl<T> AgentSocket for T where
    T: Stream<Item = Result<AgentFrame, tungstenite::Error>>
        + Sink<AgentFrame, Error = tungstenite::Error>
        + Unpin
        + Send
{
}

/// A message queued for Twilio; audio is marked so a `clear` can drop what it would overtake.
struct ForTwilio {
    message: TwilioMessage,
    is_media: bool,
}

/// One side's write state: nothing to write, or waiting since when for the peer to take more.
#[derive(Default)]
struct Writer {
    dirty: bool,
    waiting_since: Option<Instant>,
}

enum Event {
    Twilio(Option<Result<TwilioMessage, axum::Error>>),
    Agent(Option<Result<AgentFrame, tungstenite::Error>>),
    AgentWriteFailed,
    TwilioWriteFailed,
    AgentStalled,
    TwilioStalled,
    Ping,
    Idle,
    EndedOutside,
}

/// Relays one call: dials the agent (bounded by the connect timeout) while queueing what Twilio
/// sends, then copies both ways until one side ends. Returns how the call ended; the caller
/// records it and only then closes Twilio's socket (docs/reference.md#after-stream).
pub(super) async fn run<S, A, D>(
    ctx: &StreamContext,
    twilio: &mut S,
    live: &LiveCall,
    stream_sid: &str,
    opening: Opening,
    connect_timeout: Duration,
    dial: D,
) -> Ending
where
    S: TwilioSocket,
    A: AgentSocket,
    D: Future<Output = Result<A, DialError>>,
{
    let mut relay = Relay {
        ctx,
        live,
        stream_sid,
        media_head: messages::MediaHead::new(stream_sid),
        to_agent: VecDeque::new(),
        to_twilio: VecDeque::new(),
        stop_forwarded: false,
        call_sid: opening.call_sid,
        account_sid: opening.account_sid,
        out_text: BytesMut::new(),
        to_agent_count: 0,
        to_twilio_count: 0,
        frames_in: 0,
        frames_out: 0,
        to_agent_total: ctx.metrics.bridge_messages(Direction::ToAgent),
        to_twilio_total: ctx.metrics.bridge_messages(Direction::ToTwilio),
    };
    if let Some(connected) = opening.connected {
        relay.to_agent.push_back(agent_text(connected));
    }
    relay.to_agent.push_back(agent_text(opening.start));

    let mut stop = StopWatch::new(&ctx.lifecycle.stop_streams, live);
    let dialled = Instant::now();
    let mut agent = match relay.dial(twilio, &mut stop, connect_timeout, dial).await {
        Ok(agent) => agent,
        Err(ending) => {
            relay.flush_counters();
            return ending;
        }
    };
    let connect_time = dialled.elapsed();
    ctx.metrics
        .bridge_connect_duration
        .observe(connect_time.as_secs_f64());
    ctx.metrics.bridges_open.inc();
    info!(
        call_sid = %live.call_sid,
        connect_ms = connect_time.as_secs_f64() * 1000.0,
        queued = relay.to_agent.len(),
        "voice agent connected"
    );
    let ending = relay.relay(twilio, &mut agent, &mut stop).await;
    ctx.metrics.bridges_open.dec();
    relay.flush_counters();
    info!(
        call_sid = %live.call_sid,
        reason = ending.reason.as_str(),
        connect_ms = connect_time.as_secs_f64() * 1000.0,
        "voice agent bridge closed"
    );
    ending
}

/// Messages that may wait for the agent: `connect_timeout` of audio (rounded up), plus room for
/// `connected`, `start`, marks and DTMF, within [`DIAL_QUEUE_MAX_MESSAGES`].
pub(super) fn dial_queue_cap(connect_timeout: Duration) -> usize {
    let seconds = usize::try_from(connect_timeout.as_millis().div_ceil(1000)).unwrap_or(usize::MAX);
    FRAMES_PER_SECOND
        .saturating_mul(seconds)
        .saturating_add(QUEUE_MESSAGES)
        .min(DIAL_QUEUE_MAX_MESSAGES)
}

struct Relay<'a> {
    ctx: &'a StreamContext,
    live: &'a LiveCall,
    stream_sid: &'a str,
    /// The agent's audio frames share it: the SID escaped once per call, not per frame.
    media_head: messages::MediaHead,
    to_agent: VecDeque<AgentFrame>,
    to_twilio: VecDeque<ForTwilio>,
    /// Whether Twilio's `stop` went to the agent; else one of ours goes when the call ends.
    stop_forwarded: bool,
    call_sid: String,
    account_sid: Option<String>,
    out_text: BytesMut,
    to_agent_count: u64,
    to_twilio_count: u64,
    frames_in: u64,
    frames_out: u64,
    to_agent_total: Counter,
    to_twilio_total: Counter,
}

/// Twilio's text, as the agent's text frame: the same bytes, no copy.
fn agent_text(text: TwilioText) -> AgentFrame {
    let bytes = Bytes::from(text);
    // The bytes came from a UTF-8 string; the check cannot fail.
    match tungstenite::Utf8Bytes::try_from(bytes) {
        Ok(text) => AgentFrame::Text(text),
        Err(_) => AgentFrame::Text(tungstenite::Utf8Bytes::from_static("")),
    }
}

/// What to do with one message from Twilio.
enum FromTwilio {
    Forward(AgentFrame),
    Ignore,
    End(Ending),
}

impl Relay<'_> {
    /// Waits for the agent's handshake, reading and queueing Twilio's messages meanwhile.
    async fn dial<S: TwilioSocket, A: AgentSocket>(
        &mut self,
        twilio: &mut S,
        stop: &mut StopWatch,
        connect_timeout: Duration,
        dial: impl Future<Output = Result<A, DialError>>,
    ) -> Result<A, Ending> {
        let cap = dial_queue_cap(connect_timeout);
        let mut queued_bytes: usize = self.to_agent.iter().map(AgentFrame::len).sum();
        let dial = timeout(connect_timeout, dial);
        tokio::pin!(dial);
        loop {
            tokio::select! {
                biased;
                result = &mut dial => {
                    let err = match result {
                        Ok(Ok(agent)) => return Ok(agent),
                        Ok(Err(err)) => err,
                        Err(_) => DialError::Timeout,
                    };
                    self.ctx.metrics.bridge_failed(err.reason());
                    warn!(call_sid = %self.live.call_sid, reason = err.reason().as_str(), error = %err, "voice agent unreachable");
                    return Err(Ending::new(
                        EndReason::BridgeConnectFailed,
                        Some((close::NORMAL, "voice agent unreachable")),
                    ));
                }
                () = stop.stopped() => return Err(ended_from_outside(self.live)),
                message = twilio.next() => {
                    match self.read_twilio(message) {
                        FromTwilio::Forward(frame)
                            if self.to_agent.len() < cap
                                && queued_bytes + frame.len() <= DIAL_QUEUE_MAX_BYTES =>
                        {
                            queued_bytes += frame.len();
                            self.to_agent.push_back(frame);
                        }
                        FromTwilio::Forward(_) => self.ctx.metrics.dropped(MediaDrop::DialQueueFull),
                        FromTwilio::Ignore => {}
                        // Nothing reached the agent: the dial is dropped with the call.
                        FromTwilio::End(ending) => return Err(ending),
                    }
                }
            }
        }
    }

    async fn relay<S: TwilioSocket, A: AgentSocket>(
        &mut self,
        twilio: &mut S,
        agent: &mut A,
        stop: &mut StopWatch,
    ) -> Ending {
        let stall = self.ctx.timeouts.write_stall;
        let idle_timeout = self.ctx.timeouts.idle;
        let mut agent_writer = Writer::default();
        let mut twilio_writer = Writer::default();
        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stall_timer = sleep(stall);
        tokio::pin!(stall_timer);
        let mut stall_armed = false;
        let mut last_heard = Instant::now();
        let idle = sleep(idle_timeout);
        tokio::pin!(idle);
        let mut agent_first = false;
        loop {
            let event = poll_fn(|cx| {
                self.poll_event(
                    cx,
                    &mut Pollers {
                        twilio,
                        agent,
                        agent_writer: &mut agent_writer,
                        twilio_writer: &mut twilio_writer,
                        stop: &mut *stop,
                        ping: &mut ping,
                        stall_timer: stall_timer.as_mut(),
                        stall_armed: &mut stall_armed,
                        stall,
                        idle: idle.as_mut(),
                        agent_first: &mut agent_first,
                    },
                )
            })
            .await;
            match event {
                Event::Twilio(message) => {
                    last_heard = Instant::now();
                    match self.read_twilio(message) {
                        FromTwilio::Forward(frame) => self.to_agent.push_back(frame),
                        FromTwilio::Ignore => {}
                        FromTwilio::End(ending) => {
                            self.finish_agent(agent, twilio).await;
                            return ending;
                        }
                    }
                }
                Event::Agent(message) => {
                    if let Some(ending) = self.read_agent(message) {
                        if ending.reason == EndReason::AgentHangup {
                            // The agent's last words reach the caller before the stream closes.
                            self.drain_to_twilio(twilio).await;
                            let _ = timeout(FINISH_TIMEOUT, agent.close()).await;
                        }
                        return ending;
                    }
                }
                Event::AgentWriteFailed => return self.lost("write_failed"),
                Event::TwilioWriteFailed => {
                    self.finish_agent(agent, twilio).await;
                    return Ending::new(EndReason::Disconnected, None);
                }
                Event::AgentStalled => {
                    self.ctx.metrics.bridge_failed(BridgeFailure::Stalled);
                    warn!(call_sid = %self.live.call_sid, ?stall, "voice agent stopped reading; ending the bridge");
                    return Ending::new(
                        EndReason::BridgeStalled,
                        Some((close::NORMAL, "voice agent stopped reading")),
                    );
                }
                Event::TwilioStalled => {
                    let ending = slow_consumer(&self.ctx.metrics);
                    warn!(call_sid = %self.live.call_sid, ?stall, "peer stopped reading; closing");
                    self.finish_agent(agent, twilio).await;
                    return ending;
                }
                Event::Ping => {
                    if self.to_agent.len() < QUEUE_MESSAGES {
                        self.to_agent.push_back(AgentFrame::Ping(Bytes::new()));
                    }
                }
                Event::Idle => {
                    if last_heard.elapsed() >= idle_timeout {
                        self.finish_agent(agent, twilio).await;
                        return Ending::new(
                            EndReason::IdleTimeout,
                            Some((close::NORMAL, "idle timeout")),
                        );
                    }
                    idle.as_mut().reset(last_heard + idle_timeout);
                }
                Event::EndedOutside => {
                    self.finish_agent(agent, twilio).await;
                    return ended_from_outside(self.live);
                }
            }
            if self.to_agent_count + self.to_twilio_count >= COUNTER_BATCH {
                self.flush_counters();
            }
        }
    }

    fn poll_event<S: TwilioSocket, A: AgentSocket>(
        &mut self,
        cx: &mut Context<'_>,
        p: &mut Pollers<'_, S, A>,
    ) -> Poll<Event> {
        if p.stop.poll_stopped(cx).is_ready() {
            return Poll::Ready(Event::EndedOutside);
        }
        // Writes first: what is queued leaves before more is read.
        match write_agent(cx, p.agent, &mut self.to_agent, p.agent_writer) {
            Ok(sent) => self.to_agent_count += sent,
            Err(()) => return Poll::Ready(Event::AgentWriteFailed),
        }
        match write_twilio(cx, p.twilio, &mut self.to_twilio, p.twilio_writer) {
            Ok((sent, media)) => {
                self.to_twilio_count += sent;
                self.frames_out += media;
                for _ in 0..media {
                    self.live.count_out();
                }
            }
            Err(()) => return Poll::Ready(Event::TwilioWriteFailed),
        }
        // One timer watches whichever write has waited longest.
        let oldest = match (p.agent_writer.waiting_since, p.twilio_writer.waiting_since) {
            (Some(a), Some(t)) => Some(a.min(t)),
            (a, t) => a.or(t),
        };
        if let Some(since) = oldest {
            let deadline = since + p.stall;
            if !*p.stall_armed || p.stall_timer.deadline() != deadline {
                p.stall_timer.as_mut().reset(deadline);
                *p.stall_armed = true;
            }
            if p.stall_timer.as_mut().poll(cx).is_ready() {
                *p.stall_armed = false;
                let now = Instant::now();
                if p.agent_writer
                    .waiting_since
                    .is_some_and(|s| now >= s + p.stall)
                {
                    return Poll::Ready(Event::AgentStalled);
                }
                return Poll::Ready(Event::TwilioStalled);
            }
        } else {
            *p.stall_armed = false;
        }
        // Reads, alternating which side goes first so neither starves the other.
        *p.agent_first = !*p.agent_first;
        for agent_turn in [*p.agent_first, !*p.agent_first] {
            if agent_turn {
                if self.to_twilio.len() < QUEUE_MESSAGES
                    && let Poll::Ready(message) = p.agent.poll_next_unpin(cx)
                {
                    return Poll::Ready(Event::Agent(message));
                }
            } else if self.to_agent.len() < QUEUE_MESSAGES
                && let Poll::Ready(message) = p.twilio.poll_next_unpin(cx)
            {
                return Poll::Ready(Event::Twilio(message));
            }
        }
        if p.ping.poll_tick(cx).is_ready() {
            return Poll::Ready(Event::Ping);
        }
        if p.idle.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Event::Idle);
        }
        Poll::Pending
    }

    /// Reads one of Twilio's messages: every text frame goes to the agent as it came; the ones
    /// the call's state tracks are counted on the way.
    fn read_twilio(&mut self, message: Option<Result<TwilioMessage, axum::Error>>) -> FromTwilio {
        let text = match read_twilio(message, &self.ctx.metrics) {
            Read::Text(text) => text,
            Read::Skip => return FromTwilio::Ignore,
            Read::End(ending) => return FromTwilio::End(ending),
        };
        let mut stop = false;
        match messages::parse(&text) {
            Ok(Inbound::Media(media)) => {
                if let Some((_, bytes)) = media.checked_base64() {
                    self.live.count_in(bytes);
                    self.frames_in += 1;
                }
            }
            Ok(Inbound::Mark(mark)) => self.live.update(|s| s.marks.push(mark.name.to_string())),
            Ok(Inbound::Dtmf(dtmf)) => self.live.update(|s| s.dtmf.push_str(&dtmf.digit)),
            Ok(Inbound::Stop(_)) => stop = true,
            // Forwarded as they came: the agent sees what Twilio sent.
            Ok(Inbound::Connected(_) | Inbound::Start(_)) | Err(_) => {}
        }
        let frame = agent_text(text);
        if stop {
            self.to_agent.push_back(frame);
            self.stop_forwarded = true;
            return FromTwilio::End(Ending::new(EndReason::Stop, None));
        }
        FromTwilio::Forward(frame)
    }

    /// Reads one of the agent's messages: `media`, `mark` and `clear` are queued for Twilio with
    /// the call's `streamSid`; the rest is dropped and counted. `Some` ends the call.
    fn read_agent(
        &mut self,
        message: Option<Result<AgentFrame, tungstenite::Error>>,
    ) -> Option<Ending> {
        let text = match message {
            Some(Ok(AgentFrame::Text(text))) => text,
            Some(Ok(AgentFrame::Binary(_))) => {
                self.ctx.metrics.bridge_dropped(BridgeDrop::BinaryFrame, 1);
                return None;
            }
            Some(Ok(AgentFrame::Close(frame))) => {
                let code = frame.as_ref().map(|f| f.code);
                if matches!(code, Some(CloseCode::Normal | CloseCode::Away)) {
                    info!(call_sid = %self.live.call_sid, "voice agent hung up");
                    return Some(Ending::new(
                        EndReason::AgentHangup,
                        Some((close::NORMAL, "voice agent hung up")),
                    ));
                }
                return Some(self.lost("abnormal_close"));
            }
            Some(Ok(_)) => return None,
            None => return Some(self.lost("eof")),
            Some(Err(err)) => {
                warn!(call_sid = %self.live.call_sid, error = %err, "voice agent socket failed");
                return Some(self.lost("read_failed"));
            }
        };
        if text.len() > MAX_MESSAGE_BYTES {
            self.ctx.metrics.bridge_dropped(BridgeDrop::TooLarge, 1);
            return None;
        }
        let message = match agent_message::parse(&text) {
            Ok(message) => message,
            Err(drop) => {
                self.ctx.metrics.bridge_dropped(drop, 1);
                return None;
            }
        };
        let is_media = matches!(message, AgentMessage::Media(_));
        match &message {
            AgentMessage::Media(payload) => {
                messages::media_after(&mut self.out_text, &self.media_head, payload);
            }
            AgentMessage::Mark(name) => messages::mark(&mut self.out_text, self.stream_sid, name),
            AgentMessage::Clear => {
                // Barge-in: audio queued before the clear would only be cleared by Twilio; it
                // is dropped here, so the clear reaches Twilio sooner.
                let before = self.to_twilio.len();
                self.to_twilio.retain(|queued| !queued.is_media);
                let cleared = before - self.to_twilio.len();
                if cleared > 0 {
                    self.ctx
                        .metrics
                        .bridge_dropped(BridgeDrop::Cleared, cleared as u64);
                }
                messages::clear(&mut self.out_text, self.stream_sid);
            }
        }
        let Ok(text) = TwilioText::try_from(self.out_text.split().freeze()) else {
            return None;
        };
        self.to_twilio.push_back(ForTwilio {
            message: TwilioMessage::Text(text),
            is_media,
        });
        None
    }

    fn lost(&self, how: &'static str) -> Ending {
        self.ctx.metrics.bridge_failed(BridgeFailure::Lost);
        warn!(call_sid = %self.live.call_sid, how, "voice agent lost mid-call");
        Ending::new(
            EndReason::BridgeLost,
            Some((close::NORMAL, "voice agent lost")),
        )
    }

    /// The call is over on Twilio's side: the agent gets what is queued, Twilio's `stop` (or one
    /// of ours), and a close with 1000. Until the agent's close answers ours, what it sent before
    /// it saw the `stop` still goes to Twilio, so the last frames are not lost. All bounded, since
    /// the agent may be the slow one.
    async fn finish_agent<A: AgentSocket, S: TwilioSocket>(
        &mut self,
        agent: &mut A,
        twilio: &mut S,
    ) {
        if !self.stop_forwarded {
            self.stop_forwarded = true;
            let stop = serde_json::json!({
                "event": "stop",
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid.as_deref().unwrap_or(""), "callSid": self.call_sid},
            });
            self.to_agent
                .push_back(AgentFrame::Text(stop.to_string().into()));
        }
        let queued = std::mem::take(&mut self.to_agent);
        self.to_agent_count += queued.len() as u64;
        let _ = timeout(FINISH_TIMEOUT, async {
            let mut all = futures_util::stream::iter(queued.into_iter().map(Ok));
            agent.send_all(&mut all).await?;
            agent
                .send(AgentFrame::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "call ended".into(),
                })))
                .await?;
            self.drain_to_twilio(twilio).await;
            // The agent's close answers ours; its messages until then still reach Twilio (a
            // socket Twilio already closed just fails those writes).
            while let Some(Ok(message)) = agent.next().await {
                if matches!(message, AgentFrame::Close(_)) {
                    break;
                }
                if self.read_agent(Some(Ok(message))).is_none() {
                    self.drain_to_twilio(twilio).await;
                }
            }
            Ok::<(), tungstenite::Error>(())
        })
        .await;
    }

    /// Sends what is queued for Twilio before the stream closes, bounded by the write stall.
    async fn drain_to_twilio<S: TwilioSocket>(&mut self, twilio: &mut S) {
        let stall = self.ctx.timeouts.write_stall;
        let queued = std::mem::take(&mut self.to_twilio);
        let _ = timeout(stall, async {
            for item in queued {
                twilio.feed(item.message).await?;
                self.to_twilio_count += 1;
                if item.is_media {
                    self.frames_out += 1;
                    self.live.count_out();
                }
            }
            twilio.flush().await
        })
        .await;
    }

    fn flush_counters(&mut self) {
        self.to_agent_total.inc_by(self.to_agent_count);
        self.to_twilio_total.inc_by(self.to_twilio_count);
        self.ctx.metrics.frames_in.inc_by(self.frames_in);
        self.ctx.metrics.frames_out.inc_by(self.frames_out);
        self.to_agent_count = 0;
        self.to_twilio_count = 0;
        self.frames_in = 0;
        self.frames_out = 0;
    }
}

/// What `poll_event` polls besides the relay's own queues.
struct Pollers<'p, S, A> {
    twilio: &'p mut S,
    agent: &'p mut A,
    agent_writer: &'p mut Writer,
    twilio_writer: &'p mut Writer,
    stop: &'p mut StopWatch,
    ping: &'p mut Interval,
    stall_timer: Pin<&'p mut Sleep>,
    stall_armed: &'p mut bool,
    stall: Duration,
    idle: Pin<&'p mut Sleep>,
    agent_first: &'p mut bool,
}

/// Hands queued messages to a sink while it takes them, then flushes. `unpack` turns a queued item
/// into the message to send and whether it is audio. Returns how many went, and how many of those
/// were audio.
fn write_queue<T, M, K: Sink<M> + Unpin>(
    cx: &mut Context<'_>,
    sink: &mut K,
    queue: &mut VecDeque<T>,
    writer: &mut Writer,
    unpack: impl Fn(T) -> (M, bool),
) -> Result<(u64, u64), ()> {
    let mut sent = 0;
    let mut media = 0;
    while !queue.is_empty() {
        match sink.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {
                let Some(item) = queue.pop_front() else { break };
                let (message, is_media) = unpack(item);
                media += u64::from(is_media);
                sink.start_send_unpin(message).map_err(|_| ())?;
                writer.dirty = true;
                sent += 1;
            }
            Poll::Ready(Err(_)) => return Err(()),
            Poll::Pending => break,
        }
    }
    let mut flushed = false;
    if writer.dirty {
        match sink.poll_flush_unpin(cx) {
            Poll::Ready(Ok(())) => {
                writer.dirty = false;
                flushed = true;
            }
            Poll::Ready(Err(_)) => return Err(()),
            Poll::Pending => {}
        }
    }
    if queue.is_empty() && !writer.dirty {
        writer.waiting_since = None;
    } else if sent > 0 || flushed || writer.waiting_since.is_none() {
        // Progress (or the first wait) restarts the stall clock.
        writer.waiting_since = Some(Instant::now());
    }
    Ok((sent, media))
}

fn write_agent<A: AgentSocket>(
    cx: &mut Context<'_>,
    agent: &mut A,
    queue: &mut VecDeque<AgentFrame>,
    writer: &mut Writer,
) -> Result<u64, ()> {
    write_queue(cx, agent, queue, writer, |frame| (frame, false)).map(|(sent, _)| sent)
}

/// Like `write_agent`, and also returns how many of the messages sent were audio.
fn write_twilio<S: TwilioSocket>(
    cx: &mut Context<'_>,
    twilio: &mut S,
    queue: &mut VecDeque<ForTwilio>,
    writer: &mut Writer,
) -> Result<(u64, u64), ()> {
    write_queue(cx, twilio, queue, writer, |item| {
        (item.message, item.is_media)
    })
}
