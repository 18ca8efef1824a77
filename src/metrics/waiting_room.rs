//! The waiting room's and the WhatsApp hand-off's metrics (docs/reference.md#waiting-room): the
//! line's size and longest wait (cluster-wide), what became of its callers, the messages sent.

use std::time::Duration;

use calls_core::wait::OverflowReason;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::labels::WhatsAppResult;
use super::{Label, at_zero};

pub struct WaitMetrics {
    /// Callers in line, cluster-wide, as the last sweep (tick or scrape) found them.
    pub waiting: Gauge,
    /// The longest current wait in line, cluster-wide, in seconds.
    pub longest: Gauge,
    pub admitted: Counter,
    pub abandoned: Counter,
    overflow: Family<Label, Counter>,
    /// The wait of callers admitted from the line.
    pub seconds: Histogram,
    whatsapp: Family<Label, Counter>,
}

impl WaitMetrics {
    pub(super) fn new(reg: &mut Registry) -> Self {
        let m = Self {
            waiting: Gauge::default(),
            longest: Gauge::default(),
            admitted: Counter::default(),
            abandoned: Counter::default(),
            overflow: Family::default(),
            // 0.5 s .. ~17 min: a turn comes at a visit (every WAIT_POLL_SECS); the tail reaches
            // past any WAIT_MAX_SECS worth setting.
            seconds: Histogram::new(exponential_buckets(0.5, 2.0, 12)),
            whatsapp: Family::default(),
        };
        reg.register(
            "calls_waiting",
            "Callers in the waiting room's line, cluster-wide",
            m.waiting.clone(),
        );
        reg.register(
            "calls_wait_longest_seconds",
            "The longest current wait in the waiting room's line, cluster-wide",
            m.longest.clone(),
        );
        reg.register(
            "calls_wait_admitted",
            "Callers this replica admitted from the waiting room's line",
            m.admitted.clone(),
        );
        reg.register(
            "calls_wait_abandoned",
            "Callers who left the waiting room's line unserved (hung up, or stopped coming back)",
            m.abandoned.clone(),
        );
        reg.register(
            "calls_wait_overflow",
            "Callers sent from the waiting room to the reject mode, by reason: timeout, digit, full",
            m.overflow.clone(),
        );
        reg.register(
            "calls_wait_seconds",
            "How long callers admitted from the waiting room's line waited",
            m.seconds.clone(),
        );
        reg.register(
            "calls_whatsapp",
            "WhatsApp messages to callers turned away, by result: sent, failed, cooldown, no_number",
            m.whatsapp.clone(),
        );
        for reason in OverflowReason::ALL {
            at_zero(&m.overflow, "reason", reason.as_str());
        }
        for result in WhatsAppResult::ALL {
            at_zero(&m.whatsapp, "result", result.as_str());
        }
        m
    }

    pub fn overflow(&self, reason: OverflowReason) {
        self.overflow
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    pub fn whatsapp(&self, result: WhatsAppResult) {
        self.whatsapp
            .get_or_create(&[("result", result.as_str())])
            .inc();
    }

    pub fn admitted(&self, waited: Duration) {
        self.admitted.inc();
        self.seconds.observe(waited.as_secs_f64());
    }

    /// The line as a sweep found it.
    pub fn line(&self, waiting: u64, longest: Duration) {
        self.waiting.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.longest
            .set(i64::try_from(longest.as_secs()).unwrap_or(i64::MAX));
    }
}
