//! The life of a call's slot on this replica: reserved by the voice webhook, activated (or admitted)
//! by its media stream, renewed each tick, released exactly once. Knows nothing of HTTP or sockets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::call_sid::CallSid;
use crate::events::CallEvents;
use crate::live_calls::{LiveCall, LiveCalls};
pub use crate::reject::RejectReason;
use crate::state::{
    CallState, CallStatus, Direction, Disposition, EndReason, MediaFormat, cap_custom_parameters,
    now_rfc3339,
};
use crate::store::{
    Admission, AdmitPolicy, CallStore, Refusal, RenewBatch, RenewReport, Renewal, ReplicaHeartbeat,
    ResumeGrant, StoreError, StreamAdmission, StreamClaim, StreamEnd,
};
use crate::tenant::{InvalidTenant, TenantKey};
use crate::wait::WaitSettings;

mod waiting;
pub use self::waiting::{LineSummary, WaitAnswer};

/// What the lifecycle needs from the service configuration.
#[derive(Debug, Clone)]
pub struct CallsConfig {
    /// `REPLICA_ID`: names this replica in states, locks and its heartbeat.
    pub replica_id: String,
    /// `MAX_CONCURRENT_CALLS`, for log lines and the over-limit check (the store enforces it).
    pub max_concurrent_calls: u64,
    /// `RESERVATION_SECS`: how long a webhook's slot waits for its stream.
    pub reservation: Duration,
    /// `CALL_LEASE_SECS`: a live stream's lease, renewed every tick.
    pub call_lease: Duration,
    /// `RENEW_INTERVAL_SECS`: the heartbeat lives three of these.
    pub renew_interval: Duration,
    /// `TENANT_KEY`: which field names a call's tenant (its cap is the store's business).
    pub tenant_key: TenantKey,
    /// `DEFAULT_TENANT_LIMIT`, only to report it in the heartbeat (the store enforces it).
    pub default_tenant_limit: Option<u64>,
    /// `RESUME_LIMIT`: continuations granted per call after its stream was lost
    /// (docs/reference.md#after-stream).
    pub resume_limit: u32,
    /// The waiting room (`WAIT_*`, docs/reference.md#waiting-room); `None`: off (`WAIT_MAX_SECS=0`).
    pub wait: Option<WaitSettings>,
    /// Whether the TwiML this replica gives carries stream tokens (`TWILIO_AUTH_TOKEN` is set):
    /// recorded in each admitted call's state (docs/reference.md#stream-token).
    pub stream_tokens: bool,
}

/// The `customParameters` name a continued stream's grant travels under
/// (docs/reference.md#after-stream).
pub const RESUMED_PARAMETER: &str = "resumed";

/// What the caller hears once a stream has closed (docs/reference.md#after-stream), as
/// `/twilio/after-stream` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStream {
    /// The call is over: `<Hangup/>`.
    Hangup,
    /// The fallback message (and redirect).
    Fallback,
    /// A new stream, carrying `resumed` and the call's numbers as the first one did.
    Continue {
        resumed: u32,
        from: Option<String>,
        to: Option<String>,
    },
}

/// Whether a Twilio `CallStatus` says the call is over.
pub fn is_final_status(call_status: &str) -> bool {
    FINAL_STATUSES.contains(&call_status)
}

/// What the voice webhook tells us about a call.
#[derive(Debug, Clone, Default)]
pub struct WebhookCall {
    pub account_sid: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The stream URL the answer gives Twilio, kept to report a stream that never comes.
    pub stream_url: Option<String>,
}

/// Who placed a call the voice webhook admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Inbound,
    /// Placed by the cluster (docs/reference.md#outbound), for `tenant`.
    Outbound {
        tenant: Option<String>,
    },
}

/// Whether this replica takes new calls: the server's drain decides, the core refuses and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Admit as the store allows.
    Open,
    /// Refuse every new call as `draining` (the replica drains and no other replica is live).
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Answer with the stream TwiML; `new` is false for a retried webhook.
    Connect {
        new: bool,
    },
    Reject(RejectReason),
    /// The call already ended for good (a webhook retried after it finished): no slot, nothing
    /// to connect; answer with a hang-up.
    Ended,
}

