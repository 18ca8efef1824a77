//! One Twilio Media Streams WebSocket (SPEC §5): the `start` handshake, the per-frame loop, timeouts
//! and close codes, over any sink and stream of messages (a real socket, or channels in tests).
//! Never touches Redis per frame; bad input is counted and dropped, never fatal.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use calls_core::call_sid::CallSid;
use calls_core::calls::{StreamRefusal, StreamStart};
use calls_core::live_calls::LiveCall;
use calls_core::state::{EndReason, MediaFormat};
use calls_core::store::AdmitPolicy;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use twilio::messages::{self, Inbound};
use twilio::payload;

use crate::app::App;
use crate::config::MediaHandlerKind;
use crate::stream::bridge::relay::Opening;
use crate::stream::handler::{MediaFrame, Outbound, Outbox, new_handler};

use super::ending::{Ending, close, ended_from_outside, is_too_large};

/// Largest message accepted; a bigger one closes the socket with 1009.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Global frame counters are shared by every socket; batching keeps their cache line quiet.
const COUNTER_BATCH: u64 = 64;

/// How long a close frame may wait to be written: a peer that stopped reading must not hold us,
/// yet one that reads again a moment later (a slow consumer) still learns why it was closed.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long, after our close frame, we read for the peer's: dropping a socket with unread input
/// makes the kernel reset it, which can destroy the close frame before the peer reads it.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a stream session reads from and writes to: axum's `WebSocket`, or any pair of channels
/// carrying the same messages (the unit tests in `tests.rs`).
pub trait MessageSocket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send
{
}

impl<T> MessageSocket for T where
    T: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Unpin
        + Send
{
}

/// Serves one upgraded socket to the end. Spawned (and tracked) per connection.
pub async fn serve<S: MessageSocket>(app: Arc<App>, socket: S) {
    app.metrics.sockets_open.inc();
    let mut session = Session {
        app: app.clone(),
        socket,
        frames_in: 0,
        frames_out: 0,
    };
    session.run().await;
    session.flush_counters();
    app.metrics.sockets_open.dec();
}

struct Session<S> {
    app: Arc<App>,
    socket: S,
    frames_in: u64,
    frames_out: u64,
}

impl<S: MessageSocket> Session<S> {
    async fn run(&mut self) {
        let Some((live, stream_sid, opening)) = self.await_start().await else {
            return;
        };
        // The per-frame loop runs outside the call's span: entering and leaving it on every poll
        // cost more than parsing the frame. The loop's one log line names the call itself.
        let ending = match opening {
            Some(opening) => {
                // Boxed: an echo call's future stays as small as it was without the bridge.
                Box::pin(crate::stream::bridge::serve(
                    &self.app,
                    &mut self.socket,
                    &live,
                    &stream_sid,
                    opening,
                ))
                .await
            }
            None => self.live(&live, &stream_sid).await,
        };
        let span = info_span!("call", call_sid = %live.call_sid);
        async {
            self.app.calls.end_stream(&live, ending.reason).await;
            if let Some((code, reason)) = ending.close {
                self.close(code, reason).await;
            }
        }
        .instrument(span)
        .await;
    }

