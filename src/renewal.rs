//! The renewal task: runs the call core's tick every `RENEW_INTERVAL_SECS` (leases, locks, state
//! flush, reclaim, heartbeat; one script per 100 live calls) until the server stops it.

use std::sync::Arc;
use std::time::Duration;

use calls_core::calls::Calls;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Lifecycle;

/// Runs ticks every `every` (`RENEW_INTERVAL_SECS`), and one at once whenever the store finds Redis
/// lost its data, restarted or was out of reach for longer than a lease, until `stop` is cancelled.
pub(crate) async fn run(
    calls: Arc<Calls>,
    lifecycle: Arc<Lifecycle>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
            () = calls.reregister_wanted() => {}
        }
        // Errors are logged and counted by the core; the next tick retries.
        let _ = calls.renew(lifecycle.is_draining()).await;
        // Callers silent for two polls leave the waiting line even when nobody visits it.
        let _ = calls.sweep_line().await;
    }
}
