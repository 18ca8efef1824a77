//! The session driven over in-memory channels, with the real in-process store and paused time:
//! the handshake, every timeout and close code, ordering, and bad input, with no socket at all.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use calls_core::call_sid::CallSid;
use calls_core::state::{CallState, CallStatus, EndReason};
use calls_core::store::{MemoryStore, StoreConfig};
use futures_util::{Sink, Stream};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::PollSender;

use calls_core::calls::{Calls, CallsConfig};
use calls_core::tenant::TenantKey;

use super::{StreamContext, serve};
use crate::config::{Media, StreamTimeouts};
use crate::metrics::Metrics;

/// The session's side of an in-memory socket: what the peer sends arrives on `incoming`; what the
/// session sends goes into a bounded channel, so a peer that stops reading stalls it for real.
struct ChannelSocket {
    incoming: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
    outgoing: PollSender<Message>,
}

impl Stream for ChannelSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for ChannelSocket {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outgoing.poll_reserve(cx).map_err(axum::Error::new)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.outgoing.send_item(item).map_err(axum::Error::new)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        self.outgoing.close();
        Poll::Ready(Ok(()))
    }
}

/// The Twilio end of the channels.
struct Peer {
    to_session: Option<mpsc::UnboundedSender<Result<Message, axum::Error>>>,
    from_session: mpsc::Receiver<Message>,
    stream_sid: String,
    seq: u64,
}

const CALL: &str = "CA00000000000000000000000000000001";
/// One 20 ms frame of mu-law silence, base64.
const FRAME: &str = "/////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////w==";

impl Peer {
    fn push(&self, message: Result<Message, axum::Error>) {
        self.to_session
            .as_ref()
            .expect("peer still open")
            .send(message)
            .expect("session still reading");
    }

    fn text(&self, text: &str) {
        self.push(Ok(Message::Text(text.into())));
    }

    fn json(&mut self, mut value: Value) {
        self.seq += 1;
        value["sequenceNumber"] = self.seq.to_string().into();
        value["streamSid"] = self.stream_sid.as_str().into();
        self.text(&value.to_string());
    }

    fn connected(&mut self) {
        self.text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#);
    }

    fn start(&mut self, call_sid: &str) {
        let stream_sid = self.stream_sid.clone();
        self.json(json!({"event": "start", "start": {
            "accountSid": "AC0123456789abcdef0123456789abcdef",
            "streamSid": stream_sid, "callSid": call_sid, "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"CallSid": call_sid}
        }}));
    }

    fn media(&mut self, chunk: u64, payload: &str) {
        self.json(json!({"event": "media", "media": {"track": "inbound",
            "chunk": chunk.to_string(), "timestamp": (chunk * 20).to_string(), "payload": payload}}));
    }

    fn mark(&mut self, name: &str) {
        self.json(json!({"event": "mark", "mark": {"name": name}}));
    }

    fn stop(&mut self) {
        self.json(json!({"event": "stop", "stop": {"callSid": CALL}}));
    }

    /// The peer hangs up its end: the session reads the end of the stream.
    fn hang_up(&mut self) {
        self.to_session = None;
    }

    /// The next message the session sent; None once it dropped its end.
    async fn next(&mut self) -> Option<Message> {
        self.from_session.recv().await
    }

