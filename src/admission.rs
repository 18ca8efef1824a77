//! The life of a call's slot on this replica: reserved by the voice webhook, activated (or admitted)
//! by its media stream, released exactly once at the end. Knows nothing of HTTP or WebSockets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::app::App;
use crate::call_sid::CallSid;
use crate::live_calls::LiveCall;
use crate::state::{CallState, CallStatus, EndReason, MediaFormat, now_rfc3339};
use crate::store::{Admission, AdmitPolicy, LockOutcome, Refusal, StoreError};

/// What the voice webhook tells us about a call.
#[derive(Debug, Clone, Default)]
pub struct WebhookCall {
    pub account_sid: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Why a call was turned away; each maps to the configured reject mode (webhook) or close code 1013.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    MaxConcurrent,
    Draining,
    /// Redis lost its data moments ago; live calls are re-registering.
    Recovering,
    /// The state store did not answer: the limit cannot be guaranteed.
    StoreUnavailable,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxConcurrent => "max_concurrent",
            Self::Draining => "draining",
            Self::Recovering => "recovering",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Answer with the stream TwiML; `new` is false for a retried webhook.
    Connect {
        new: bool,
    },
    Reject(RejectReason),
}

/// What a stream's `start` message carries.
#[derive(Debug, Clone, Default)]
pub struct StreamStart {
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
}

const FINAL_STATUSES: [&str; 5] = ["completed", "busy", "failed", "no-answer", "canceled"];

