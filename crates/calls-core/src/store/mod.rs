//! The call-state store: slots with leases, per-call locks and state, and cluster stats, behind one
//! trait. `memory` is the embedded single-replica default; `redis` is the cluster backend of
//! docs/reference.md#admission.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::call_sid::CallSid;
use crate::state::{CallState, CallStatus, EndReason};
use crate::tenant::TenantKey;
use crate::wait::{WaitOp, WaitReport, WaitSettings};

mod admit_batch;
pub mod cluster;
mod connect;
mod line;
mod memory;
mod outbound_store;
mod recovery;
mod redis;
mod redis_clock;
mod settings;

pub use self::connect::refuses_writes;
pub use self::memory::MemoryStore;
pub use self::outbound_store::{
    DialOutcome, DialPolicy, DialStep, Enqueued, OutboundStore, Transition,
};
pub use self::redis::RedisStore;
pub use self::settings::{
    ClientCert, ConnectError, DEFAULT_REDIS_PORT, DEFAULT_SENTINEL_PORT, HostPort, RedisSettings,
    RedisTarget, RedisTls, SentinelTarget, pem_file,
};

/// `MAX_CONCURRENT_CALLS` when unset.
pub const DEFAULT_MAX_CONCURRENT_CALLS: u64 = 50;
/// `CALL_STATE_TTL_SECS` when unset.
pub const DEFAULT_CALL_STATE_TTL_SECS: u64 = 3600;
/// `CALL_LOCK_TTL_SECS` when unset.
pub const DEFAULT_CALL_LOCK_TTL_SECS: u64 = 60;
/// `CALL_LEASE_SECS` when unset.
pub const DEFAULT_CALL_LEASE_SECS: u64 = 30;
/// `RESERVATION_SECS` when unset.
pub const DEFAULT_RESERVATION_SECS: u64 = 30;
/// `RENEW_INTERVAL_SECS` defaults to the lease divided by this: a lease survives two missed ticks.
pub const DEFAULT_RENEWS_PER_LEASE: u32 = 3;
/// Not a variable: the bound on one state-store operation (connect, command, script).
pub const DEFAULT_STORE_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a webhook's admission may take, queue included, before it is answered with the reject
/// mode (docs/reference.md#admission-deadline): well inside Twilio's 15 s wait for a webhook, so an
/// answer nginx passes on to another replica (one attempt each) still reaches Twilio in time.
pub const ADMISSION_DEADLINE: Duration = Duration::from_secs(5);
/// Most webhook admissions a replica queues for Redis at once; one over it is refused at once
/// (docs/reference.md#admission-deadline). Twice the 500-webhook burst of docs/benchmarks.md, so a
/// burst on a healthy Redis is never refused for it.
pub const ADMISSION_QUEUE_BOUND: usize = 1024;

/// How long new admissions wait after Redis lost its data, for a renewal tick of `renew_interval`:
/// one tick, plus a margin (half a tick, at least one second) for a tick that runs late or meets a
/// dead connection, so every live call has re-registered first.
pub fn recovery_holdoff(renew_interval: Duration) -> Duration {
    renew_interval + (renew_interval / 2).max(Duration::from_secs(1))
}

/// Settings every backend shares; built from the service configuration.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `MAX_CONCURRENT_CALLS`: live slots allowed cluster-wide.
    pub limit: u64,
    /// TTL of `calls:state:{call_sid}`.
    pub state_ttl: Duration,
    /// TTL of `calls:lock:{call_sid}`.
    pub lock_ttl: Duration,
    /// After Redis lost its data, restarted, or was out of reach for longer than `call_lease`,
    /// how long new admissions wait so live calls re-register first. One renewal tick plus a
    /// margin in production; zero turns the wait off.
    pub recovery_holdoff: Duration,
    /// `CALL_LEASE_SECS`: a replica that has not reached Redis for longer than this may have lost
    /// its slots, so on its return it re-registers at once and opens the recovery wait.
    pub call_lease: Duration,
    /// Upper bound on every single store operation (connect, command, script).
    pub op_timeout: Duration,
    /// `DEFAULT_TENANT_LIMIT`: the cap of a tenant without its own entry in `calls:tenant_limits`;
    /// `None`: such a tenant has only the global cap.
    pub default_tenant_limit: Option<u64>,
    /// [`ADMISSION_DEADLINE`]; tests shorten it.
    pub admission_deadline: Duration,
    /// [`ADMISSION_QUEUE_BOUND`]; tests shorten it.
    pub admission_queue: usize,
    /// `RESERVATION_SECS`: how long a call handed over (its stream ended in a way that continues,
    /// or a continuation granted) keeps its slot for the continuation's stream
    /// (docs/reference.md#hand-over).
    pub reservation: Duration,
}

