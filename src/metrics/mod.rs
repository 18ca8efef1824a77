//! Every metric this replica exposes (docs/reference.md#metrics), registered once in a per-process
//! registry. Label values come from fixed sets (reasons, operations), never from call SIDs.

mod labels;
mod process;
mod waiting_room;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use calls_core::calls::RejectReason;
use calls_core::events::CallEvents;
use calls_core::state::EndReason;
use calls_core::store::{ClusterStats, RenewReport, Shed, TenantsUsage};
use calls_core::wait::OverflowReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub(crate) use self::labels::{
    Answer, BridgeDrop, BridgeFailure, Direction, HttpReject, MediaDrop, OutboundResult,
    WhatsAppResult,
};
pub(crate) use self::waiting_room::WaitMetrics;

/// One label with a value from a fixed set, e.g. `reason="bad_base64"`.
pub(crate) type Label = [(&'static str, &'static str); 1];
/// `tenant="AC…"`: only with `TENANT_METRICS=1`, since tenants can be many.
pub(crate) type TenantLabel = [(&'static str, String); 1];

/// Per-tenant series (`TENANT_METRICS=1`), refreshed from the cluster at each scrape.
#[derive(Default)]
pub struct TenantSeries {
    /// Live slots per tenant, reservations included (`calls:tenant:{tenant}:slots`).
    pub active: Family<TenantLabel, Gauge>,
    /// The cap in force per tenant; a tenant with none has no series.
    pub limit: Family<TenantLabel, Gauge>,
}

pub struct Metrics {
    registry: Registry,
    /// Streams live on this replica.
    pub calls_active: Gauge,
    /// Slots this replica took (webhook reservations and streams admitted without one).
    pub calls_started: Counter,
    pub calls_rejected_max_concurrent: Counter,
    /// Calls this replica refused under the global cap but at their tenant's
    /// (docs/reference.md#tenants).
    pub calls_rejected_tenant_limit: Counter,
    /// Every refusal by reason: max_concurrent, recovering, draining, store_unavailable, …
    pub calls_rejected: Family<Label, Counter>,
    pub calls_ended: Family<Label, Counter>,
    /// The cluster's figures as Redis last gave them (`calls_cluster_*`).
    cluster: Arc<ClusterFigures>,
    /// `Some` with `TENANT_METRICS=1`.
    pub tenants: Option<TenantSeries>,
    pub admission_duration: Histogram,
    pub redis_errors: Family<Label, Counter>,
    pub frames_in: Counter,
    pub frames_out: Counter,
    media_dropped: Family<Label, Counter>,
    pub sockets_open: Gauge,
    pub draining: Gauge,
    /// Live calls a renewal had to re-add (slot reclaimed while paused, Redis lost its data).
    pub calls_reregistered: Counter,
    /// Renewals that left the cluster above its limit (live calls are never dropped to fix it).
    pub over_limit_events: Counter,
    http_rejected: Family<Label, Counter>,
    /// `MAX_CONCURRENT_CALLS`, so dashboards draw the limit beside the live calls.
    pub max_concurrent: Gauge,
    /// Media streams this replica served (`calls_started` counts slots taken, webhooks included).
    pub streams_started: Counter,
    /// Fallback-URL requests answered with the fallback message.
    pub fallbacks_served: Counter,
    /// Webhooks answered whose stream never came (their reservation lapsed).
    pub reservations_lapsed: Counter,
    /// Webhook admissions refused without Redis' answer, by cause: `queue_full`, `deadline`.
    admissions_shed: Family<Label, Counter>,
    /// `bridge` mode (docs/reference.md#bridge): the agent's handshake time, successful ones.
    pub bridge_connect_duration: Histogram,
    bridge_failures: Family<Label, Counter>,
    /// Messages relayed, `direction="to_agent"` or `"to_twilio"`.
    bridge_messages: Family<Label, Counter>,
    bridge_dropped: Family<Label, Counter>,
    pub bridges_open: Gauge,
    /// Streams that took over a call continued after its stream was lost
    /// (docs/reference.md#after-stream).
    pub calls_resumed: Counter,
    /// After-stream answers by kind: `hangup`, `fallback`, `continue`.
    after_stream: Family<Label, Counter>,
    /// The waiting room and the WhatsApp hand-off (docs/reference.md#waiting-room).
    pub wait: WaitMetrics,
    /// Outbound calls by result, as this replica saw them happen (docs/reference.md#outbound).
    outbound: Family<Label, Counter>,
    /// Outbound calls queued, not yet placed, cluster-wide (read at each scrape).
    pub outbound_queued: Gauge,
    /// Outbound calls' time from queued to placed (the REST request sent).
    pub outbound_dial: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_tenant_series(false)
    }

    /// `tenant_series`: `TENANT_METRICS=1`, per-tenant labelled series.
    pub fn with_tenant_series(tenant_series: bool) -> Self {
        let mut registry = Registry::default();
        let m = Self {
            calls_active: Gauge::default(),
            calls_started: Counter::default(),
            calls_rejected_max_concurrent: Counter::default(),
            calls_rejected_tenant_limit: Counter::default(),
            calls_rejected: Family::default(),
            calls_ended: Family::default(),
            cluster: Arc::default(),
            tenants: tenant_series.then(TenantSeries::default),
            // 100 µs .. ~3.3 s: loopback Redis answers in well under a millisecond; the tail shows
            // a struggling or remote Redis.
            admission_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
            redis_errors: Family::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            media_dropped: Family::default(),
            sockets_open: Gauge::default(),
            draining: Gauge::default(),
            calls_reregistered: Counter::default(),
            over_limit_events: Counter::default(),
            http_rejected: Family::default(),
            max_concurrent: Gauge::default(),
            streams_started: Counter::default(),
            fallbacks_served: Counter::default(),
            reservations_lapsed: Counter::default(),
            admissions_shed: Family::default(),
            // 1 ms .. ~16 s: a local agent accepts in a millisecond; the tail reaches past any
            // BRIDGE_CONNECT_TIMEOUT_SECS worth setting.
            bridge_connect_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
            ),
            bridge_failures: Family::default(),
            bridge_messages: Family::default(),
            bridge_dropped: Family::default(),
            bridges_open: Gauge::default(),
            calls_resumed: Counter::default(),
            after_stream: Family::default(),
            wait: WaitMetrics::new(&mut registry),
            outbound: Family::default(),
            outbound_queued: Gauge::default(),
            // 10 ms .. ~5.5 h: a call placed at once, or after a campaign's queue drained.
            outbound_dial: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 21),
            ),
            registry: Registry::default(),
        };
        let reg = &mut registry;
        reg.register(
            "calls_active",
            "Media streams live on this replica",
            m.calls_active.clone(),
        );
        reg.register(
            "calls_started",
            "Slots taken by this replica",
            m.calls_started.clone(),
        );
        reg.register(
            "calls_rejected_max_concurrent",
            "Calls this replica refused because every slot was taken",
            m.calls_rejected_max_concurrent.clone(),
        );
        reg.register(
            "calls_rejected_tenant_limit",
            "Calls this replica refused under the global cap but at their tenant's cap",
            m.calls_rejected_tenant_limit.clone(),
        );
        reg.register(
            "calls_rejected",
            "Calls this replica refused, by reason",
            m.calls_rejected.clone(),
        );
        reg.register(
            "calls_ended",
            "Calls that ended on this replica, by end reason",
            m.calls_ended.clone(),
        );
        reg.register_collector(Box::new(m.cluster.clone()));
        if let Some(tenants) = &m.tenants {
            reg.register(
                "calls_tenant_active",
                "Live slots per tenant, reservations included (TENANT_METRICS=1)",
                tenants.active.clone(),
            );
            reg.register(
                "calls_tenant_limit",
                "The cap in force per tenant (TENANT_METRICS=1)",
                tenants.limit.clone(),
            );
        }
        reg.register(
            "calls_admission_duration_seconds",
            "Time to admit or refuse a call in the state store",
            m.admission_duration.clone(),
        );
        reg.register(
            "redis_errors",
            "State-store errors and timeouts, by operation",
            m.redis_errors.clone(),
        );
        reg.register(
            "media_frames_in",
            "Inbound media frames accepted",
            m.frames_in.clone(),
        );
        reg.register(
            "media_frames_out",
            "Outbound media frames sent",
            m.frames_out.clone(),
        );
        reg.register(
            "media_messages_dropped",
            "Inbound stream messages dropped, by reason",
            m.media_dropped.clone(),
        );
        reg.register(
            "websocket_sockets_open",
            "Media-stream WebSockets open on this replica",
            m.sockets_open.clone(),
        );
        reg.register(
            "calls_draining",
            "1 while this replica drains after SIGTERM",
            m.draining.clone(),
        );
        reg.register(
            "calls_reregistered",
            "Live calls whose lost slot a renewal re-added",
            m.calls_reregistered.clone(),
        );
        reg.register(
            "calls_over_limit_events",
            "Renewals that left the cluster above MAX_CONCURRENT_CALLS",
            m.over_limit_events.clone(),
        );
        reg.register(
            "http_requests_rejected",
            "Twilio requests refused before any state changed, by reason",
            m.http_rejected.clone(),
        );
        reg.register(
            "calls_max_concurrent",
            "MAX_CONCURRENT_CALLS as this replica was configured",
            m.max_concurrent.clone(),
        );
        reg.register(
            "calls_streams_started",
            "Media streams this replica started serving",
            m.streams_started.clone(),
        );
        reg.register(
            "calls_fallback_served",
            "Fallback-URL requests answered with the fallback message",
            m.fallbacks_served.clone(),
        );
        reg.register(
            "calls_reservations_lapsed",
            "Webhooks answered whose media stream never came (reservation lapsed)",
            m.reservations_lapsed.clone(),
        );
        reg.register(
            "calls_admissions_shed",
            "Webhook admissions refused without Redis' answer, by cause: queue_full, deadline",
            m.admissions_shed.clone(),
        );
        reg.register(
            "bridge_connect_duration_seconds",
            "Time for the voice agent to accept its WebSocket (bridge mode)",
            m.bridge_connect_duration.clone(),
        );
        reg.register(
            "bridge_failures",
            "Bridges to the voice agent that failed, by reason",
            m.bridge_failures.clone(),
        );
        reg.register(
            "bridge_messages",
            "Messages relayed between Twilio and the voice agent, by direction",
            m.bridge_messages.clone(),
        );
        reg.register(
            "bridge_messages_dropped",
            "Messages from the voice agent dropped instead of reaching Twilio, by reason",
            m.bridge_dropped.clone(),
        );
        reg.register(
            "bridges_open",
            "Voice-agent sockets open on this replica",
            m.bridges_open.clone(),
        );
        reg.register(
            "calls_resumed",
            "Calls continued on a new stream of this replica after their stream was lost",
            m.calls_resumed.clone(),
        );
        reg.register(
            "calls_after_stream",
            "After-stream answers by kind: hangup, fallback, continue",
            m.after_stream.clone(),
        );
        reg.register(
            "calls_outbound",
            "Outbound calls by result: answered, busy, no-answer, failed, canceled",
            m.outbound.clone(),
        );
        reg.register(
            "calls_outbound_queued",
            "Outbound calls queued, not yet placed, cluster-wide",
            m.outbound_queued.clone(),
        );
        reg.register(
            "calls_outbound_dial_seconds",
            "Outbound calls' time from queued to placed",
            m.outbound_dial.clone(),
        );
        let build_info = Family::<[(&'static str, &'static str); 2], Gauge>::default();
        build_info
            .get_or_create(&[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("PROSAAS_CALLS_COMMIT")),
            ])
            .set(1);
        reg.register(
            "prosaas_calls_build_info",
            "Always 1; the labels say which build this replica runs",
            build_info,
        );
        reg.register_collector(Box::new(process::ProcessMetrics));
        // Every known label exists at zero from start-up, so `increase(...) > 0` sees the first
        // incident instead of a series that appears with it.
        for reason in RejectReason::ALL {
            at_zero(&m.calls_rejected, "reason", reason.as_str());
        }
        for reason in EndReason::ALL {
            at_zero(&m.calls_ended, "reason", reason.as_str());
        }
        for op in calls_core::store::OPERATIONS {
            at_zero(&m.redis_errors, "op", op);
        }
        for reason in MediaDrop::ALL {
            at_zero(&m.media_dropped, "reason", reason.as_str());
        }
        for reason in HttpReject::ALL {
            at_zero(&m.http_rejected, "reason", reason.as_str());
        }
        for reason in BridgeFailure::ALL {
            at_zero(&m.bridge_failures, "reason", reason.as_str());
        }
        for direction in Direction::ALL {
            at_zero(&m.bridge_messages, "direction", direction.as_str());
        }
        for reason in BridgeDrop::ALL {
            at_zero(&m.bridge_dropped, "reason", reason.as_str());
        }
        for answer in Answer::ALL {
            at_zero(&m.after_stream, "answer", answer.as_str());
        }
        for cause in Shed::ALL {
            at_zero(&m.admissions_shed, "cause", cause.as_str());
        }
        for result in OutboundResult::ALL {
            at_zero(&m.outbound, "result", result.as_str());
        }
        Self { registry, ..m }
    }

    pub fn redis_error(&self, op: &'static str) {
        self.redis_errors.get_or_create(&[("op", op)]).inc();
    }

    /// An inbound stream message dropped for `reason`.
    pub fn dropped(&self, reason: MediaDrop) {
        self.media_dropped
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    fn rejected(&self, reason: RejectReason) {
        self.calls_rejected
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    pub fn bridge_failed(&self, reason: BridgeFailure) {
        self.bridge_failures
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    /// An agent's message dropped for `reason`; `count` of them at once.
    pub fn bridge_dropped(&self, reason: BridgeDrop, count: u64) {
        self.bridge_dropped
            .get_or_create(&[("reason", reason.as_str())])
            .inc_by(count);
    }

    /// The counter of messages relayed in `direction`, for a relay to batch into.
    pub fn bridge_messages(&self, direction: Direction) -> Counter {
        self.bridge_messages
            .get_or_create(&[("direction", direction.as_str())])
            .clone()
    }

    fn ended(&self, reason: EndReason) {
        self.calls_ended
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    pub fn http_rejected(&self, reason: HttpReject) {
        self.http_rejected
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    /// One `/twilio/after-stream` answered with `answer`.
    pub fn after_stream(&self, answer: Answer) {
        self.after_stream
            .get_or_create(&[("answer", answer.as_str())])
            .inc();
    }

    /// An outbound call moved to `status` here; its result, if it is one, is counted.
    pub fn outbound(&self, status: calls_core::outbound::OutboundStatus) {
        if let Some(result) = OutboundResult::of(status) {
            self.outbound_result(result);
        }
    }

    /// One outbound call with `result`.
    pub fn outbound_result(&self, result: OutboundResult) {
        self.outbound
            .get_or_create(&[("result", result.as_str())])
            .inc();
    }

    /// Keeps the cluster's figures as Redis gave them, for the next exposition.
    pub fn cluster(&self, stats: &ClusterStats) {
        self.cluster.set(stats);
    }

    /// Mirrors the cluster's per-tenant figures into the tenant series, if they are on; a tenant
    /// gone since the last scrape loses its series.
    pub fn set_tenants(&self, usage: &TenantsUsage) {
        let Some(series) = &self.tenants else { return };
        series.active.clear();
        series.limit.clear();
        for (tenant, entry) in usage {
            let label = [("tenant", tenant.clone())];
            series
                .active
                .get_or_create(&label)
                .set(i64::try_from(entry.active).unwrap_or(i64::MAX));
            if let Some(limit) = entry.limit {
                series
                    .limit
                    .get_or_create(&label)
                    .set(i64::try_from(limit).unwrap_or(i64::MAX));
            }
        }
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Creates the series `family{name="value"}` at zero.
fn at_zero(family: &Family<Label, Counter>, name: &'static str, value: &'static str) {
    drop(family.get_or_create(&[(name, value)]));
}

/// The call core reports here; each event becomes the counters docs/reference.md#metrics names.
impl CallEvents for Metrics {
    fn slot_taken(&self) {
        self.calls_started.inc();
    }

    fn refused(&self, reason: RejectReason) {
        match reason {
            RejectReason::MaxConcurrent => self.calls_rejected_max_concurrent.inc(),
            RejectReason::TenantLimit => self.calls_rejected_tenant_limit.inc(),
            _ => 0,
        };
        self.rejected(reason);
    }

    fn store_error(&self, op: &'static str) {
        self.redis_error(op);
    }

    fn admission_shed(&self, cause: Shed) {
        self.admissions_shed
            .get_or_create(&[("cause", cause.as_str())])
            .inc();
    }

    fn admission_time(&self, elapsed: Duration) {
        self.admission_duration.observe(elapsed.as_secs_f64());
    }

    fn stream_started(&self) {
        self.streams_started.inc();
    }

    fn resumed(&self) {
        self.calls_resumed.inc();
    }

    fn live_streams(&self, count: usize) {
        self.calls_active
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn reservation_lapsed(&self) {
        self.reservations_lapsed.inc();
    }

    fn stream_ended(&self, reason: EndReason) {
        self.ended(reason);
    }

    fn wait_admitted(&self, waited: Duration) {
        self.wait.admitted(waited);
    }

    fn wait_abandoned(&self) {
        self.wait.abandoned.inc();
    }

    fn wait_overflow(&self, reason: OverflowReason) {
        self.wait.overflow(reason);
    }

    fn wait_line(&self, waiting: u64, longest: Duration) {
        self.wait.line(waiting, longest);
    }

    fn renewed(&self, report: &RenewReport, limit: u64) {
        self.cluster.active.store(report.active, Ordering::Relaxed);
        if !report.readded.is_empty() {
            self.calls_reregistered.inc_by(report.readded.len() as u64);
        }
        if report.active > limit {
            self.over_limit_events.inc();
        }
    }
}

/// The cluster's totals as Redis last gave them, encoded at scrape time. Redis owns them (a data
/// loss starts them again), so they are shown as read instead of being kept in this process's
/// counters, which must never go backwards.
#[derive(Debug, Default)]
struct ClusterFigures {
    active: AtomicU64,
    started: AtomicU64,
    rejected_max_concurrent: AtomicU64,
    rejected_tenant_limit: AtomicU64,
}

impl ClusterFigures {
    fn set(&self, stats: &ClusterStats) {
        self.active.store(stats.active, Ordering::Relaxed);
        self.started.store(stats.started, Ordering::Relaxed);
        self.rejected_max_concurrent
            .store(stats.rejected_max_concurrent, Ordering::Relaxed);
        self.rejected_tenant_limit
            .store(stats.rejected_tenant_limit, Ordering::Relaxed);
    }
}

impl Collector for ClusterFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let active =
            ConstGauge::new(i64::try_from(self.active.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        active.encode(encoder.encode_descriptor(
            "calls_cluster_active",
            "Live slots cluster-wide (calls:active_count)",
            None,
            active.metric_type(),
        )?)?;
        let totals = [
            (
                "calls_cluster_started",
                "Slots taken cluster-wide (calls:stats:started)",
                &self.started,
            ),
            (
                "calls_cluster_rejected_max_concurrent",
                "Calls refused at the limit cluster-wide (calls:stats:rejected_max_concurrent)",
                &self.rejected_max_concurrent,
            ),
            (
                "calls_cluster_rejected_tenant_limit",
                "Calls refused at their tenant's cap cluster-wide (calls:stats:rejected_tenant_limit)",
                &self.rejected_tenant_limit,
            ),
        ];
        for (name, help, value) in totals {
            let total = ConstCounter::new(value.load(Ordering::Relaxed));
            total.encode(encoder.encode_descriptor(name, help, None, total.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_totals_and_every_error_series_exist_at_zero_from_start_up() {
        let text = Metrics::new().render();
        for total in [
            "calls_cluster_active 0",
            "calls_cluster_started_total 0",
            "calls_cluster_rejected_max_concurrent_total 0",
            "calls_cluster_rejected_tenant_limit_total 0",
        ] {
            assert!(text.lines().any(|line| line == total), "{total}\n{text}");
        }
        for op in calls_core::store::OPERATIONS {
            let series = format!("redis_errors_total{{op=\"{op}\"}} 0");
            assert!(text.lines().any(|line| line == series), "{series}");
        }
        for cause in Shed::ALL {
            let series = format!(
                "calls_admissions_shed_total{{cause=\"{}\"}} 0",
                cause.as_str()
            );
            assert!(text.lines().any(|line| line == series), "{series}");
        }
    }
}
