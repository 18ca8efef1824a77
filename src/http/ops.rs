//! Operator endpoints: liveness, readiness, and metrics as JSON (docs/reference.md#metrics) and
//! Prometheus text. Cluster figures come from the store in one round trip; replica figures from
//! this process.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use calls_core::calls::LineSummary;
use calls_core::store::{ClusterStats, StoreError, TenantsUsage};
use calls_core::tenant::TenantKey;

use crate::app::App;

/// Readiness must answer faster than a load balancer's probe timeout even when Redis hangs.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the store failed, for an HTTP answer: a class of failure, never the client library's
/// text (which may carry an address, a key or a reply). The full error goes to the logs.
fn store_problem(err: &StoreError) -> String {
    let class = match err {
        StoreError::Timeout { .. } => "no answer in time",
        StoreError::NotConnected { .. } => "connection failed",
        StoreError::Redis { source, .. } => {
            if source.is_connection_refusal() {
                "connection refused"
            } else if caused_by_tls(source) {
                "TLS failed"
            } else if source.is_timeout() {
                "timed out"
            } else if source.is_connection_dropped() {
                "connection lost"
            } else if matches!(source.code(), Some("WRONGPASS" | "NOAUTH"))
                || source.category() == "authentication failed"
            {
                "authentication failed"
            } else if source.code() == Some("NOPERM") {
                "permission denied"
            } else if calls_core::store::refuses_writes(source) {
                "refuses writes: not the primary, or cut off from its replicas"
            } else if source.is_io_error() {
                "I/O error"
            } else {
                "error"
            }
        }
        StoreError::CorruptState { .. } => "unreadable call state",
        StoreError::UnexpectedReply { .. } => "unexpected reply",
        StoreError::Connect(_) => "bad connection settings",
        StoreError::Shed { .. } => "too slow for the admissions arriving",
    };
    let what = if err.is_unavailable() {
        "state store unreachable"
    } else {
        "state store failed"
    };
    format!("{what} ({class})")
}

/// Whether a rustls error is anywhere in the chain (an I/O error may wrap it).
fn caused_by_tls(err: &(dyn Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.get_ref().is_some_and(|inner| caused_by_tls(inner))
        {
            return true;
        }
        next = err.source();
    }
    false
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_draining() {
        return not_ready("draining".into());
    }
    let store = app.calls().store();
    if store.admissions_stopped() {
        return not_ready(
            "the admission task stopped; every webhook is refused until this replica restarts"
                .into(),
        );
    }
    match tokio::time::timeout(READY_PING_TIMEOUT, store.admission_wait()).await {
        Ok(Ok(None)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Ok(Some(left))) => not_ready(format!(
            "recovering: Redis lost its data or was out of reach; live calls re-register before new calls are admitted (about {} s left)",
            left.as_secs().max(1)
        )),
        Ok(Err(err)) => {
            app.metrics().redis_error(err.op());
            not_ready(store_problem(&err))
        }
        Err(_) => not_ready("state store did not answer within 1 s".into()),
    }
}

/// 503 with the reason (docs/reference.md#readiness).
fn not_ready(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {reason}\n"),
    )
        .into_response()
}

/// Reads the cluster figures (with the tenants' where tenants are on) in one round trip and
/// mirrors them into the Prometheus gauges.
async fn cluster_stats(app: &App) -> Result<(ClusterStats, Option<TenantsUsage>), String> {
    let tenants_on = app.calls().config().tenant_key != TenantKey::None;
    match app.calls().store().snapshot(tenants_on).await {
        Ok((stats, tenants)) => {
            app.metrics().cluster(&stats);
            crate::outbound::refresh_queued_gauge(app).await;
            if tenants_on {
                app.metrics().set_tenants(&tenants);
            }
            Ok((stats, tenants_on.then_some(tenants)))
        }
        Err(err) => {
            app.metrics().redis_error(err.op());
            Err(store_problem(&err))
        }
    }
}

pub(super) async fn metrics_json(State(app): State<Arc<App>>) -> Response {
    let replica = json!({
        "id": app.config().replica_id,
        "calls_active": app.calls().live().len(),
        "calls_started": app.metrics().calls_started.get(),
        "calls_rejected_max_concurrent": app.metrics().calls_rejected_max_concurrent.get(),
        "calls_rejected_tenant_limit": app.metrics().calls_rejected_tenant_limit.get(),
        "draining": app.is_draining(),
    });
    match cluster_stats(&app).await {
        Ok((stats, tenants)) => {
            let mut body = json!({
                "calls_active": stats.active,
                "calls_started": stats.started,
                "calls_rejected_max_concurrent": stats.rejected_max_concurrent,
                "calls_rejected_tenant_limit": stats.rejected_tenant_limit,
                "max_concurrent_calls": app.config().max_concurrent_calls,
                "state_backend": app.calls().store().backend().as_str(),
                "replica": replica,
            });
            if let Some(tenants) = tenants {
                body["tenants"] = json!(tenants);
            }
            // docs/reference.md#waiting-room: the line, cluster-wide, where the room is on.
            let line = match app.calls().waiting_room() {
                None => Some(LineSummary::default()),
                Some(_) => app.calls().sweep_line().await,
            };
            if let Some(line) = line {
                body["calls_waiting"] = json!(line.waiting);
            }
            Json(body).into_response()
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": error,
                "max_concurrent_calls": app.config().max_concurrent_calls,
                "state_backend": app.calls().store().backend().as_str(),
                "replica": replica,
            })),
        )
            .into_response(),
    }
}

pub(super) async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    // A failed read keeps the last cluster figures; the error counter tells the story.
    let _ = cluster_stats(&app).await;
    // The waiting line's gauges, fresh at each scrape (a failed sweep keeps the last).
    let _ = app.calls().sweep_line().await;
    app.metrics()
        .calls_active
        .set(app.calls().live().len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_problems_name_a_class_never_the_detail() {
        let timeout = StoreError::Timeout {
            op: "ping",
            addr: "10.0.0.5:6379".to_owned(),
            timeout: Duration::from_secs(2),
        };
        assert_eq!(
            store_problem(&timeout),
            "state store unreachable (no answer in time)"
        );
        let odd = StoreError::UnexpectedReply {
            op: "stats",
            detail: "hunter2".to_owned(),
        };
        assert_eq!(store_problem(&odd), "state store failed (unexpected reply)");
    }
}
