//! The counters every simulated call adds to while it runs: relaxed atomics read by the progress
//! line, the steady-state window and the final report; errors are counted by kind, with the first
//! message of each kind kept to say why.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::SimError;
use super::histogram::Histogram;
use super::webhook::RejectMode;

#[derive(Default)]
pub struct Stats {
    pub launched: Counter,
    pub admitted: Counter,
    pub rejected_503: Counter,
    pub rejected_twiml: Counter,
    pub rejected_busy: Counter,
    /// The stream was refused at `start` with 1013 (over the limit, or a draining replica).
    pub rejected_stream: Counter,
    pub failed: Counter,
    pub completed: Counter,
    /// Calls now past `start` and not yet ended.
    pub streaming: Counter,
    /// Calls that finished setting up, one way or another (streaming, refused or failed).
    pub settled: Counter,
    pub frames_sent: Counter,
    pub frames_echoed: Counter,
    /// Echoes that name a chunk this call never sent or already saw echoed.
    pub echoes_unmatched: Counter,
    /// Echoes that came back after a later frame's echo (a relay that reorders).
    pub echoes_reordered: Counter,
    /// Frames written more than `LATE_AFTER` behind their schedule.
    pub frames_late: Counter,
    pub marks_sent: Counter,
    pub marks_echoed: Counter,
    pub dtmf_sent: Counter,
    /// Other messages from the server (`clear`, unknown events, binary frames).
    pub other_messages: Counter,
    pub echo_latency: Histogram,
    /// Streams the server closed (or lost) without our `stop`, while the call had time left.
    pub streams_lost: Counter,
    /// `<Connect action>` answers that continued the call on a new stream
    /// (docs/reference.md#after-stream).
    pub continued: Counter,
    /// `<Connect action>` answers with the fallback, and with `<Hangup/>`.
    pub after_stream_fallback: Counter,
    pub after_stream_hangup: Counter,
    /// Calls that ended before their planned duration (a lost stream not continued).
    pub ended_early: Counter,
    /// Frames due while no stream was open (between a loss and its continuation): never sent.
    pub frames_skipped: Counter,
    /// From a stream's loss to the first echo on its continuation, in microseconds.
    pub resume_gap: Histogram,
    /// The waiting room (docs/reference.md#waiting-room): calls answered with the hold, then
    /// admitted from the line, hung up while waiting (`--patience`), or sent to the overflow.
    pub line: Line,
    /// Per tenant (`--tenants`), by index; empty without tenants.
    pub tenants: Vec<TenantStats>,
    errors: Mutex<BTreeMap<String, ErrorCount>>,
}

/// What waiting in line came to.
#[derive(Default)]
pub struct Line {
    pub joined: Counter,
    pub admitted: Counter,
    pub abandoned: Counter,
    pub overflowed: Counter,
    /// Hung up on by the line (a bare `<Hangup/>` to a visit): it had let the caller go.
    pub dropped: Counter,
    /// Calls in line now.
    pub waiting: Counter,
    /// Requests to `/twilio/wait`.
    pub visits: Counter,
    /// From the hold's first answer to the `<Connect>` that admitted the call, in microseconds.
    pub wait: Histogram,
    /// Each visit's round trip (connect to the end of the answer), in microseconds.
    pub visit_latency: Histogram,
    /// Each voice webhook's round trip, in microseconds: the visit's baseline.
    pub webhook_latency: Histogram,
}

/// One tenant's calls: how each ended, and its line.
#[derive(Default)]
pub struct TenantStats {
    pub launched: Counter,
    pub admitted: Counter,
    pub completed: Counter,
    pub rejected: Counter,
    pub failed: Counter,
    pub line: Line,
}

/// How often one kind of error happened, and the first message of it (if it had one).
struct ErrorCount {
    n: u64,
    first: Option<String>,
}

/// A relaxed atomic counter: each is written by many calls, read only for reporting.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Stats {
    /// Counters for a run over `tenants` tenants.
    pub fn with_tenants(tenants: usize) -> Self {
        Self {
            tenants: (0..tenants).map(|_| TenantStats::default()).collect(),
            ..Self::default()
        }
    }

    /// Tenant `index`'s counters, when the run has tenants.
    pub fn tenant(&self, index: Option<usize>) -> Option<&TenantStats> {
        index.and_then(|i| self.tenants.get(i))
    }

    /// The run's line and the tenant's, to count an event in both.
    pub fn lines(&self, tenant: Option<usize>) -> impl Iterator<Item = &Line> {
        std::iter::once(&self.line).chain(self.tenant(tenant).map(|t| &t.line))
    }

    pub fn rejected(&self, mode: RejectMode) {
        match mode {
            RejectMode::Unavailable => self.rejected_503.inc(),
            RejectMode::Twiml => self.rejected_twiml.inc(),
            RejectMode::Busy => self.rejected_busy.inc(),
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected_503.get()
            + self.rejected_twiml.get()
            + self.rejected_busy.get()
            + self.rejected_stream.get()
    }

    /// Counts an error that has a kind and nothing more to say.
    pub fn error(&self, kind: String) {
        self.count_error(kind, None);
    }

    /// Counts a call's failure under its kind; the first of each kind keeps its message.
    pub fn failure(&self, err: &SimError) {
        self.count_error(err.kind(), Some(err));
    }

    fn count_error(&self, kind: String, err: Option<&SimError>) {
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        errors
            .entry(kind)
            .or_insert_with(|| ErrorCount {
                n: 0,
                first: err.map(ToString::to_string),
            })
            .n += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(kind, count)| (kind.clone(), count.n))
            .collect()
    }

    /// The first message of each error kind that had one.
    pub fn error_messages(&self) -> BTreeMap<String, String> {
        self.errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|(kind, count)| Some((kind.clone(), count.first.clone()?)))
            .collect()
    }
}