/// The defaults of the variables, as `serve` has them.
impl Default for StoreConfig {
    fn default() -> Self {
        let call_lease = Duration::from_secs(DEFAULT_CALL_LEASE_SECS);
        Self {
            limit: DEFAULT_MAX_CONCURRENT_CALLS,
            state_ttl: Duration::from_secs(DEFAULT_CALL_STATE_TTL_SECS),
            lock_ttl: Duration::from_secs(DEFAULT_CALL_LOCK_TTL_SECS),
            recovery_holdoff: recovery_holdoff(call_lease / DEFAULT_RENEWS_PER_LEASE),
            call_lease,
            op_timeout: DEFAULT_STORE_OP_TIMEOUT,
            default_tenant_limit: None,
            admission_deadline: ADMISSION_DEADLINE,
            admission_queue: ADMISSION_QUEUE_BOUND,
            reservation: Duration::from_secs(DEFAULT_RESERVATION_SECS),
        }
    }
}

/// Whether an admission may take a free slot or only refresh one the call already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitPolicy {
    /// Take a slot if the call holds none and one is free (webhook, stream without reservation).
    MayTakeSlot,
    /// Only refresh a slot the call already holds: a draining replica honours reservations but
    /// starts nothing new.
    ExistingOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The call holds a slot whose lease now runs `lease` from now (replacing any earlier one).
    /// `new`: this is the call's first slot, counted in `started`; false when it already held one
    /// (a retried webhook, an activated reservation) or was admitted before and took one again
    /// (its reservation lapsed, its slot was reclaimed): `started` counts each call once.
    Admitted {
        new: bool,
        active: u64,
    },
    Refused(Refusal),
}

impl Admission {
    pub fn is_admitted(&self) -> bool {
        matches!(self, Self::Admitted { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken; counted in `calls:stats:rejected_max_concurrent`.
    AtLimit { active: u64 },
    /// Under the global cap, but the call's tenant holds all the slots its cap allows; counted in
    /// `calls:stats:rejected_tenant_limit` (docs/reference.md#tenants).
    TenantAtLimit { active: u64 },
    /// Redis lost its data moments ago; live calls are still re-registering.
    Recovering,
    /// `ExistingOnly` and the call holds no slot.
    NoSlotHeld,
    /// A webhook for a call whose state says it ended for good (not a lapsed reservation): it
    /// takes no slot, so a retry that arrives after the call finished cannot resurrect it.
    Ended,
}

/// What a stream's start did (see [`CallStore::start_stream`]).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamAdmission {
    /// The stream owns the call's lock and a slot; `state` is the active state as written.
    Started {
        /// False when the call already held a slot (its webhook's reservation).
        new_slot: bool,
        active: u64,
        state: Box<CallState>,
        /// The stored state was not valid call-state JSON and was replaced.
        replaced_corrupt_state: bool,
        /// The stream carried the continuation the after-stream answer granted
        /// (docs/reference.md#after-stream) and took the call over: the old lock replaced, the slot
        /// taken back whatever the count.
        took_over: bool,
    },
    /// Another stream owns the call's lock (its token, for the log line); nothing changed.
    LockedBy(String),
    /// The start was not bound to its call (no stream token for it, [`StreamClaim::bound`]) yet
    /// claimed a call holding a slot, or a continuation: nothing changed
    /// (docs/reference.md#stream-token).
    Unbound,
    /// No slot: nothing changed, the lock was not taken.
    Refused(Refusal),
}

/// What a stream's `start` claims to be (see [`CallStore::start_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClaim {
    /// The stream's `resumed` parameter: the continuation it claims (docs/reference.md#after-stream).
    pub resumed: Option<u32>,
    /// Whether the start carried its call's stream token for that stream, or tokens are off
    /// (docs/reference.md#stream-token). An unbound start may only be a new admission: it never
    /// takes a call that holds a slot, nor a continuation.
    pub bound: bool,
}

/// A bound start with this `resumed` (tokens off, or checked already).
impl From<Option<u32>> for StreamClaim {
    fn from(resumed: Option<u32>) -> Self {
        Self {
            resumed,
            bound: true,
        }
    }
}

/// What a stream's end did (see [`CallStore::end_stream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The final state is written and the lock released; `freed` says whether a slot was held.
    Ended { freed: bool },
    /// The stream ended in a way that continues (docs/reference.md#hand-over): the final state is
    /// written and the lock released, but the slot stays the call's for `RESERVATION_SECS`, for
    /// its continuation's stream to take (a final status callback frees it sooner).
    Held,
    /// Another stream owns the call's lock now (its token): the call lives on there, untouched.
    LockedBy(String),
}