/// What a stream's `start` message carries.
#[derive(Debug, Clone, Default)]
pub struct StreamStart {
    /// Whether the start carried its call's stream token for the stream it claims to be, or
    /// tokens are off (docs/reference.md#stream-token): checked by the stream wing, which holds
    /// the key.
    pub bound: bool,
    pub stream_sid: String,
    pub account_sid: Option<String>,
    pub media_format: Option<MediaFormat>,
    pub custom_parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRefusal {
    /// Another stream (on this or another replica) owns the call: close 1008.
    LockedElsewhere,
    /// Over the limit, draining without a reservation, recovering, or no store: close 1013.
    Rejected(RejectReason),
    /// The start claimed a call holding a slot, or a continuation, without that call's stream
    /// token (docs/reference.md#stream-token): close 1008, nothing changed.
    Unbound,
}

/// The call lifecycle of one replica: the store, the streams live here, and what it reports.
pub struct Calls {
    config: CallsConfig,
    store: Arc<dyn CallStore>,
    live: LiveCalls,
    events: Arc<dyn CallEvents>,
    started_at: String,
    token_seed: u128,
    next_token: AtomicU64,
}

/// After a renewal fails on a dropped connection, how soon it is tried again.
const RETRY_AFTER_CONNECTION_LOSS: Duration = Duration::from_millis(100);
/// Live calls snapshotted per poll of a renewal tick: about 0.1 ms of work, well under a frame.
const SNAPSHOT_SLICE: usize = 50;

const FINAL_STATUSES: [&str; 5] = ["completed", "busy", "failed", "no-answer", "canceled"];

impl Calls {
    pub fn new(
        config: CallsConfig,
        store: Arc<dyn CallStore>,
        events: Arc<dyn CallEvents>,
    ) -> Self {
        let token_seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self {
            config,
            store,
            live: LiveCalls::default(),
            events,
            started_at: now_rfc3339(),
            token_seed,
            next_token: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &CallsConfig {
        &self.config
    }

    pub fn store(&self) -> &dyn CallStore {
        self.store.as_ref()
    }

    /// The streams live on this replica.
    pub fn live(&self) -> &LiveCalls {
        &self.live
    }

    /// When this replica started (RFC 3339), as its heartbeat says.
    pub fn started_at(&self) -> &str {
        &self.started_at
    }

    /// A call whose field names no valid tenant has only the global cap: Twilio never sends such a
    /// value (only a client that is not Twilio can, where signatures are off), and refusing the
    /// call for it would punish the caller for a field they do not choose.
    fn tenant_or_none(
        &self,
        call_sid: &CallSid,
        tenant: Result<Option<String>, InvalidTenant>,
    ) -> Option<String> {
        tenant.unwrap_or_else(|err| {
            warn!(%call_sid, tenant_key = self.config.tenant_key.as_str(), error = %err, "no tenant for this call; only the global cap applies");
            None
        })
    }

    /// Reserves a slot for an incoming call for `RESERVATION_SECS`, writing its state in the
    /// same atomic step. A retried webhook finds its slot and takes no second one.
    pub async fn admit_webhook(
        &self,
        call_sid: &CallSid,
        call: WebhookCall,
        intake: Intake,
    ) -> WebhookOutcome {
        self.admit_webhook_as(call_sid, call, intake, Origin::Inbound)
            .await
    }

    /// [`Self::admit_webhook`] for a call of `origin`: an outbound call the cluster placed
    /// (docs/reference.md#outbound) is stated `outbound` with the tenant it was queued for, and
    /// finds the slot its dial took already held under its call SID.
    pub async fn admit_webhook_as(
        &self,
        call_sid: &CallSid,
        call: WebhookCall,
        intake: Intake,
        origin: Origin,
    ) -> WebhookOutcome {
        if intake == Intake::Closed {
            self.events.refused(RejectReason::Draining);
            info!(%call_sid, "call refused: replica is draining and no other replica is live");
            return WebhookOutcome::Reject(RejectReason::Draining);
        }
        let mut state = self.reserved_state(call_sid, call);
        if let Origin::Outbound { tenant } = origin {
            state.direction = Direction::Outbound;
            state.tenant = tenant;
        }
        let admission = self
            .timed_admit(
                call_sid,
                AdmitPolicy::MayTakeSlot,
                self.config.reservation,
                Some(&state),
            )
            .await;
        match admission {
            Ok(Admission::Admitted { new, active }) => {
                if new {
                    self.events.slot_taken();
                } else if state.direction == Direction::Outbound {
                    self.write_first_outbound_state(call_sid, &state).await;
                }
                info!(%call_sid, new, active, "call reserved");
                WebhookOutcome::Connect { new }
            }
            Ok(Admission::Refused(Refusal::Ended)) => {
                info!(%call_sid, "webhook for a call that already ended; no slot taken");
                WebhookOutcome::Ended
            }
            Ok(Admission::Refused(refusal)) => {
                WebhookOutcome::Reject(self.refused(call_sid, refusal, state.tenant.as_deref()))
            }
            Err(StoreError::Shed { cause }) => {
                // Not an error of Redis' own: it was too slow for the webhooks arriving.
                self.events.admission_shed(cause);
                self.events.refused(RejectReason::StoreUnavailable);
                warn!(%call_sid, %cause, "call refused: Redis did not answer its admission in time; no slot taken");
                WebhookOutcome::Reject(RejectReason::StoreUnavailable)
            }
            Err(err) => WebhookOutcome::Reject(self.store_failed(call_sid, "admit", &err)),
        }
    }

    /// An answered outbound call finds the slot its dial took (docs/reference.md#outbound), so the
    /// admission wrote no state: its first webhook writes the reserved state (direction, tenant,
    /// numbers) that its stream's start carries on. A retried webhook finds one and writes nothing.
    async fn write_first_outbound_state(&self, call_sid: &CallSid, state: &CallState) {
        let written = match self.store.read_state(call_sid).await {
            Ok(Some(_)) => return,
            Ok(None) | Err(StoreError::CorruptState { .. }) => self.store.write_state(state).await,
            Err(err) => Err(err),
        };
        if let Err(err) = written {
            self.events.store_error(err.op());
            warn!(%call_sid, error = %err, "outbound call's state not written; its stream writes one");
        }
    }

    /// Takes the call's lock and its slot when its media stream starts, and writes its active
    /// state, in one atomic store step: a reservation becomes active; a stream without one is
    /// admitted now if `policy` allows (a draining replica's does not).
    pub async fn start_stream(
        &self,
        call_sid: &CallSid,
        start: StreamStart,
        policy: AdmitPolicy,
    ) -> Result<Arc<LiveCall>, StreamRefusal> {
        let token = self.new_lock_token();
        // Taken only by a stream without a reservation; a reserved call keeps its webhook's.
        let tenant = self
            .config
            .tenant_key
            .of_stream(start.account_sid.as_deref(), &start.custom_parameters);
        let tenant = self.tenant_or_none(call_sid, tenant);
        // A continued stream names its grant; one whose value is no number matches no grant.
        let resumed = start
            .custom_parameters
            .get(RESUMED_PARAMETER)
            .map(|value| value.parse::<u32>().unwrap_or(0));
        // The stream token proved what it had to; kept in the state it would only be one more
        // copy of a credential (docs/reference.md#stream-token).
        let mut parameters = start.custom_parameters;
        parameters.remove(twilio::stream_token::PARAMETER);
        let (custom_parameters, dropped) = cap_custom_parameters(parameters);
        if !dropped.is_empty() {
            warn!(%call_sid, ?dropped, "custom parameters over 4 KiB; these were not kept");
        }
        // What the webhook stored (created_at, from, to) is kept by the store; a missing, ended
        // or corrupt stored state is replaced by this one.
        let mut fresh = CallState::reserved(call_sid.as_str(), &self.config.replica_id);
        fresh.status = CallStatus::Active;
        fresh.stream_sid = Some(start.stream_sid);
        fresh.account_sid = start.account_sid;
        fresh.media_format = start.media_format;
        fresh.custom_parameters = custom_parameters;
        fresh.started_at = Some(now_rfc3339());
        fresh.tenant = tenant;
        // The store takes the call over only if `resumed` is the grant it recorded, which also
        // counted it: the state then says so.
        fresh.resumes = resumed.unwrap_or(0);

        let started = Instant::now();
        let result = self
            .store
            .start_stream(
                call_sid,
                &token,
                policy,
                self.config.call_lease,
                &fresh,
                StreamClaim {
                    resumed,
                    bound: start.bound,
                },
            )
            .await;
        self.events.admission_time(started.elapsed());
        let (new_slot, state, took_over) = match result {
            Ok(StreamAdmission::Started {
                new_slot,
                state,
                replaced_corrupt_state,
                took_over,
                ..
            }) => {
                if replaced_corrupt_state {
                    self.events.store_error("state_decode");
                    warn!(%call_sid, "stored state unreadable; started a fresh one");
                }
                (new_slot, *state, took_over)
            }
            Ok(StreamAdmission::Unbound) => {
                warn!(%call_sid, ?resumed, "stream refused: its start claims this call without the call's stream token");
                return Err(StreamRefusal::Unbound);
            }
            Ok(StreamAdmission::LockedBy(owner)) if resumed.is_some() => {
                warn!(%call_sid, %owner, ?resumed, "continued stream refused: its resumed parameter matches no grant");
                return Err(StreamRefusal::LockedElsewhere);
            }
            Ok(StreamAdmission::LockedBy(owner)) => {
                warn!(%call_sid, %owner, "second stream refused: the call is locked by another stream");
                return Err(StreamRefusal::LockedElsewhere);
            }
            Ok(StreamAdmission::Refused(Refusal::NoSlotHeld)) => {
                self.events.refused(RejectReason::Draining);
                info!(%call_sid, "stream without reservation refused: replica is draining");
                return Err(StreamRefusal::Rejected(RejectReason::Draining));
            }
            Ok(StreamAdmission::Refused(refusal)) => {
                return Err(StreamRefusal::Rejected(self.refused(
                    call_sid,
                    refusal,
                    fresh.tenant.as_deref(),
                )));
            }
            Err(err) => {
                return Err(StreamRefusal::Rejected(
                    self.store_failed(call_sid, "start", &err),
                ));
            }
        };
        if new_slot {
            self.events.slot_taken();
        }

        let live = Arc::new(LiveCall::new(call_sid.clone(), token, state));
        if took_over {
            // The lost stream may still be live here (its socket gone, not yet noticed): it ends
            // as `lock_lost`, leaving the call to this one.
            if let Some(old) = self.live.replace(live.clone()) {
                old.end_from_outside(EndReason::LockLost);
            }
            self.events.resumed();
        } else if !self.live.insert(live.clone()) {
            // Same replica, same call, lock re-entered with a fresh token: cannot happen, since
            // tokens are unique per stream; refuse rather than double-serve.
            return Err(StreamRefusal::LockedElsewhere);
        }
        self.events.stream_started();
        self.events.live_streams(self.live.len());
        if took_over {
            info!(%call_sid, resumed, "stream started: the call continues here");
        } else {
            info!(%call_sid, new_slot, "stream started");
        }
        Ok(live)
    }

    /// Ends a live stream in one atomic store step: final state, slot released exactly once, lock
    /// released by its owner; a call whose lock another stream took is left to that stream.
    /// Store failures are logged; the slot then lapses with its lease, never lingering.
    pub async fn end_stream(&self, live: &LiveCall, reason: EndReason) {
        let call_sid = &live.call_sid;
        self.live.remove(call_sid, &live.lock_token);
        self.events.live_streams(self.live.len());
        self.events.stream_ended(reason);
        if reason == EndReason::LockLost {
            // The lock's new owner serves the call now: its slot and its state are not ours to end
            // (an ended state would make the owner's next tick end its stream too).
            info!(%call_sid, reason = reason.as_str(), "stream ended; the call stays with its lock's owner");
            return;
        }
        let state = live.ended(reason);
        match self
            .store
            .end_stream(call_sid, &live.lock_token, &state)
            .await
        {
            Ok(StreamEnd::Ended { freed }) => info!(
                %call_sid,
                reason = reason.as_str(),
                freed,
                frames_in = state.frames_in,
                frames_out = state.frames_out,
                "stream ended"
            ),
            Ok(StreamEnd::Held) => info!(
                %call_sid,
                reason = reason.as_str(),
                held_secs = self.config.reservation.as_secs(),
                frames_in = state.frames_in,
                frames_out = state.frames_out,
                "stream ended; the call keeps its slot for its continuation"
            ),
            Ok(StreamEnd::LockedBy(owner)) => info!(
                %call_sid,
                %owner,
                reason = reason.as_str(),
                "stream ended; another stream owns the call now, its slot and state stay with it"
            ),
            Err(err) => {
                self.events.store_error(err.op());
                warn!(%call_sid, error = %err, "could not end the call in the store; its slot lapses with its lease");
            }
        }
    }

    /// docs/reference.md#after-stream: what the caller hears once a stream of the call has closed,
    /// decided from the call's stored state; a continuation's grant is recorded (and counted) in
    /// the state before it is answered. A store that cannot answer gets the fallback: the caller
    /// hears a message, never dead air, and no grant could be recorded for a new stream to take.
    ///
    /// `stream` is the number of the stream the request follows (the action URL's `stream`); a
    /// request for a stream that is not the call's current one is a replay: it spends nothing and
    /// is answered `<Hangup/>`, which reaches only whoever replayed it.
    pub async fn after_stream(&self, call_sid: &CallSid, stream: Option<u32>) -> AfterStream {
        match self
            .store
            .grant_resume(call_sid, self.config.resume_limit, stream)
            .await
        {
            Ok(ResumeGrant::NotCurrent { current }) => {
                warn!(%call_sid, ?stream, current, "after-stream request for a stream that is not the call's current one (a replay); nothing spent");
                AfterStream::Hangup
            }
            Ok(ResumeGrant::Granted { resumed }) => {
                let state = self.store.read_state(call_sid).await.ok().flatten();
                info!(%call_sid, resumed, limit = self.config.resume_limit, "stream lost while the call goes on; continuing it");
                AfterStream::Continue {
                    resumed,
                    from: state.as_ref().and_then(|s| s.from.clone()),
                    to: state.and_then(|s| s.to),
                }
            }
            Ok(ResumeGrant::LimitReached) => {
                info!(%call_sid, limit = self.config.resume_limit, "stream lost, no continuation left; fallback");
                AfterStream::Fallback
            }
            Ok(ResumeGrant::NotContinuable(state)) => {
                let reason = state
                    .as_ref()
                    .and_then(|s| s.end_reason)
                    .map_or("unknown", EndReason::as_str);
                match state.map(|s| s.disposition()) {
                    Some(Disposition::Fallback) => {
                        info!(%call_sid, reason, "stream ended by its agent failing; fallback");
                        AfterStream::Fallback
                    }
                    _ => {
                        info!(%call_sid, reason, "stream ended with its call; hanging up");
                        AfterStream::Hangup
                    }
                }
            }
            Err(err) => {
                self.events.store_error(err.op());
                warn!(%call_sid, error = %err, "after-stream: state store failed; fallback");
                AfterStream::Fallback
            }
        }
    }

    /// Whether another replica is alive and not draining (a fresh heartbeat), so a draining
    /// replica can leave new streams to it (docs/reference.md#drain).
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn other_live_replicas(&self) -> Result<u64, StoreError> {
        self.store.live_replicas(&self.config.replica_id).await
    }

    /// Twilio's status callback: a final status releases the call's slot if it still holds one,
    /// and a stream of the call live here is ended at once (`status_callback`); one live on
    /// another replica learns it at that replica's next renewal. Idempotent; unknown calls change
    /// nothing.
    pub async fn call_status(&self, call_sid: &CallSid, call_status: &str) {
        if !is_final_status(call_status) {
            return;
        }
        if let Some(live) = self.live.get(call_sid) {
            live.end_from_outside(EndReason::StatusCallback);
        }
        // A waiting call holds no slot: out of the line, and nothing to release.
        if let Some(settings) = self.config.wait
            && self.leave_line(call_sid, &settings, "hung up").await
        {
            info!(%call_sid, call_status, "status callback: the caller left the waiting line");
            return;
        }
        match self
            .store
            .release(call_sid, EndReason::StatusCallback)
            .await
        {
            Ok(freed) => info!(%call_sid, call_status, freed, "status callback"),
            Err(err) => {
                self.events.store_error(err.op());
                warn!(%call_sid, error = %err, "status callback could not release; the lease will");
            }
        }
    }

    /// One renewal tick: one batched store round trip renews every live stream's lease and lock,
    /// flushes its state, reclaims lapsed slots cluster-wide and writes the heartbeat. Streams
    /// whose call ended for good elsewhere (a final status callback) or whose lock another
    /// stream took are ended at once: no stream goes on without its slot.
    ///
    /// # Errors
    ///
    /// The store's error after one quick retry on a dropped connection; live calls go on.
    pub async fn renew(&self, draining: bool) -> Result<RenewReport, StoreError> {
        let calls = self.live.all();
        // The tick shares the runtime with every call's frames: snapshotting a thousand states in
        // one poll held a worker thread for milliseconds (docs/benchmarks.md, the periodic
        // stall), so it yields between slices.
        let mut renewals = Vec::with_capacity(calls.len());
        for (i, slice) in calls.chunks(SNAPSHOT_SLICE).enumerate() {
            if i > 0 {
                tokio::task::yield_now().await;
            }
            renewals.extend(slice.iter().map(|call| Renewal {
                call_sid: call.call_sid.clone(),
                lock_token: call.lock_token.clone(),
                state: Some(call.snapshot()),
            }));
        }
        let batch = RenewBatch {
            lease: self.config.call_lease,
            calls: renewals,
            heartbeat: ReplicaHeartbeat {
                id: self.config.replica_id.clone(),
                started_at: self.started_at.clone(),
                calls_active: calls.len() as u64,
                draining,
                max_concurrent_calls: self.config.max_concurrent_calls,
                renew_interval_ms: u64::try_from(self.config.renew_interval.as_millis())
                    .unwrap_or(u64::MAX),
                tenant_key: Some(self.config.tenant_key),
                default_tenant_limit: self.config.default_tenant_limit,
            },
            heartbeat_ttl: self.config.renew_interval * 3,
        };
        let mut result = self.store.renew(&batch).await;
        if let Err(err) = &result
            && err.is_unavailable()
        {
            // The first command after a Redis restart often meets the dead connection; the
            // manager reconnects at once, and live calls must not wait a whole tick to re-register.
            tokio::time::sleep(RETRY_AFTER_CONNECTION_LOSS).await;
            result = self.store.renew(&batch).await;
        }
        let report = match result {
            Ok(report) => report,
            Err(err) => {
                self.events.store_error(err.op());
                warn!(error = %err, calls = calls.len(), "renewal failed; live calls go on, leases retry next tick");
                return Err(err);
            }
        };
        self.events
            .renewed(&report, self.config.max_concurrent_calls);
        for lapsed in &report.lapsed_reservations {
            self.events.reservation_lapsed();
            warn!(
                call_sid = %lapsed.call_sid,
                stream_url = lapsed.stream_url.as_deref().unwrap_or("unknown"),
                "webhook answered but its media stream never came; the reservation lapsed \
                 (is PUBLIC_URL right, and does the proxy pass WebSocket upgrades?)"
            );
        }
        for call_sid in &report.readded {
            warn!(%call_sid, "live call had lost its slot (reclaimed or Redis data lost); re-registered");
        }
        for call_sid in &report.lock_lost {
            warn!(%call_sid, "another stream owns this call's lock now; ending this one");
            self.end_live(call_sid, EndReason::LockLost);
        }
        for call_sid in &report.ended {
            info!(%call_sid, "call ended elsewhere (final status callback); ending its stream");
            self.end_live(call_sid, EndReason::StatusCallback);
        }
        if report.active > self.config.max_concurrent_calls {
            warn!(
                active = report.active,
                limit = self.config.max_concurrent_calls,
                over = report.active - self.config.max_concurrent_calls,
                "cluster above its limit after re-registering live calls; no new call is admitted until it drops"
            );
        }
        if !report.reclaimed.is_empty() {
            info!(count = report.reclaimed.len(), calls = ?report.reclaimed, "reclaimed lapsed slots");
        }
        Ok(report)
    }

    /// Resolves when the live calls must re-register now, not at the next tick: the store found
    /// that Redis lost its data or restarted, or that it was out of reach for longer than a lease
    /// (docs/reference.md#admission). The renewal task runs [`Self::renew`] when it does.
    pub async fn reregister_wanted(&self) {
        self.store.reregister_wanted().await;
    }

    fn end_live(&self, call_sid: &str, reason: EndReason) {
        if let Ok(call_sid) = CallSid::parse(call_sid)
            && let Some(live) = self.live.get(&call_sid)
        {
            live.end_from_outside(reason);
        }
    }

    /// A lock token unique to this stream: the replica, this process's start, and a sequence, so a
    /// restarted replica with the same id and pid (pid 1 in a container) never reuses one.
    fn new_lock_token(&self) -> String {
        let seq = self.next_token.fetch_add(1, Ordering::Relaxed);
        format!("{}/{:x}/{seq}", self.config.replica_id, self.token_seed)
    }

    async fn timed_admit(
        &self,
        call_sid: &CallSid,
        policy: AdmitPolicy,
        lease: Duration,
        initial_state: Option<&CallState>,
    ) -> Result<Admission, StoreError> {
        let started = Instant::now();
        let result = self
            .store
            .admit(call_sid, policy, lease, initial_state)
            .await;
        self.events.admission_time(started.elapsed());
        result
    }

    fn refused(&self, call_sid: &CallSid, refusal: Refusal, tenant: Option<&str>) -> RejectReason {
        let reason = match refusal {
            Refusal::AtLimit { active } => {
                info!(%call_sid, active, limit = self.config.max_concurrent_calls, "call refused: every slot is taken");
                RejectReason::MaxConcurrent
            }
            Refusal::TenantAtLimit { active } => {
                info!(%call_sid, tenant, active, "call refused: its tenant is at its cap");
                RejectReason::TenantLimit
            }
            Refusal::Recovering => {
                info!(%call_sid, "call refused: Redis lost its data or was away; live calls are re-registering");
                RejectReason::Recovering
            }
            // Only a webhook's admission can meet these two, and it handles them itself.
            Refusal::NoSlotHeld | Refusal::Ended => RejectReason::Draining,
        };
        self.events.refused(reason);
        reason
    }

    fn store_failed(&self, call_sid: &CallSid, what: &str, err: &StoreError) -> RejectReason {
        self.events.store_error(err.op());
        self.events.refused(RejectReason::StoreUnavailable);
        warn!(%call_sid, error = %err, "call refused: state store failed during {what}");
        RejectReason::StoreUnavailable
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::events::NoEvents;
    use crate::state::CallState;
    use crate::store::{MemoryStore, StoreConfig};

    /// The tick shares the runtime with every call's frames: with many live calls it must give the
    /// worker back between slices instead of snapshotting them all in one poll.
    #[test]
    fn a_tick_over_many_live_calls_yields_between_slices() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let calls = Calls::new(
                CallsConfig {
                    replica_id: "r1".into(),
                    max_concurrent_calls: 1000,
                    reservation: Duration::from_secs(30),
                    call_lease: Duration::from_secs(30),
                    renew_interval: Duration::from_secs(10),
                    tenant_key: crate::tenant::TenantKey::To,
                    default_tenant_limit: None,
                    resume_limit: 2,
                    wait: None,
                    stream_tokens: false,
                },
                Arc::new(MemoryStore::new(StoreConfig::default())),
                Arc::new(NoEvents),
            );
            let live = SNAPSHOT_SLICE * 4;
            for i in 0..live {
                let sid = CallSid::parse(&format!("CA{i:032x}")).unwrap();
                let state = CallState::reserved(sid.as_str(), "r1");
                assert!(
                    calls
                        .live()
                        .insert(Arc::new(LiveCall::new(sid, format!("t{i}"), state)))
                );
            }
            let mut tick = pin!(calls.renew(false));
            let mut cx = Context::from_waker(Waker::noop());
            let mut polls = 0;
            let report = loop {
                polls += 1;
                if let Poll::Ready(report) = tick.as_mut().poll(&mut cx) {
                    break report;
                }
            };
            // One poll per slice: a yield between each two, and the memory store never waits.
            assert!(
                polls >= live / SNAPSHOT_SLICE,
                "{live} live calls renewed in {polls} polls"
            );
            // Every call was in the batch: the store re-added each (none was admitted here).
            assert_eq!(report.unwrap().readded.len(), live);
        });
    }
}
