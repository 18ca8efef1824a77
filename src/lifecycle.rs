//! The replica's own lifecycle: whether it drains, the tracker of every stream task, and the token
//! that ends the streams left at the drain deadline. The call core knows nothing of it.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Default)]
pub struct Lifecycle {
    /// Every media-stream task: axum does not wait for upgraded sockets (axum#3003), so drain does.
    pub streams: TaskTracker,
    /// Cancelled at the drain deadline: every stream still open ends as `drain_timeout`.
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
}