/// One live call in a renewal batch.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub call_sid: CallSid,
    pub lock_token: String,
    /// The call's current state, flushed (with its TTL refreshed) if this replica owns the lock.
    /// Its `tenant` is the tenant set the call re-registers in if its slot was lost.
    pub state: Option<CallState>,
}

impl Renewal {
    /// The call's tenant, from its state.
    pub fn tenant(&self) -> Option<&str> {
        self.state
            .as_ref()
            .and_then(|state| state.tenant.as_deref())
    }
}

/// The heartbeat a replica writes on every tick (`calls:replica:{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaHeartbeat {
    pub id: String,
    pub started_at: String,
    pub calls_active: u64,
    pub draining: bool,
    /// This replica's `MAX_CONCURRENT_CALLS`: the command line shows replicas that disagree.
    #[serde(default)]
    pub max_concurrent_calls: u64,
    /// This replica's renewal tick in ms: the heartbeat lives three of them, so its age is three
    /// ticks minus its remaining TTL (Redis' clock only), and one older than two ticks is stale.
    #[serde(default)]
    pub renew_interval_ms: u64,
    /// This replica's `TENANT_KEY`; `None` from a replica too old to say (its tenant settings are
    /// then unknown, not "off").
    #[serde(default)]
    pub tenant_key: Option<TenantKey>,
    /// This replica's `DEFAULT_TENANT_LIMIT` (`null`: unset), meaningful where `tenant_key` is
    /// given: the command line judges tenants without their own cap by it.
    #[serde(default)]
    pub default_tenant_limit: Option<u64>,
}

/// What a continuation request found (see [`CallStore::grant_resume`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeGrant {
    /// The grant `resumed` is recorded in the call's state (and counted in its `resumes`).
    Granted { resumed: u32 },
    /// The call may be continued, but it already had `RESUME_LIMIT` continuations.
    LimitReached,
    /// The request names a stream of the call that is not its current one (a replayed request
    /// for an earlier stream): nothing is spent or written (docs/reference.md#after-stream).
    NotCurrent { current: u32 },
    /// The state (as read, `None` if missing) does not allow a continuation
    /// (docs/reference.md#after-stream).
    NotContinuable(Option<Box<CallState>>),
}

