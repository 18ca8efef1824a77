//! What the call lifecycle reports as it works: slots taken, refusals, store errors, timings.
//! The server counts these in its metrics; the core knows nothing of how they are exposed.

use std::time::Duration;

use crate::reject::RejectReason;
use crate::state::EndReason;
use crate::store::{RenewReport, Shed};
use crate::wait::OverflowReason;

/// Receives the lifecycle's events. Every method has a no-op default, so a test or a bench
/// implements only what it looks at. Called on the admission path: keep implementations cheap.
pub trait CallEvents: Send + Sync + 'static {
    /// This replica took a new slot (a webhook's reservation or a stream admitted without one).
    fn slot_taken(&self) {}
    /// A call or stream was refused, for `reason`.
    fn refused(&self, _reason: RejectReason) {}
    /// A store operation failed; `op` names it (`admit`, `release`, `renew`, …).
    fn store_error(&self, _op: &'static str) {}
    /// A webhook's admission was refused without Redis' answer (docs/reference.md#admission-deadline).
    fn admission_shed(&self, _cause: Shed) {}
    /// One admission's round trip to the store, admitted or refused.
    fn admission_time(&self, _elapsed: Duration) {}
    /// A media stream started on this replica (whether or not it took a new slot).
    fn stream_started(&self) {}
    /// The number of streams live on this replica changed.
    fn live_streams(&self, _count: usize) {}
    /// A webhook was answered but its stream never came; the reservation lapsed.
    fn reservation_lapsed(&self) {}
    /// A stream took over a call continued after its stream was lost
    /// (docs/reference.md#after-stream).
    fn resumed(&self) {}
    /// A live stream ended, for `reason`.
    fn stream_ended(&self, _reason: EndReason) {}
    /// A call over the cap joined the waiting line (docs/reference.md#waiting-room).
    fn wait_joined(&self) {}
    /// A call was admitted from the waiting line after waiting `waited`.
    fn wait_admitted(&self, _waited: std::time::Duration) {}
    /// A caller left the waiting line unserved (hung up, or silent for two polls).
    fn wait_abandoned(&self) {}
    /// A caller left the waiting line for the reject mode, or found it full.
    fn wait_overflow(&self, _reason: OverflowReason) {}
    /// A sweep found `waiting` callers in line cluster-wide, the longest waiting `longest`.
    fn wait_line(&self, _waiting: u64, _longest: std::time::Duration) {}
    /// A renewal tick finished; `limit` is the configured cap, for the over-limit check.
    fn renewed(&self, _report: &RenewReport, _limit: u64) {}
}

/// Counts nothing: for tests and benches that only look at the store.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl CallEvents for NoEvents {}
