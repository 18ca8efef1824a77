//! The replica's own lifecycle: whether it drains, the tracker of every stream task, and the one
//! drain deadline after which every stream is ended. The call core knows nothing of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// After the drain deadline, how long the streams told to stop get to write their final state,
/// release their slots and close their sockets before the server returns without them.
pub const STREAMS_END_GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Lifecycle {
    /// Every media-stream task, from its upgrade on: axum does not wait for upgraded sockets
    /// (axum#3003), so drain does.
    pub streams: TaskTracker,
    /// Cancelled when the drain ends: every stream still open ends as `drain_timeout`, and a
    /// socket that opens later is closed before its `start`.
    pub stop_streams: CancellationToken,
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts the drain; returns false if it had already started.
    pub fn start_draining(&self) -> bool {
        !self.draining.swap(true, Ordering::Relaxed)
    }

    /// Waits until no stream is open here or `deadline` passes; true if none is left. Streams
    /// that open meanwhile are waited for too, up to the same deadline.
    pub async fn streams_gone_by(&self, deadline: Instant) -> bool {
        // Closing only lets `wait` resolve once the tracker is empty; streams may still join it.
        self.streams.close();
        timeout_at(deadline, self.streams.wait()).await.is_ok()
    }

    /// Ends every stream still open (and any that opens later) and waits up to
    /// `STREAMS_END_GRACE` for them; true if they all finished in time.
    pub async fn end_streams(&self) -> bool {
        self.stop_streams.cancel();
        self.streams.close();
        timeout(STREAMS_END_GRACE, self.streams.wait())
            .await
            .is_ok()
    }

    /// How many streams are open here (sockets waiting for `start` included).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }
}