#[derive(Debug, Clone)]
pub struct RenewBatch {
    pub lease: Duration,
    pub calls: Vec<Renewal>,
    pub heartbeat: ReplicaHeartbeat,
    /// TTL of the heartbeat key: three ticks.
    pub heartbeat_ttl: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewReport {
    /// Cluster-wide live slots after the renewal.
    pub active: u64,
    /// Calls of this batch that had lost their slot (reclaimed while this replica was paused, or
    /// Redis lost its data) and were re-added.
    pub readded: Vec<String>,
    /// Calls whose lock another owner holds now; their state was not written.
    pub lock_lost: Vec<String>,
    /// Expired slots of any replica that this renewal reclaimed.
    pub reclaimed: Vec<String>,
    /// Calls of this batch whose state had ended for good (stream finished meanwhile, final status
    /// callback): not renewed, so a released slot is never resurrected.
    pub ended: Vec<String>,
    /// Reservations whose stream never came, reclaimed since the last renewal by any script this
    /// replica ran (a webhook's admission reclaims too).
    pub lapsed_reservations: Vec<LapsedReservation>,
}

/// Every operation a store error can name (`StoreError::op`), for the `redis_errors_total{op}`
/// series that exist at zero from start-up.
pub const OPERATIONS: [&str; 21] = [
    "admit",
    "start_stream",
    "end_stream",
    "release",
    "renew",
    "read_state",
    "write_state",
    "end_states",
    "stats",
    "ping",
    "connect",
    "state_decode",
    "grant_resume",
    "live_replicas",
    "restore_limits",
    "wait",
    "whatsapp_cooldown",
    "dial",
    "outbound_enqueue",
    "outbound_update",
    "outbound_read",
];

/// A webhook answered whose stream never arrived: the classic misconfiguration (a wrong
/// `PUBLIC_URL`, a proxy that drops upgrades), so the stream URL that was given is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LapsedReservation {
    pub call_sid: String,
    pub stream_url: Option<String>,
}

impl LapsedReservation {
    pub fn of(state: &CallState) -> Self {
        Self {
            call_sid: state.call_sid.clone(),
            stream_url: state.stream_url.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStats {
    pub active: u64,
    pub started: u64,
    pub rejected_max_concurrent: u64,
    pub rejected_tenant_limit: u64,
}

/// One tenant's use of its cap (docs/reference.md#metrics `tenants`): live slots, reservations
/// included, and the cap in force (its own, else the default, else none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantUsage {
    pub active: u64,
    pub limit: Option<u64>,
}

/// Every tenant with live slots or a limit of its own.
pub type TenantsUsage = BTreeMap<String, TenantUsage>;

/// Builds [`TenantsUsage`] from each live slot's tenant and the stored limits.
pub fn tenants_usage<'a>(
    slot_tenants: impl IntoIterator<Item = &'a str>,
    limits: &BTreeMap<String, u64>,
    default_limit: Option<u64>,
) -> TenantsUsage {
    let mut usage = TenantsUsage::new();
    for tenant in slot_tenants {
        usage.entry(tenant.to_owned()).or_default().active += 1;
    }
    for tenant in limits.keys() {
        usage.entry(tenant.clone()).or_default();
    }
    for (tenant, entry) in &mut usage {
        entry.limit = limits.get(tenant).copied().or(default_limit);
    }
    usage
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Memory,
    Redis,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
        }
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    /// `addr` is the server's address without credentials (`host:port` or a socket path), so an
    /// operator reading the log knows which Redis failed.
    #[error("redis {op} at {addr}: {source}")]
    Redis {
        op: &'static str,
        addr: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("redis {op} at {addr}: no answer within {timeout:?}")]
    Timeout {
        op: &'static str,
        addr: String,
        timeout: Duration,
    },
    /// Another operation's attempt to reach Redis, which this one waited for, just failed.
    #[error("redis {op} at {addr}: not reachable (the connection attempt it waited for failed)")]
    NotConnected { op: &'static str, addr: String },
    #[error("state of {call_sid} is not valid call-state JSON: {source}")]
    CorruptState {
        call_sid: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("redis {op} answered something unexpected: {detail}")]
    UnexpectedReply { op: &'static str, detail: String },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A webhook's admission was not answered by the store in time and was refused unanswered
    /// (docs/reference.md#admission-deadline); it took no slot.
    #[error("admission refused without asking Redis: {cause}")]
    Shed { cause: Shed },
}

/// Why an admission was refused unanswered (`calls_admissions_shed_total{cause}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Shed {
    /// The admission queue was full: Redis is too slow for the webhooks arriving.
    #[error("the admission queue is full")]
    QueueFull,
    /// The admission's deadline passed before Redis answered it.
    #[error("no answer within the admission deadline")]
    Deadline,
}

impl Shed {
    /// Every cause, for the series that exist at zero from start-up.
    pub const ALL: [Self; 2] = [Self::QueueFull, Self::Deadline];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Deadline => "deadline",
        }
    }
}

