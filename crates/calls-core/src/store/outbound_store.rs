//! The outbound side of the store (docs/reference.md#outbound): what one dial step finds and what
//! an update did, and the operations both backends implement atomically.

use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::call_sid::CallSid;
use crate::outbound::{OutboundCall, OutboundError, OutboundId, OutboundStatus};

/// What one dial step found (see [`OutboundStore::dial_next`]).
#[derive(Debug, Clone, PartialEq)]
pub enum DialStep {
    /// The call at the head of the queue holds a slot now and is `dialing` by this replica:
    /// place it.
    Dial(Box<OutboundCall>),
    /// Nothing queued.
    Idle,
    /// The cluster-wide pace allows the next call in this long.
    Paced(Duration),
    /// No slot free under the global cap less `INBOUND_RESERVE`.
    Full,
    /// The head call's tenant is at its cap.
    TenantFull,
    /// Callers wait in the waiting room: they come first.
    CallersWaiting,
    /// Redis lost its data moments ago; live calls re-register first.
    Recovering,
}

/// A dial step and the calls it ended `dial_interrupted` on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct DialOutcome {
    pub step: DialStep,
    pub interrupted: Vec<OutboundCall>,
}

/// The rules of one dial step, from the configuration.
#[derive(Debug, Clone)]
pub struct DialPolicy {
    /// `MAX_CONCURRENT_CALLS` − `INBOUND_RESERVE`: outbound dials only below it.
    pub outbound_limit: u64,
    /// 1 / `OUTBOUND_CPS`: the least time between two dials, cluster-wide.
    pub interval: Duration,
    /// Who dials (the record's `replica`).
    pub replica: String,
    /// [`crate::outbound::DIAL_MARGIN`] in service; a placed call that reports nothing within its ring timeout
    /// plus this ends `dial_interrupted`.
    pub dial_margin: Duration,
}

/// What an update did: the record as it now reads (`None`: no such call), and the status it moved
/// to, if this update moved it (what metrics count, once).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub record: Option<OutboundCall>,
    pub became: Option<OutboundStatus>,
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub record: OutboundCall,
    /// False: the `Idempotency-Key` was seen within 24 h; `record` is the first request's call.
    pub new: bool,
}

/// The outbound queue and records, atomically in each backend (docs/reference.md#outbound).
#[async_trait]
pub trait OutboundStore: Send + Sync {
    /// Queues `record` at the tail, unless `idempotency_key` named a call within 24 h.
    async fn enqueue(
        &self,
        record: &OutboundCall,
        idempotency_key: Option<&str>,
    ) -> Result<Enqueued, StoreError>;

    /// One atomic step: ends `dial_interrupted` every placed call that reported nothing by its
    /// deadline (freeing its slot); then, if a call is queued, the pace allows one now, nobody
    /// waits in the waiting room and a slot is free for it (global cap less reserve, its
    /// tenant's cap), takes the slot, sets the next pace, and marks the call `dialing` by
    /// `policy.replica`. All or nothing.
    async fn dial_next(&self, policy: &DialPolicy) -> Result<DialOutcome, StoreError>;

    /// Twilio accepted the call and named its `CallSid`, or its first webhook or callback did:
    /// the slot held under the outbound id moves to the call SID (the voice webhook finds it).
    async fn placed(&self, id: &OutboundId, call_sid: &CallSid) -> Result<Transition, StoreError>;

    /// Twilio answered 429: the call goes back to the head of the queue, gives its slot up, and
    /// the cluster's next dial waits `backoff`.
    async fn requeue(&self, id: &OutboundId, backoff: Duration) -> Result<Transition, StoreError>;

    /// Twilio refused the request (or did not answer it): the call fails with `error`, its slot
    /// freed.
    async fn fail(&self, id: &OutboundId, error: &OutboundError) -> Result<Transition, StoreError>;

    /// A status Twilio reported (callback or voice webhook), with the call SID it named. Moves
    /// forward only; a final status frees the slot held under the id.
    async fn report(
        &self,
        id: &OutboundId,
        call_sid: Option<&CallSid>,
        status: OutboundStatus,
    ) -> Result<Transition, StoreError>;

    /// Cancels a queued call (→ `canceled`); any other call is answered as it is.
    async fn cancel_queued(&self, id: &OutboundId) -> Result<Transition, StoreError>;

    async fn outbound_call(&self, id: &OutboundId) -> Result<Option<OutboundCall>, StoreError>;

    /// The newest calls first, at most [`crate::outbound::LIST_LIMIT`], with `status` if given.
    async fn outbound_calls(
        &self,
        status: Option<OutboundStatus>,
    ) -> Result<Vec<OutboundCall>, StoreError>;

    /// Calls queued, not yet placed.
    async fn outbound_queued(&self) -> Result<u64, StoreError>;
}