    async fn next_json(&mut self) -> Value {
        match self.next().await {
            Some(Message::Text(text)) => serde_json::from_str(&text).expect("JSON"),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message must be a close frame: its code and reason.
    async fn close_frame(&mut self) -> (u16, String) {
        match self.next().await {
            Some(Message::Close(Some(frame))) => (frame.code, frame.reason.to_string()),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Answers the session's close, as a well-behaved peer does, and waits for the session to end.
    async fn finish(mut self, session: JoinHandle<()>) {
        self.hang_up();
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the session returns")
            .expect("the session did not panic");
        assert!(self.next().await.is_none(), "nothing after the close");
    }
}

/// A replica's stream context: in-process state, a limit of 10, the default timeouts.
pub(super) fn context(media: Media) -> Arc<StreamContext> {
    let store = MemoryStore::new(StoreConfig {
        limit: 10,
        ..StoreConfig::default()
    });
    let metrics = Arc::new(Metrics::new());
    let calls = CallsConfig {
        replica_id: "unit".into(),
        max_concurrent_calls: 10,
        reservation: Duration::from_secs(30),
        call_lease: Duration::from_secs(30),
        renew_interval: Duration::from_secs(10),
        tenant_key: TenantKey::None,
        default_tenant_limit: None,
        resume_limit: 2,
        wait: None,
        stream_tokens: false,
    };
    Arc::new(StreamContext {
        calls: Arc::new(Calls::new(calls, Arc::new(store), metrics.clone())),
        metrics,
        lifecycle: Arc::default(),
        timeouts: StreamTimeouts::default(),
        media,
        stream_key: None,
    })
}

fn ctx() -> Arc<StreamContext> {
    context(Media::Echo)
}

/// The value of one sample in the Prometheus text, e.g.
/// `media_messages_dropped_total{reason="too_large"}`; 0 if it is not there.
pub(super) fn sample(metrics: &Metrics, name: &str) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// A session over fresh channels; the session may queue `capacity` messages the peer has not read.
fn open(ctx: &Arc<StreamContext>, capacity: usize) -> (Peer, JoinHandle<()>) {
    let (to_session, incoming) = mpsc::unbounded_channel();
    let (outgoing, from_session) = mpsc::channel(capacity);
    let socket = ChannelSocket {
        incoming,
        outgoing: PollSender::new(outgoing),
    };
    let session = tokio::spawn({
        let ctx = ctx.clone();
        async move { serve(&ctx, socket).await }
    });
    let peer = Peer {
        to_session: Some(to_session),
        from_session,
        stream_sid: "MZ00000000000000000000000000000001".into(),
        seq: 0,
    };
    (peer, session)
}

/// A session past its `start`, proven live by one echoed frame.
async fn started(ctx: &Arc<StreamContext>, capacity: usize) -> (Peer, JoinHandle<()>) {
    let (mut peer, session) = open(ctx, capacity);
    peer.connected();
    peer.start(CALL);
    peer.media(1, FRAME);
    assert_eq!(peer.next_json().await["event"], "media");
    (peer, session)
}

/// Paused time jumps straight to the timer that fires; a millisecond allows for the timer wheel.
fn assert_about(waited: Duration, expected: Duration) {
    assert!(
        waited >= expected && waited <= expected + Duration::from_millis(1),
        "waited {waited:?}, expected {expected:?}"
    );
}

fn sid() -> CallSid {
    CallSid::parse(CALL).unwrap()
}

async fn state(ctx: &StreamContext) -> Option<CallState> {
    ctx.calls.store().read_state(&sid()).await.unwrap()
}

async fn ended(ctx: &StreamContext) -> CallState {
    let state = state(ctx).await.expect("a stored state");
    assert_eq!(state.status, CallStatus::Ended, "{state:?}");
    state
}

async fn active(ctx: &StreamContext) -> u64 {
    ctx.calls.store().stats().await.unwrap().active
}

fn dropped(ctx: &StreamContext, reason: &str) -> u64 {
    sample(
        &ctx.metrics,
        &format!("media_messages_dropped_total{{reason=\"{reason}\"}}"),
    )
}

fn ended_count(ctx: &StreamContext, reason: &str) -> u64 {
    sample(
        &ctx.metrics,
        &format!("calls_ended_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test(start_paused = true)]
async fn start_admits_the_call_and_stop_releases_it() {
    let ctx = ctx();
    let (mut peer, session) = open(&ctx, 16);
    peer.connected();
    peer.start(CALL);
    peer.media(1, FRAME);
    let echo = peer.next_json().await;
    assert_eq!(echo["event"], "media");
    assert_eq!(echo["streamSid"], peer.stream_sid.as_str());
    assert_eq!(echo["media"]["payload"], FRAME);

    // No webhook came first: the stream itself took the slot (an outbound call).
    assert_eq!(active(&ctx).await, 1);
    assert_eq!(ctx.calls.live().len(), 1);
    let live = state(&ctx).await.expect("state written at start");
    assert_eq!(live.status, CallStatus::Active);
    assert_eq!(live.stream_sid.as_deref(), Some(peer.stream_sid.as_str()));
    assert_eq!(live.media_format.as_ref().unwrap().sample_rate, 8000);
    assert_eq!(live.custom_parameters["CallSid"], CALL);

    peer.stop();
    peer.finish(session).await;
    let state = ended(&ctx).await;
    assert_eq!(state.end_reason, Some(EndReason::Stop));
    assert_eq!(state.frames_in, 1);
    assert_eq!(state.frames_out, 1);
    assert_eq!(active(&ctx).await, 0);
    assert!(ctx.calls.live().is_empty());
    assert_eq!(ctx.metrics.sockets_open.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn no_start_within_the_start_timeout_closes_with_1008() {
    let ctx = ctx();
    let (mut peer, session) = open(&ctx, 16);
    let opened = Instant::now();
    peer.connected();
    // Media before start is dropped, and does not count as a start.
    peer.media(1, FRAME);
    assert_eq!(peer.close_frame().await.0, 1008);
    assert_about(opened.elapsed(), StreamTimeouts::default().start);
    assert_eq!(dropped(&ctx, "no_start"), 1);
    assert_eq!(dropped(&ctx, "media_before_start"), 1);
    peer.finish(session).await;
    // No call was started: nothing stored, nothing held.
    assert!(state(&ctx).await.is_none());
    assert_eq!(active(&ctx).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_silent_socket_is_closed_after_the_idle_timeout() {
    let ctx = ctx();
    let idle = StreamTimeouts::default().idle;
    let (mut peer, session) = started(&ctx, 16).await;
    // A frame two thirds of the way in puts the deadline back by a whole timeout.
    tokio::time::sleep(idle * 2 / 3).await;
    peer.media(2, FRAME);
    assert_eq!(peer.next_json().await["event"], "media");
    let last_heard = Instant::now();
    let (code, _) = peer.close_frame().await;
    assert_eq!(code, 1000);
    assert_about(last_heard.elapsed(), idle);
    assert_eq!(ended(&ctx).await.end_reason, Some(EndReason::IdleTimeout));
    assert_eq!(active(&ctx).await, 0);
    peer.finish(session).await;
}

#[tokio::test(start_paused = true)]
async fn a_message_over_the_limit_closes_with_1009() {
    let ctx = ctx();
    let (mut peer, session) = started(&ctx, 16).await;
    // What axum hands over when tungstenite refuses a message over `max_message_size`.
    let too_long =
        tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size: 70 * 1024,
            max_size: super::MAX_MESSAGE_BYTES,
        });
    peer.push(Err(axum::Error::new(too_long)));
    assert_eq!(peer.close_frame().await.0, 1009);
    assert_eq!(
        ended(&ctx).await.end_reason,
        Some(EndReason::MessageTooLarge)
    );
    assert_eq!(dropped(&ctx, "too_large"), 1);
    assert_eq!(active(&ctx).await, 0);
    peer.finish(session).await;
}

/// docs/reference.md#after-stream: a peer that breaks the WebSocket protocol is bad input, so its
/// call hangs up (`error`, close 1002 or 1007), never `disconnected`, which would continue it.
#[tokio::test(start_paused = true)]
async fn a_protocol_error_ends_the_call_for_good_with_a_close() {
    use tungstenite::error::ProtocolError;
    let broken = [
        (
            tungstenite::Error::Protocol(ProtocolError::NonZeroReservedBits),
            1002,
        ),
        (
            tungstenite::Error::Protocol(ProtocolError::UnmaskedFrameFromClient),
            1002,
        ),
        (
            tungstenite::Error::Utf8("invalid utf-8 sequence".into()),
            1007,
        ),
    ];
    for (n, (error, code)) in broken.into_iter().enumerate() {
        let ctx = ctx();
        let (mut peer, session) = started(&ctx, 16).await;
        peer.push(Err(axum::Error::new(error)));
        assert_eq!(peer.close_frame().await.0, code);
        let state = ended(&ctx).await;
        assert_eq!(state.end_reason, Some(EndReason::Error));
        assert_eq!(
            state.disposition(),
            calls_core::state::Disposition::Hangup,
            "the after-stream hangs up"
        );
        assert_eq!(dropped(&ctx, "protocol_error"), 1, "case {n}");
        assert_eq!(active(&ctx).await, 0, "its slot is freed at once");
        peer.finish(session).await;
    }
    // A connection reset without a close frame is a lost connection, not a broken one.
    let ctx = ctx();
    let (peer, session) = started(&ctx, 16).await;
    peer.push(Err(axum::Error::new(tungstenite::Error::Protocol(
        ProtocolError::ResetWithoutClosingHandshake,
    ))));
    peer.finish(session).await;
    assert_eq!(ended(&ctx).await.end_reason, Some(EndReason::Disconnected));
    assert_eq!(dropped(&ctx, "protocol_error"), 0);
}

#[tokio::test(start_paused = true)]
async fn any_other_read_error_ends_the_call_as_disconnected_without_a_close() {
    let ctx = ctx();
    let (peer, session) = started(&ctx, 16).await;
    peer.push(Err(axum::Error::new(std::io::Error::other("reset"))));
    peer.finish(session).await;
    assert_eq!(ended(&ctx).await.end_reason, Some(EndReason::Disconnected));
    assert_eq!(dropped(&ctx, "too_large"), 0);
    // docs/reference.md#hand-over: the call continues, so its slot waits for the new stream.
    assert_eq!(active(&ctx).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_closed_as_slow_consumer_and_nothing_piles_up() {
    let ctx = ctx();
    let stall = StreamTimeouts::default().write_stall;
    // Room for two unread messages: the first echo is read by `started`, two more fill the queue.
    let (mut peer, session) = started(&ctx, 2).await;
    for chunk in 2..=50 {
        peer.media(chunk, FRAME);
    }
    let stalled = Instant::now();
    let ended_at = loop {
        if state(&ctx)
            .await
            .is_some_and(|s| s.status == CallStatus::Ended)
        {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let waited = ended_at - stalled;
    assert!(
        waited >= stall && waited <= stall + Duration::from_millis(20),
        "{waited:?}"
    );
    let state = ended(&ctx).await;
    assert_eq!(state.end_reason, Some(EndReason::SlowConsumer));
    // The session stopped reading while its write waited: of 50 frames it took the two echoed,
    // the one whose echo stalled, and the first; the other 46 never left the peer.
    assert_eq!(state.frames_in, 4);
    assert_eq!(state.frames_out, 3);
    assert_eq!(dropped(&ctx, "slow_consumer"), 1);
    assert_eq!(active(&ctx).await, 0);

    // The peer reads again: the two queued echoes, then the close that says why.
    assert_eq!(peer.next_json().await["media"]["payload"], FRAME);
    assert_eq!(peer.next_json().await["media"]["payload"], FRAME);
    assert_eq!(peer.close_frame().await, (1008, "slow consumer".into()));
    peer.finish(session).await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_again_cannot_hold_the_session() {
    let ctx = ctx();
    let (mut peer, session) = started(&ctx, 1).await;
    for chunk in 2..=10 {
        peer.media(chunk, FRAME);
    }
    // The close frame cannot be written either; the session gives up on it and returns.
    tokio::time::timeout(Duration::from_secs(60), session)
        .await
        .expect("the session returns")
        .expect("no panic");
    assert_eq!(ended(&ctx).await.end_reason, Some(EndReason::SlowConsumer));
    assert_eq!(active(&ctx).await, 0);
    peer.hang_up();
}

#[tokio::test(start_paused = true)]
async fn echo_answers_each_mark_after_the_audio_before_it() {
    let ctx = ctx();
    let (mut peer, session) = started(&ctx, 64).await;
    peer.media(2, FRAME);
    peer.mark("first");
    peer.media(3, "AAAA");
    peer.media(4, FRAME);
    peer.mark("second");
    peer.mark("third");
    let mut seen = Vec::new();
    for _ in 0..6 {
        let message = peer.next_json().await;
        assert_eq!(message["streamSid"], peer.stream_sid.as_str());
        seen.push(match message["event"].as_str().unwrap() {
            "media" => format!("media:{}", message["media"]["payload"].as_str().unwrap()),
            "mark" => format!("mark:{}", message["mark"]["name"].as_str().unwrap()),
            other => panic!("unexpected {other}"),
        });
    }
    let frame = format!("media:{FRAME}");
    assert_eq!(
        seen,
        [
            frame.as_str(),
            "mark:first",
            "media:AAAA",
            frame.as_str(),
            "mark:second",
            "mark:third"
        ]
    );
    peer.stop();
    peer.finish(session).await;
    assert_eq!(ended(&ctx).await.marks, ["first", "second", "third"]);
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_counted_and_dropped_and_the_call_goes_on() {
    let ctx = ctx();
    let (mut peer, session) = started(&ctx, 16).await;
    peer.text("not json at all");
    peer.push(Ok(Message::Binary(vec![1, 2, 3].into())));
    peer.json(json!({"event": "jump"}));
    peer.media(2, "***not base64***");
    peer.text(r#"{"no":"event"}"#);
    peer.start(CALL);
    // Still live: the next good frame is echoed, and it is the only thing sent.
    peer.media(3, FRAME);
    assert_eq!(peer.next_json().await["media"]["payload"], FRAME);
    assert_eq!(dropped(&ctx, "malformed"), 2);
    assert_eq!(dropped(&ctx, "binary_frame"), 1);
    assert_eq!(dropped(&ctx, "unknown_event"), 1);
    assert_eq!(dropped(&ctx, "bad_base64"), 1);
    assert_eq!(dropped(&ctx, "duplicate_start"), 1);
    peer.stop();
    peer.finish(session).await;
    let state = ended(&ctx).await;
    assert_eq!(state.end_reason, Some(EndReason::Stop));
    assert_eq!(
        state.frames_in, 2,
        "dropped frames are not counted as audio"
    );
}

#[tokio::test(start_paused = true)]
async fn a_final_status_callback_closes_the_stream_with_1000() {
    let ctx = ctx();
    let (mut peer, session) = started(&ctx, 16).await;
    ctx.calls.call_status(&sid(), "completed").await;
    assert_eq!(peer.close_frame().await.0, 1000);
    peer.finish(session).await;
    assert_eq!(
        ended(&ctx).await.end_reason,
        Some(EndReason::StatusCallback)
    );
    assert_eq!(active(&ctx).await, 0);
    assert_eq!(ended_count(&ctx, "status_callback"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lost_lock_closes_the_stream_with_1008_and_leaves_the_slot_to_its_owner() {
    let ctx = ctx();
    let (mut peer, session) = started(&ctx, 16).await;
    let live = ctx.calls.live().get(&sid()).expect("live here");
    live.end_from_outside(EndReason::LockLost);
    assert_eq!(peer.close_frame().await.0, 1008);
    peer.finish(session).await;
    assert_eq!(ended_count(&ctx, "lock_lost"), 1);
    assert!(ctx.calls.live().is_empty());
    // The call belongs to the lock's new owner now: its slot and state are not ours to end.
    assert_eq!(active(&ctx).await, 1);
    assert_eq!(state(&ctx).await.unwrap().status, CallStatus::Active);
}

#[tokio::test(start_paused = true)]
async fn the_drain_deadline_closes_live_and_starting_streams_with_1001() {
    let ctx = ctx();
    let (mut live, live_session) = started(&ctx, 16).await;
    let (mut starting, starting_session) = open(&ctx, 16);
    starting.connected();
    ctx.lifecycle.stop_streams.cancel();
    assert_eq!(live.close_frame().await.0, 1001);
    assert_eq!(starting.close_frame().await.0, 1001);
    live.finish(live_session).await;
    starting.finish(starting_session).await;
    assert_eq!(ended(&ctx).await.end_reason, Some(EndReason::DrainTimeout));
    // Handed over (docs/reference.md#hand-over): the slot waits for the call's new stream.
    assert_eq!(active(&ctx).await, 1);

    // A socket that opens after the deadline is closed at once, before any `start`.
    let (mut late, late_session) = open(&ctx, 16);
    assert_eq!(late.close_frame().await.0, 1001);
    late.finish(late_session).await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_goes_away_without_stop_ends_as_disconnected() {
    let ctx = ctx();
    let (peer, session) = started(&ctx, 16).await;
    peer.finish(session).await;
    assert_eq!(ended(&ctx).await.end_reason, Some(EndReason::Disconnected));
    // The call continues (docs/reference.md#hand-over): its slot waits for the new stream.
    assert_eq!(active(&ctx).await, 1);
}