impl StoreError {
    /// The operation that failed, for the `redis_errors_total{op}` metric.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Redis { op, .. }
            | Self::Timeout { op, .. }
            | Self::NotConnected { op, .. }
            | Self::UnexpectedReply { op, .. } => op,
            Self::CorruptState { .. } => "state_decode",
            Self::Connect(_) => "connect",
            Self::Shed { .. } => "admit",
        }
    }

    /// Whether the store itself is unreachable (as opposed to one bad value in it).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::NotConnected { .. } | Self::Shed { .. } => true,
            Self::Redis { source, .. } => {
                source.is_io_error()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
                    || source.is_timeout()
                    // A demoted or isolated primary answers, but the state cannot be written.
                    || connect::refuses_writes(source)
            }
            _ => false,
        }
    }
}

/// The grant rule both backends apply to a stored state: `Ok` with the state to write (the next
/// grant recorded and counted), or `Err` with the answer when nothing is to be written.
pub(crate) fn next_grant(
    stored: Option<&CallState>,
    limit: u32,
    stream: Option<u32>,
) -> Result<(CallState, u32), ResumeGrant> {
    let Some(state) = stored else {
        return Err(ResumeGrant::NotContinuable(None));
    };
    // Only the request for the call's current stream (its `resumes`: 0 for the first, N for the
    // continuation `resumed=N`, granted or taken) may spend a continuation: Twilio asks once per
    // stream, so a request for an earlier one is a replay. None: an action URL given before the
    // stream number was in it.
    if let Some(stream) = stream
        && stream != state.resumes
    {
        return Err(ResumeGrant::NotCurrent {
            current: state.resumes,
        });
    }
    if state.disposition() != crate::state::Disposition::Continue {
        return Err(ResumeGrant::NotContinuable(Some(Box::new(state.clone()))));
    }
    // `RESUME_LIMIT=0` turns continuations off, planned ones included.
    if limit == 0 {
        return Err(ResumeGrant::LimitReached);
    }
    // A planned hand-over (the stream ended by its replica's drain) does not use up the budget
    // meant for failures: however many replicas a roll drains after each other, and wherever the
    // balancer sends each continuation, a call is never cut by a restart. Only the first answer
    // for that ending is one: asked again, its grant was not taken, which is a failure.
    let handover = state.status == CallStatus::Ended
        && state.end_reason == Some(EndReason::DrainTimeout)
        && state.resume_grant.is_none();
    if !handover && state.resumes.saturating_sub(state.handovers) >= limit {
        return Err(ResumeGrant::LimitReached);
    }
    // A grant not taken (its stream never came) is replaced: every answer counts one resume, so
    // a call whose new streams keep failing reaches the limit and the fallback.
    let resumed = state.resumes + 1;
    let mut granted = state.clone();
    granted.resumes = resumed;
    granted.handovers += u32::from(handover);
    granted.resume_grant = Some(resumed);
    Ok((granted, resumed))
}

/// Whether a stream's final state hands its call over to a continuation
/// (docs/reference.md#hand-over): ended as `disconnected`, `drain_timeout` or `lock_lost`. Its slot
/// is then kept, not freed, so no new call takes it while the caller waits for the new stream.
pub fn hands_over(final_state: &CallState) -> bool {
    final_state.status == CallStatus::Ended
        && matches!(
            final_state.end_reason,
            Some(EndReason::Disconnected | EndReason::DrainTimeout | EndReason::LockLost)
        )
}