impl App {
    /// Reserves a slot for an incoming call for `RESERVATION_SECS`, writing its state in the
    /// same atomic step. A retried webhook finds its slot and takes no second one.
    pub async fn admit_webhook(&self, call_sid: &CallSid, call: WebhookCall) -> WebhookOutcome {
        if self.is_draining() {
            self.metrics.rejected(RejectReason::Draining.as_str());
            info!(%call_sid, "call refused: replica is draining");
            return WebhookOutcome::Reject(RejectReason::Draining);
        }
        let mut state = CallState::reserved(call_sid.as_str(), &self.config.replica_id);
        state.account_sid = call.account_sid;
        state.from = call.from;
        state.to = call.to;
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
                    self.metrics.calls_started.inc();
                }
                info!(%call_sid, new, active, "call reserved");
                WebhookOutcome::Connect { new }
            }
            Ok(Admission::Refused(refusal)) => {
                WebhookOutcome::Reject(self.refused(call_sid, refusal))
            }
            Err(err) => WebhookOutcome::Reject(self.store_failed(call_sid, "admit", &err)),
        }
    }

    /// Takes the call's lock and its slot when its media stream starts: a reservation becomes
    /// active; a stream without one is admitted now (not while draining).
    pub async fn start_stream(
        &self,
        call_sid: &CallSid,
        start: StreamStart,
    ) -> Result<Arc<LiveCall>, StreamRefusal> {
        let token = self.new_lock_token();
        match self.store.take_lock(call_sid, &token).await {
            Ok(LockOutcome::Acquired) => {}
            Ok(LockOutcome::HeldBy(owner)) => {
                warn!(%call_sid, %owner, "second stream refused: the call is locked by another stream");
                return Err(StreamRefusal::LockedElsewhere);
            }
            Err(err) => {
                return Err(StreamRefusal::Rejected(self.store_failed(
                    call_sid,
                    "take_lock",
                    &err,
                )));
            }
        }
        let policy = if self.is_draining() {
            AdmitPolicy::ExistingOnly
        } else {
            AdmitPolicy::MayTakeSlot
        };
        let admitted = match self
            .timed_admit(call_sid, policy, self.config.call_lease, None)
            .await
        {
            Ok(Admission::Admitted { new, .. }) => new,
            Ok(Admission::Refused(refusal)) => {
                let reason = match refusal {
                    Refusal::NoSlotHeld => {
                        self.metrics.rejected(RejectReason::Draining.as_str());
                        info!(%call_sid, "stream without reservation refused: replica is draining");
                        RejectReason::Draining
                    }
                    other => self.refused(call_sid, other),
                };
                self.drop_lock(call_sid, &token).await;
                return Err(StreamRefusal::Rejected(reason));
            }
            Err(err) => {
                let reason = self.store_failed(call_sid, "admit", &err);
                self.drop_lock(call_sid, &token).await;
                return Err(StreamRefusal::Rejected(reason));
            }
        };
        if admitted {
            self.metrics.calls_started.inc();
        }

        // The webhook's state carries created_at, from and to; a corrupt or missing one is replaced.
        let mut state = match self.store.read_state(call_sid).await {
            Ok(Some(state)) if state.status != CallStatus::Ended => state,
            Ok(_) => CallState::reserved(call_sid.as_str(), &self.config.replica_id),
            Err(err) => {
                self.metrics.redis_error(err.op());
                warn!(%call_sid, error = %err, "stored state unreadable; starting a fresh one");
                CallState::reserved(call_sid.as_str(), &self.config.replica_id)
            }
        };
        state.status = CallStatus::Active;
        state.replica = self.config.replica_id.clone();
        state.stream_sid = Some(start.stream_sid);
        if start.account_sid.is_some() {
            state.account_sid = start.account_sid;
        }
        state.media_format = start.media_format;
        state.custom_parameters = start.custom_parameters;
        state.started_at = Some(now_rfc3339());
        if let Err(err) = self.store.write_state(&state).await {
            // The renewal tick flushes the state again; the call itself is fine.
            self.metrics.redis_error(err.op());
            warn!(%call_sid, error = %err, "could not write the active state; the next tick will");
        }

        let live = Arc::new(LiveCall::new(call_sid.clone(), token, state));
        if !self.calls.insert(live.clone()) {
            // Same replica, same call, lock re-entered with a fresh token: cannot happen, since
            // tokens are unique per stream; refuse rather than double-serve.
            return Err(StreamRefusal::LockedElsewhere);
        }
        self.metrics.calls_active.set(self.calls.len() as i64);
        info!(%call_sid, new_slot = admitted, "stream started");
        Ok(live)
    }

    /// Ends a live stream: final state, slot released exactly once, lock released by its owner.
    /// Store failures are logged; the slot then lapses with its lease, never lingering.
    pub async fn end_stream(&self, live: &LiveCall, reason: EndReason) {
        let call_sid = &live.call_sid;
        self.calls.remove(call_sid);
        self.metrics.calls_active.set(self.calls.len() as i64);
        self.metrics.ended(reason.as_str());
        let state = live.ended(reason);
        if let Err(err) = self.store.write_state(&state).await {
            self.metrics.redis_error(err.op());
            warn!(%call_sid, error = %err, "could not write the final state");
        }
        match self.store.release(call_sid, reason).await {
            Ok(freed) => info!(
                %call_sid,
                reason = reason.as_str(),
                freed,
                frames_in = state.frames_in,
                frames_out = state.frames_out,
                "stream ended"
            ),
            Err(err) => {
                self.metrics.redis_error(err.op());
                warn!(%call_sid, error = %err, "could not release the slot; it lapses with its lease");
            }
        }
        self.drop_lock(call_sid, &live.lock_token).await;
    }

    /// Twilio's status callback: a final status releases the call's slot if it still holds one.
    /// Idempotent; unknown calls change nothing.
    pub async fn call_status(&self, call_sid: &CallSid, call_status: &str) {
        if !FINAL_STATUSES.contains(&call_status) {
            return;
        }
        match self
            .store
            .release(call_sid, EndReason::StatusCallback)
            .await
        {
            Ok(freed) => info!(%call_sid, call_status, freed, "status callback"),
            Err(err) => {
                self.metrics.redis_error(err.op());
                warn!(%call_sid, error = %err, "status callback could not release; the lease will");
            }
        }
    }

    async fn timed_admit(
        &self,
        call_sid: &CallSid,
        policy: AdmitPolicy,
        lease: std::time::Duration,
        initial_state: Option<&CallState>,
    ) -> Result<Admission, StoreError> {
        let started = Instant::now();
        let result = self
            .store
            .admit(call_sid, policy, lease, initial_state)
            .await;
        self.metrics
            .admission_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn refused(&self, call_sid: &CallSid, refusal: Refusal) -> RejectReason {
        let reason = match refusal {
            Refusal::AtLimit { active } => {
                self.metrics.calls_rejected_max_concurrent.inc();
                info!(%call_sid, active, limit = self.config.max_concurrent_calls, "call refused: every slot is taken");
                RejectReason::MaxConcurrent
            }
            Refusal::Recovering => {
                info!(%call_sid, "call refused: Redis lost its data; live calls are re-registering");
                RejectReason::Recovering
            }
            Refusal::NoSlotHeld => RejectReason::Draining,
        };
        self.metrics.rejected(reason.as_str());
        reason
    }

    fn store_failed(&self, call_sid: &CallSid, what: &str, err: &StoreError) -> RejectReason {
        self.metrics.redis_error(err.op());
        self.metrics
            .rejected(RejectReason::StoreUnavailable.as_str());
        warn!(%call_sid, error = %err, "call refused: state store failed during {what}");
        RejectReason::StoreUnavailable
    }

    async fn drop_lock(&self, call_sid: &CallSid, token: &str) {
        if let Err(err) = self.store.release_lock(call_sid, token).await {
            self.metrics.redis_error(err.op());
            warn!(%call_sid, error = %err, "could not release the call lock; it expires with its TTL");
        }
    }
}
