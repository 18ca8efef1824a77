//! The replica's own lifecycle: whether it drains, the tracker of every stream task, and the one
//! drain deadline after which every stream is ended. The call core knows nothing of it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use calls_core::calls::Calls;
use tracing::warn;

use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// After the drain deadline, how long the streams told to stop get to write their final state,
/// release their slots and close their sockets before the server returns without them.
pub(crate) const STREAMS_END_GRACE: Duration = Duration::from_secs(5);

/// How long a draining replica trusts its last look at the other replicas' heartbeats: a burst of
/// webhooks and upgrades costs one store query a second, and a heartbeat changes once a tick.
const OTHERS_CACHE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Lifecycle {
    /// Every media-stream task, from its upgrade on: axum does not wait for upgraded sockets
    /// (axum#3003), so drain does.
    pub streams: TaskTracker,
    /// Cancelled when the drain ends: every stream still open ends as `drain_timeout`, and a
    /// socket that opens later is closed before its `start`.
    pub stop_streams: CancellationToken,
    draining: AtomicBool,
    /// When the other replicas were last looked at, and whether one was live and not draining.
    others_seen: Mutex<Option<(Instant, bool)>>,
}

/// Where a draining replica sends a new stream's upgrade (docs/reference.md#drain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewStream {
    /// Serve it here: not draining, or no other replica can.
    Host,
    /// Answer 503: another live replica exists, and nginx passes the upgrade to the next one.
    PassOn,
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

    /// Whether another replica is live and not draining (a fresh heartbeat): a draining replica
    /// then leaves new streams to it, and answers webhooks as any replica does; with none left,
    /// it must serve streams itself and refuse new calls. A store that cannot say counts as none.
    pub async fn others_live(&self, calls: &Calls) -> bool {
        let now = Instant::now();
        if let Some((seen, live)) = *self.others()
            && now.duration_since(seen) < OTHERS_CACHE
        {
            return live;
        }
        let live = match calls.other_live_replicas().await {
            Ok(count) => count > 0,
            Err(err) => {
                warn!(error = %err, "could not read the other replicas' heartbeats; acting as the last replica");
                false
            }
        };
        *self.others() = Some((now, live));
        live
    }

    /// What to do with a new stream's upgrade here (docs/reference.md#drain).
    pub async fn new_stream(&self, calls: &Calls) -> NewStream {
        if self.is_draining() && self.others_live(calls).await {
            NewStream::PassOn
        } else {
            NewStream::Host
        }
    }

    fn others(&self) -> std::sync::MutexGuard<'_, Option<(Instant, bool)>> {
        self.others_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many streams are open here (sockets waiting for `start` included).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }
}