/// Everything the service needs from shared state. Every operation is atomic on its own; admit,
/// release and renew keep `active == number of slots` at every step.
#[async_trait]
pub trait CallStore: OutboundStore + Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Reclaims expired slots, then admits `call_sid` with a lease of `lease` (see [`AdmitPolicy`]).
    /// `initial_state`, if given, is written in the same atomic step when a new slot is taken.
    async fn admit(
        &self,
        call_sid: &CallSid,
        policy: AdmitPolicy,
        lease: Duration,
        initial_state: Option<&CallState>,
    ) -> Result<Admission, StoreError>;

    /// A media stream's start, atomically: refused while another token holds the call's lock;
    /// else admitted as [`Self::admit`] would with `policy` and `lease`; only if admitted, the
    /// lock is taken for `lock_token` and the active state written. That state is `fresh`, except
    /// that a stored state that has not ended keeps its `created_at`, `from` and `to`, and its
    /// `account_sid` unless `fresh` has one.
    ///
    /// `claim.resumed` is the stream's `resumed` parameter (docs/reference.md#after-stream): if it
    /// matches the grant recorded in the stored state, the stream takes the call over whoever holds
    /// the lock, and takes its slot back even above the limit, carrying the stored fields even from
    /// an ended state; a `resumed` that matches no grant is refused as a second stream. A start
    /// that is not `claim.bound` and claims a continuation or a call holding a slot is refused
    /// ([`StreamAdmission::Unbound`]) before anything changes.
    async fn start_stream(
        &self,
        call_sid: &CallSid,
        lock_token: &str,
        policy: AdmitPolicy,
        lease: Duration,
        fresh: &CallState,
        claim: StreamClaim,
    ) -> Result<StreamAdmission, StoreError>;

    /// docs/reference.md#after-stream, atomically: if the stored state allows a continuation and
    /// counts fewer than `limit` resumes, records the next grant (`resumes + 1`) in it and counts
    /// it. A slot the call still holds is then kept at least `RESERVATION_SECS` from the grant
    /// (docs/reference.md#hand-over). `stream` is the number of the stream the request follows
    /// (the action URL's `stream`): one that is not the call's current stream changes nothing
    /// ([`ResumeGrant::NotCurrent`]).
    async fn grant_resume(
        &self,
        call_sid: &CallSid,
        limit: u32,
        stream: Option<u32>,
    ) -> Result<ResumeGrant, StoreError>;

    /// How many other replicas (not `except`) have a fresh heartbeat that is not draining.
    async fn live_replicas(&self, except: &str) -> Result<u64, StoreError>;

    /// A media stream's end, atomically: unless another token owns the call's lock, writes
    /// `final_state` (with a fresh `CALL_STATE_TTL_SECS`), frees the slot if held, and releases the
    /// lock. A `final_state` that continues ([`hands_over`]) keeps a held slot for
    /// `RESERVATION_SECS` instead of freeing it.
    async fn end_stream(
        &self,
        call_sid: &CallSid,
        lock_token: &str,
        final_state: &CallState,
    ) -> Result<StreamEnd, StoreError>;

    /// Frees the call's slot if it holds one (idempotent) and ends its state with `reason` unless
    /// it already ended, whoever serves it (a final status callback). Returns whether a slot was
    /// freed.
    async fn release(&self, call_sid: &CallSid, reason: EndReason) -> Result<bool, StoreError>;

    /// One round trip: reclaims expired slots, re-adds and extends every call of the batch, renews
    /// or re-takes their locks, flushes their states, and writes the replica heartbeat.
    async fn renew(&self, batch: &RenewBatch) -> Result<RenewReport, StoreError>;

    async fn read_state(&self, call_sid: &CallSid) -> Result<Option<CallState>, StoreError>;

    /// Writes the state with a fresh `CALL_STATE_TTL_SECS`.
    async fn write_state(&self, state: &CallState) -> Result<(), StoreError>;

    async fn stats(&self) -> Result<ClusterStats, StoreError>;

    /// The cluster stats and, with `with_tenants`, every tenant's use of its cap, in one round trip.
    async fn snapshot(
        &self,
        with_tenants: bool,
    ) -> Result<(ClusterStats, TenantsUsage), StoreError>;

    /// One step of the waiting room (docs/reference.md#waiting-room), atomically: callers silent
    /// for two polls leave first (their states ended `wait_abandoned`), then `op` runs: a visit
    /// admits the call if its turn has come (or it holds a slot, or a slot is free that nobody in
    /// line could use), else keeps it in line, lets it join, or overflows it; a leave takes a
    /// waiting call out of the line; a sweep reports the line.
    async fn wait(&self, op: WaitOp<'_>, settings: &WaitSettings)
    -> Result<WaitReport, StoreError>;

    /// Claims the WhatsApp cooldown of caller `number` for `cooldown`, cluster-wide (`SET NX`):
    /// `true` when no message went to it within the cooldown and this caller may send one now.
    async fn claim_whatsapp(&self, number: &str, cooldown: Duration) -> Result<bool, StoreError>;

    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `/readyz`'s check, one round trip: the store is reachable, and if the recovery wait
    /// (docs/reference.md#admission) is open, about how long it has left.
    async fn admission_wait(&self) -> Result<Option<Duration>, StoreError> {
        self.ping().await.map(|()| None)
    }

    /// Whether this replica can no longer admit at all, whatever the store says: the task that
    /// sends the webhooks' admissions to Redis has stopped (`/readyz` answers 503).
    fn admissions_stopped(&self) -> bool {
        false
    }

    /// Resolves when this replica's live calls must re-register now rather than at the next tick:
    /// the store found that Redis lost its data or restarted, or that it had been out of reach
    /// for longer than a lease. The renewal task waits on it beside its interval.
    async fn reregister_wanted(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_the_redis_store_names_has_its_error_series() {
        // Every `link("op")`, `run("op"`, `bounded("op"` and `op: "op"` of the Redis backend.
        let source = include_str!("redis.rs");
        let mut named = Vec::new();
        for marker in ["link(\"", "run(\"", "bounded(\"", "op: \""] {
            for (at, _) in source.match_indices(marker) {
                let rest = &source[at + marker.len()..];
                let op = &rest[..rest.find('"').unwrap()];
                named.push(op.to_owned());
            }
        }
        assert!(named.len() > 20, "{named:?}");
        for op in named {
            assert!(
                OPERATIONS.contains(&op.as_str()),
                "redis_errors_total{{op=\"{op}\"}} would appear only with its first error"
            );
        }
    }

    fn ended(reason: EndReason, resumes: u32, handovers: u32) -> CallState {
        let mut state = CallState::reserved("CA1", "r1");
        (state.resumes, state.handovers) = (resumes, handovers);
        state.end(reason);
        state
    }

    #[test]
    fn drains_hand_calls_over_on_no_budget_and_failures_spend_it() {
        // A roll of ten replicas, each drain landing the call on the next one to drain: ten
        // hand-overs, and the budget of 2 still whole.
        let mut state = ended(EndReason::DrainTimeout, 0, 0);
        for hop in 1..=10 {
            let (granted, resumed) = next_grant(Some(&state), 2, None).expect("a hand-over");
            assert_eq!((resumed, granted.handovers), (hop, hop));
            state = ended(EndReason::DrainTimeout, granted.resumes, granted.handovers);
        }
        // Then two failures are continued, the third is not.
        let mut state = ended(EndReason::Disconnected, 10, 10);
        for _ in 0..2 {
            let (granted, _) = next_grant(Some(&state), 2, None).expect("a continuation");
            assert_eq!(granted.handovers, 10);
            state = ended(EndReason::LockLost, granted.resumes, granted.handovers);
        }
        assert_eq!(
            next_grant(Some(&state), 2, None).unwrap_err(),
            ResumeGrant::LimitReached
        );
        // A hand-over asked again (its stream never came) counts as a failure.
        let mut pending = ended(EndReason::DrainTimeout, 2, 0);
        pending.resume_grant = Some(2);
        assert_eq!(
            next_grant(Some(&pending), 2, None).unwrap_err(),
            ResumeGrant::LimitReached
        );
        // RESUME_LIMIT=0 turns every continuation off, hand-overs too.
        assert_eq!(
            next_grant(Some(&ended(EndReason::DrainTimeout, 0, 0)), 0, None).unwrap_err(),
            ResumeGrant::LimitReached
        );
    }
}
