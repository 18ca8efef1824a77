//! Twilio's side of a stream, as both modes use it: the one socket trait, reading a message (size
//! check, close, drop counting), bounded writes and the close handshake, and the stop watcher.

use std::future::poll_fn;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use calls_core::live_calls::LiveCall;
use calls_core::state::EndReason;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::ending::{Ending, close};
use crate::metrics::{MediaDrop, Metrics};

/// Largest message accepted from Twilio (docs/reference.md#media-stream); a bigger one closes the
/// socket with 1009. An agent's message over it is dropped.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How long a close frame may wait to be written: a peer that stopped reading must not hold us,
/// yet one that reads again a moment later (a slow consumer) still learns why it was closed.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long, after our close frame, we read for the peer's: dropping a socket with unread input
/// makes the kernel reset it, which can destroy the close frame before the peer reads it.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Twilio's socket: axum's `WebSocket`, or any pair of channels carrying the same messages (the
/// unit tests).
pub(crate) trait TwilioSocket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send
{
}

impl<T> TwilioSocket for T where
    T: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Unpin
        + Send
{
}

/// One read from Twilio's socket, as every phase of a stream acts on it.
pub(crate) enum Read {
    /// A text message: parse it.
    Text(Utf8Bytes),
    /// Nothing to act on: a binary frame (counted as dropped), a ping or a pong.
    Skip,
    /// The socket is done: the peer closed it, it failed, or it sent a message over
    /// `MAX_MESSAGE_BYTES` (counted; the ending closes with 1009).
    End(Ending),
}

/// Reads what the socket yielded.
#[inline]
pub(crate) fn read_twilio(
    message: Option<Result<Message, axum::Error>>,
    metrics: &Metrics,
) -> Read {
    match message {
        Some(Ok(Message::Text(text))) => Read::Text(text),
        None | Some(Ok(Message::Close(_))) => Read::End(Ending::new(EndReason::Disconnected, None)),
        Some(Err(err)) => read_error(&err, metrics),
        Some(Ok(Message::Binary(_))) => {
            metrics.dropped(MediaDrop::BinaryFrame);
            Read::Skip
        }
        Some(Ok(_)) => Read::Skip,
    }
}

/// The ending of a failed read. Only a lost connection is `disconnected`, the one ending of a
/// socket error that continues the call (docs/reference.md#after-stream); a peer that broke the
/// WebSocket protocol is bad input, and its call hangs up.
#[cold]
fn read_error(err: &axum::Error, metrics: &Metrics) -> Read {
    let ending = match tungstenite_error(err) {
        // A message over `MAX_MESSAGE_BYTES`.
        Some(tungstenite::Error::Capacity(_)) => {
            metrics.dropped(MediaDrop::TooLarge);
            Ending::new(
                EndReason::MessageTooLarge,
                Some((close::TOO_BIG, "message too large")),
            )
        }
        // The connection went away without a close frame: lost, not broken.
        Some(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => Ending::new(EndReason::Disconnected, None),
        Some(tungstenite::Error::Protocol(_)) => {
            metrics.dropped(MediaDrop::ProtocolError);
            Ending::new(
                EndReason::Error,
                Some((close::PROTOCOL, "websocket protocol error")),
            )
        }
        Some(tungstenite::Error::Utf8(_)) => {
            metrics.dropped(MediaDrop::ProtocolError);
            Ending::new(
                EndReason::Error,
                Some((close::INVALID_DATA, "text message is not UTF-8")),
            )
        }
        _ => Ending::new(EndReason::Disconnected, None),
    };
    Read::End(ending)
}

/// tungstenite's error, somewhere in the chain axum wraps it in.
fn tungstenite_error(err: &axum::Error) -> Option<&tungstenite::Error> {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(inner) = source {
        if let Some(found) = inner.downcast_ref::<tungstenite::Error>() {
            return Some(found);
        }
        source = inner.source();
    }
    None
}

/// Sends one message to Twilio. Nearly every send completes on its first poll; only one that has
/// to wait for the peer gets the write-stall timer, so the usual frame arms no timer at all.
pub(crate) async fn send<S: TwilioSocket>(
    socket: &mut S,
    message: Message,
    stall: Duration,
    metrics: &Metrics,
) -> Result<(), Ending> {
    let outcome = {
        let mut send = pin!(socket.send(message));
        match poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
            Poll::Ready(result) => Some(result),
            Poll::Pending => timeout(stall, send).await.ok(),
        }
    };
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(_)) => Err(Ending::new(EndReason::Disconnected, None)),
        None => Err(slow_consumer(metrics)),
    }
}

/// The ending of a stream whose peer stopped reading (a write waited the whole write stall).
pub(crate) fn slow_consumer(metrics: &Metrics) -> Ending {
    metrics.dropped(MediaDrop::SlowConsumer);
    Ending::new(
        EndReason::SlowConsumer,
        Some((close::POLICY, "slow consumer")),
    )
}

/// Sends a close frame and waits for the peer's (RFC 6455 §7.1.1), each step bounded in time.
pub(crate) async fn close<S: TwilioSocket>(socket: &mut S, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    if !matches!(
        timeout(CLOSE_SEND_TIMEOUT, socket.send(frame)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    // What the peer sent meanwhile is read and dropped; its close (or end) finishes the socket.
    let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    })
    .await;
}

/// Whether a live call must stop: the drain's deadline passed, or the call core told it to end
/// (a final status callback, its lock taken by another stream). A small task of the call's own
/// watches both tokens and reports on a oneshot: polling that once per frame is an atomic load,
/// where polling the two tokens took a mutex each, on cache lines no other frame touched.
pub(crate) struct StopWatch {
    stopped: oneshot::Receiver<()>,
    /// False once the watcher is gone without a signal (it cannot be, while we hold it).
    watching: bool,
    _watcher: AbortOnDropHandle<()>,
}

impl StopWatch {
    pub(crate) fn new(stop_streams: &CancellationToken, live: &LiveCall) -> Self {
        let (tx, stopped) = oneshot::channel::<()>();
        let stop = stop_streams.clone();
        let cancel = live.cancel_token().clone();
        let watcher = AbortOnDropHandle::new(tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = cancel.cancelled() => {}
            }
            let _ = tx.send(());
        }));
        Self {
            stopped,
            watching: true,
            _watcher: watcher,
        }
    }

    /// Ready once the call must stop; pending forever if the watcher is gone without a signal.
    #[inline]
    pub(crate) fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.watching {
            return Poll::Pending;
        }
        match self.stopped.poll_unpin(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(_)) => {
                self.watching = false;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Resolves once the call must stop.
    pub(crate) async fn stopped(&mut self) {
        poll_fn(|cx| self.poll_stopped(cx)).await;
    }
}
