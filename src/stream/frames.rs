//! The per-frame loop of an admitted call in `echo` or `silent` mode: each message read, counted
//! on the call, handed to the frame handler, and what it queued sent back. Never touches Redis.

use std::future::poll_fn;

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::BytesMut;
use calls_core::live_calls::LiveCall;
use calls_core::state::EndReason;
use futures_util::StreamExt;
use tokio::time::{Instant, sleep};
use tracing::warn;
use twilio::messages::{self, Inbound};

use super::StreamContext;
use super::ending::{Ending, close, ended_from_outside};
use super::handler::{MediaHandler, Outbound, Outbox};
use super::socket::{self, Read, StopWatch, TwilioSocket, read_twilio};
use super::start::Started;
use crate::metrics::MediaDrop;

/// Global frame counters are shared by every socket; batching keeps their cache line quiet.
const COUNTER_BATCH: u64 = 64;

/// Runs the call's frames through `handler` until the call ends; returns how it ended. One loop for
/// every handler (a `dyn` call per frame): a copy per handler made the stream's task too large for
/// the compiler to inline the parser and the socket into it (scripts/callgrind-media).
pub(crate) async fn run<S: TwilioSocket>(
    ctx: &StreamContext,
    socket: &mut S,
    started: &Started,
    handler: &mut dyn MediaHandler,
) -> Ending {
    let mut frames = Frames {
        ctx,
        socket,
        live: &started.live,
        stream_sid: &started.stream_sid,
        frames_in: 0,
        frames_out: 0,
    };
    let ending = frames.run(handler).await;
    frames.flush_counters();
    ending
}

struct Frames<'a, S> {
    ctx: &'a StreamContext,
    socket: &'a mut S,
    live: &'a LiveCall,
    stream_sid: &'a str,
    frames_in: u64,
    frames_out: u64,
}

impl<S: TwilioSocket> Frames<'_, S> {
    async fn run(&mut self, handler: &mut dyn MediaHandler) -> Ending {
        let live = self.live;
        let mut outbox = Outbox::default();
        // Grows to one frame's size on first use and stays there; a silent call never allocates it.
        let mut out_text = BytesMut::new();
        // Built on the first frame out: a silent call never sends one.
        let mut media_head: Option<messages::MediaHead> = None;
        let mut stop = StopWatch::new(&self.ctx.lifecycle.stop_streams, live);
        // One timer for the whole call, re-armed only when it fires: resetting a timer per frame
        // would cost more than the frame.
        let idle_timeout = self.ctx.timeouts.idle;
        let mut last_heard = Instant::now();
        let idle = sleep(idle_timeout);
        tokio::pin!(idle);
        loop {
            let message = tokio::select! {
                biased;
                message = self.socket.next() => message,
                () = poll_fn(|cx| stop.poll_stopped(cx)) => return ended_from_outside(live),
                _ = &mut idle => {
                    if last_heard.elapsed() >= idle_timeout {
                        return Ending::new(EndReason::IdleTimeout, Some((close::NORMAL, "idle timeout")));
                    }
                    idle.as_mut().reset(last_heard + idle_timeout);
                    continue;
                }
            };
            last_heard = Instant::now();
            let text = match read_twilio(message, &self.ctx.metrics) {
                Read::Text(text) => text,
                Read::Skip => continue,
                Read::End(ending) => return ending,
            };
            match messages::parse(&text) {
                Ok(Inbound::Media(media)) => {
                    // A plain frame's payload was checked when the parser found its end.
                    let Some((payload, bytes)) = media.checked_base64() else {
                        self.ctx.metrics.dropped(MediaDrop::BadBase64);
                        continue;
                    };
                    live.count_in(bytes);
                    self.frames_in += 1;
                    handler.on_media(payload, &mut outbox);
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
                Ok(Inbound::Start(_)) => self.ctx.metrics.dropped(MediaDrop::DuplicateStart),
                Err(err) => {
                    self.ctx.metrics.dropped(MediaDrop::of(&err));
                    continue;
                }
            }
            if self.frames_in >= COUNTER_BATCH {
                self.flush_counters();
            }
            // What the handler queued goes out here, not in a method of its own: an awaited call
            // per frame cost a future's set-up and a poll on every frame (scripts/callgrind-media).
            if outbox.is_empty() {
                continue;
            }
            let stall = self.ctx.timeouts.write_stall;
            for message in outbox.iter() {
                match message {
                    Outbound::Media(payload) => {
                        let head = media_head
                            .get_or_insert_with(|| messages::MediaHead::new(self.stream_sid));
                        messages::media_after_base64(&mut out_text, head, payload);
                    }
                    Outbound::Mark(name) => messages::mark(&mut out_text, self.stream_sid, name),
                }
                // The frame takes the built bytes without copying; once the socket has written
                // them the buffer is unique again and the next frame reuses it.
                let Ok(frame) = Utf8Bytes::try_from(out_text.split().freeze()) else {
                    continue;
                };
                if let Err(ending) =
                    socket::send(self.socket, Message::Text(frame), stall, &self.ctx.metrics).await
                {
                    if ending.reason == EndReason::SlowConsumer {
                        warn!(call_sid = %live.call_sid, ?stall, "peer stopped reading; closing");
                    }
                    return ending;
                }
                if matches!(message, Outbound::Media(_)) {
                    live.count_out();
                    self.frames_out += 1;
                }
            }
            outbox.reset();
        }
    }

    fn flush_counters(&mut self) {
        self.ctx.metrics.frames_in.inc_by(self.frames_in);
        self.ctx.metrics.frames_out.inc_by(self.frames_out);
        self.frames_in = 0;
        self.frames_out = 0;
    }
}
