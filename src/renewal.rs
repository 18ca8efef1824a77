//! The renewal tick: one batched store round trip per replica per tick renews every live call's lease
//! and lock, flushes its counters, reclaims lapsed slots cluster-wide and writes the heartbeat.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::App;
use crate::store::{RenewBatch, RenewReport, Renewal, ReplicaHeartbeat, StoreError};

const RETRY_AFTER_CONNECTION_LOSS: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs ticks every `RENEW_INTERVAL_SECS` until `stop` is cancelled.
pub async fn run(app: Arc<App>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(app.config.renew_interval);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let _ = tick(&app).await;
    }
}

/// One tick. Errors are logged and counted here; the caller may ignore them.
pub async fn tick(app: &App) -> Result<RenewReport, StoreError> {
    let calls = app.calls.all();
    let batch = RenewBatch {
        lease: app.config.call_lease,
        calls: calls
            .iter()
            .map(|call| Renewal {
                call_sid: call.call_sid.clone(),
                lock_token: call.lock_token.clone(),
                state: Some(call.snapshot()),
            })
            .collect(),
        heartbeat: ReplicaHeartbeat {
            id: app.config.replica_id.clone(),
            started_at: app.started_at.clone(),
            calls_active: calls.len() as u64,
            draining: app.is_draining(),
        },
        heartbeat_ttl: app.config.renew_interval * 3,
    };
    let mut result = app.store.renew(&batch).await;
    if let Err(err) = &result
        && err.is_unavailable()
    {
        // The first command after a Redis restart often meets the dead connection; the manager
        // reconnects at once, and live calls must not wait a whole tick to re-register.
        tokio::time::sleep(RETRY_AFTER_CONNECTION_LOSS).await;
        result = app.store.renew(&batch).await;
    }
    let report = match result {
        Ok(report) => report,
        Err(err) => {
            app.metrics.redis_error(err.op());
            warn!(error = %err, calls = calls.len(), "renewal failed; live calls go on, leases retry next tick");
            return Err(err);
        }
    };
    app.metrics.cluster_active.set(report.active as i64);
    if !report.readded.is_empty() {
        app.metrics
            .calls_reregistered
            .inc_by(report.readded.len() as u64);
        for call_sid in &report.readded {
            warn!(%call_sid, "live call had lost its slot (reclaimed or Redis data lost); re-registered");
        }
    }
    for call_sid in &report.lock_lost {
        warn!(%call_sid, "another stream owns this call's lock now; its state is no longer written from here");
    }
    if report.active > app.config.max_concurrent_calls {
        app.metrics.over_limit_events.inc();
        warn!(
            active = report.active,
            limit = app.config.max_concurrent_calls,
            over = report.active - app.config.max_concurrent_calls,
            "cluster above its limit after re-registering live calls; no new call is admitted until it drops"
        );
    }
    if !report.reclaimed.is_empty() {
        info!(count = report.reclaimed.len(), calls = ?report.reclaimed, "reclaimed lapsed slots");
    }
    Ok(report)
}
