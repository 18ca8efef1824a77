//! The renewal task: runs the call core's tick every `RENEW_INTERVAL_SECS` (leases, locks, state
//! flush, reclaim, heartbeat; one script per 100 live calls) until the server stops it.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// Runs ticks every `RENEW_INTERVAL_SECS`, and one at once whenever the store finds Redis lost its
/// data, restarted or was out of reach for longer than a lease, until `stop` is cancelled.
pub async fn run(app: Arc<App>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(app.config.renew_interval);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
            () = app.calls.reregister_wanted() => {}
        }
        // Errors are logged and counted by the core; the next tick retries.
        let _ = app.calls.renew(app.is_draining()).await;
    }
}