    /// Reads until a valid `start` arrives and the call is admitted, or the socket must close.
    /// In bridge mode it also keeps `connected` and `start` as Twilio wrote them, for the agent.
    async fn await_start(&mut self) -> Option<(Arc<LiveCall>, String, Option<Opening>)> {
        let bridging = self.app.config.media_handler == MediaHandlerKind::Bridge;
        let mut connected = None;
        let deadline = Instant::now() + self.app.config.stream_timeouts.start;
        let stop = self.app.lifecycle.stop_streams.clone();
        loop {
            let message = tokio::select! {
                biased;
                // The drain is over (or this socket arrived after its deadline): no call to end.
                () = stop.cancelled() => {
                    let (code, reason) = Ending::DRAIN_CLOSE;
                    self.close(code, reason).await;
                    return None;
                }
                message = self.socket.next() => message,
                _ = tokio::time::sleep_until(deadline) => {
                    self.app.metrics.dropped("no_start");
                    debug!("no start message in time");
                    self.close(close::POLICY, "no start message").await;
                    return None;
                }
            };
            let text = match message {
                None | Some(Ok(Message::Close(_))) => return None,
                Some(Err(err)) => {
                    if is_too_large(&err) {
                        self.app.metrics.dropped("too_large");
                        self.close(close::TOO_BIG, "message too large").await;
                    }
                    return None;
                }
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => {
                    self.app.metrics.dropped("binary_frame");
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            let start = match messages::parse(&text) {
                Ok(Inbound::Start(start)) => start,
                Ok(Inbound::Connected(_)) => {
                    if bridging {
                        connected = Some(text.clone());
                    }
                    continue;
                }
                Ok(Inbound::Stop(_)) => return None,
                Ok(Inbound::Media(_)) => {
                    self.app.metrics.dropped("media_before_start");
                    continue;
                }
                Ok(_) => {
                    self.app.metrics.dropped("before_start");
                    continue;
                }
                Err(err) => {
                    self.app.metrics.dropped(err.reason());
                    continue;
                }
            };
            let Ok(call_sid) = CallSid::parse(&start.call_sid) else {
                self.app.metrics.dropped("bad_start");
                warn!(call_sid = %start.call_sid, "start with an invalid callSid");
                self.close(close::POLICY, "invalid callSid").await;
                return None;
            };
            let stream_sid = start.stream_sid.into_owned();
            let format = start.media_format;
            let request = StreamStart {
                stream_sid: stream_sid.clone(),
                account_sid: start
                    .account_sid
                    .map(std::borrow::Cow::into_owned)
                    .filter(|s| !s.is_empty()),
                media_format: Some(MediaFormat {
                    encoding: format
                        .encoding
                        .map(std::borrow::Cow::into_owned)
                        .unwrap_or_default(),
                    sample_rate: format.sample_rate.unwrap_or_default(),
                    channels: format.channels.unwrap_or_default(),
                }),
                custom_parameters: start.custom_parameters,
            };
            let opening = bridging.then(|| Opening {
                connected: connected.take(),
                start: text.clone(),
                call_sid: call_sid.as_str().to_owned(),
                account_sid: request.account_sid.clone(),
            });
            let policy = if self.app.is_draining() {
                AdmitPolicy::ExistingOnly
            } else {
                AdmitPolicy::MayTakeSlot
            };
            return match self
                .app
                .calls
                .start_stream(&call_sid, request, policy)
                .await
            {
                Ok(live) => Some((live, stream_sid, opening)),
                Err(StreamRefusal::LockedElsewhere) => {
                    self.close(close::POLICY, "call is streaming elsewhere")
                        .await;
                    None
                }
                Err(StreamRefusal::Rejected(reason)) => {
                    info!(%call_sid, reason = reason.as_str(), "stream refused");
                    self.close(close::TRY_AGAIN_LATER, reason.as_str()).await;
                    None
                }
            };
        }
    }

    /// The per-frame loop of an admitted call.
    async fn live(&mut self, live: &LiveCall, stream_sid: &str) -> Ending {
        let mut handler = new_handler(self.app.config.media_handler);
        let needs_audio = handler.needs_audio();
        let mut outbox = Outbox::default();
        // Both grow to one frame's size on first use and stay there: a silent call never
        // allocates an outbound buffer, and the audio buffer is exactly a frame (160 bytes).
        let mut audio = Vec::new();
        let mut out_text = BytesMut::new();
        // The shutdown signals are watched by a small task of the call's own, which reports on a
        // oneshot: polling that once per frame is an atomic load, where polling the two tokens
        // took a mutex each, on cache lines no other frame of the call had touched.
        let (ended_tx, ended) = oneshot::channel::<()>();
        let stop = self.app.lifecycle.stop_streams.clone();
        let cancel = live.cancel_token().clone();
        let _watcher = AbortOnDropHandle::new(tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = cancel.cancelled() => {}
            }
            let _ = ended_tx.send(());
        }));
        tokio::pin!(ended);
        let mut watching = true;
        // One timer for the whole call, re-armed only when it fires: resetting a timer per frame
        // would cost more than the frame.
        let idle_timeout = self.app.config.stream_timeouts.idle;
        let mut last_heard = Instant::now();
        let idle = sleep(idle_timeout);
        tokio::pin!(idle);
        loop {
            let message = tokio::select! {
                biased;
                message = self.socket.next() => message,
                signal = &mut ended, if watching => {
                    if signal.is_ok() {
                        return ended_from_outside(live);
                    }
                    // The watcher is gone without a signal (it cannot be, while we hold it).
                    watching = false;
                    continue;
                }
                _ = &mut idle => {
                    if last_heard.elapsed() >= idle_timeout {
                        return Ending::new(EndReason::IdleTimeout, Some((close::NORMAL, "idle timeout")));
                    }
                    idle.as_mut().reset(last_heard + idle_timeout);
                    continue;
                }
            };
            last_heard = Instant::now();
            let text = match message {
                None | Some(Ok(Message::Close(_))) => {
                    return Ending::new(EndReason::Disconnected, None);
                }
                Some(Err(err)) => {
                    if is_too_large(&err) {
                        self.app.metrics.dropped("too_large");
                        return Ending::new(
                            EndReason::MessageTooLarge,
                            Some((close::TOO_BIG, "message too large")),
                        );
                    }
                    return Ending::new(EndReason::Disconnected, None);
                }
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => {
                    self.app.metrics.dropped("binary_frame");
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            match messages::parse(&text) {
                Ok(Inbound::Media(media)) => {
                    audio.clear();
                    let decoded = if needs_audio {
                        BASE64
                            .decode_vec(media.payload.as_bytes(), &mut audio)
                            .ok()
                            .map(|()| audio.len())
                    } else {
                        payload::decoded_len(media.payload.as_bytes())
                    };
                    let Some(bytes) = decoded else {
                        self.app.metrics.dropped("bad_base64");
                        continue;
                    };
                    live.count_in(bytes);
                    self.frames_in += 1;
                    let frame = MediaFrame {
                        payload_b64: &media.payload,
                        audio: &audio,
                        timestamp: media.timestamp,
                    };
                    handler.on_media(&frame, &mut outbox);
                }
                Ok(Inbound::Mark(mark)) => {
                    live.update(|s| s.marks.push(mark.name.to_string()));
                    handler.on_mark(&mark.name, &mut outbox);
                }
                Ok(Inbound::Dtmf(dtmf)) => {
                    live.update(|s| s.dtmf.push_str(&dtmf.digit));
                    handler.on_dtmf(&dtmf.digit, &mut outbox);
                }
                Ok(Inbound::Stop(_)) => {
                    return Ending::new(EndReason::Stop, None);
                }
                Ok(Inbound::Connected(_)) => {}
                Ok(Inbound::Start(_)) => self.app.metrics.dropped("duplicate_start"),
                Err(err) => {
                    self.app.metrics.dropped(err.reason());
                    continue;
                }
            }
            if !outbox.is_empty()
                && let Err(ending) = self
                    .send_outbox(live, stream_sid, &mut outbox, &mut out_text)
                    .await
            {
                return ending;
            }
            if self.frames_in >= COUNTER_BATCH {
                self.flush_counters();
            }
        }
    }

    async fn send_outbox(
        &mut self,
        live: &LiveCall,
        stream_sid: &str,
        outbox: &mut Outbox,
        text: &mut BytesMut,
    ) -> Result<(), Ending> {
        for message in outbox.iter() {
            match message {
                Outbound::Media(payload) => messages::media(text, stream_sid, payload),
                Outbound::Mark(name) => messages::mark(text, stream_sid, name),
                Outbound::Clear => messages::clear(text, stream_sid),
            }
            // The frame takes the built bytes without copying; once the socket has written them
            // the buffer is unique again and the next frame reuses it.
            let Ok(frame) = Utf8Bytes::try_from(text.split().freeze()) else {
                continue;
            };
            self.send(Message::Text(frame))
                .await
                .inspect_err(|ending| {
                    if ending.reason == EndReason::SlowConsumer {
                        let stall = self.app.config.stream_timeouts.write_stall;
                        warn!(call_sid = %live.call_sid, ?stall, "peer stopped reading; closing");
                    }
                })?;
            if matches!(message, Outbound::Media(_)) {
                live.count_out();
                self.frames_out += 1;
            }
        }
        outbox.reset();
        Ok(())
    }

    /// Sends one message. Nearly every send completes on its first poll; only one that has to
    /// wait for the peer gets the write-stall timer, so the usual frame arms no timer at all.
    async fn send(&mut self, message: Message) -> Result<(), Ending> {
        let stall = self.app.config.stream_timeouts.write_stall;
        let outcome = {
            let mut send = pin!(self.socket.send(message));
            match poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
                Poll::Ready(result) => Some(result),
                Poll::Pending => timeout(stall, send).await.ok(),
            }
        };
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) => Err(Ending::new(EndReason::Disconnected, None)),
            None => {
                self.app.metrics.dropped("slow_consumer");
                Err(Ending::new(
                    EndReason::SlowConsumer,
                    Some((close::POLICY, "slow consumer")),
                ))
            }
        }
    }

    fn flush_counters(&mut self) {
        self.app.metrics.frames_in.inc_by(self.frames_in);
        self.app.metrics.frames_out.inc_by(self.frames_out);
        self.frames_in = 0;
        self.frames_out = 0;
    }

    /// Sends a close frame and waits for the peer's (RFC 6455 §7.1.1), each step bounded in time.
    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        if !matches!(
            timeout(CLOSE_SEND_TIMEOUT, self.socket.send(frame)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        // What the peer sent meanwhile is read and dropped; its close (or end) finishes the socket.
        let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
            while let Some(Ok(message)) = self.socket.next().await {
                if matches!(message, Message::Close(_)) {
                    return;
                }
            }
        })
        .await;
    }
}
