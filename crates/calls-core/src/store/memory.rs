//! The in-process backend: one replica, no Redis, the same rules as the Redis scripts.
//! Used by `cargo run` without `REDIS_URL`; state dies with the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

mod outbound;
mod slot_tenants;
mod slots;

use self::slot_tenants::SlotTenants;
use self::slots::Slots;
use super::line::{InLine, Line};
use super::{
    Admission, AdmitPolicy, Backend, CallStore, ClusterStats, LapsedReservation, Refusal,
    RenewBatch, RenewReport, ResumeGrant, StoreConfig, StoreError, StreamAdmission, StreamClaim,
    StreamEnd, TenantsUsage, hands_over, next_grant, tenants_usage,
};
use crate::call_sid::CallSid;
use crate::state::{CallState, CallStatus, EndReason};
use crate::wait::{
    OverflowReason, WaitOp, WaitOutcome, WaitReason, WaitReport, WaitSettings, WaitVisit,
};

#[derive(Default)]
struct Inner {
    /// call SID -> lease deadline, also ordered by deadline for the reclaim.
    slots: Slots,
    started: u64,
    rejected_max_concurrent: u64,
    rejected_tenant_limit: u64,
    /// call SID -> tenant, for every slot of a call with a tenant (as `calls:slot_tenant`).
    slot_tenant: SlotTenants,
    /// call SID -> (owner token, expiry).
    locks: HashMap<String, (String, Instant)>,
    /// call SID -> (state, expiry).
    states: HashMap<String, (CallState, Instant)>,
    /// Reservations whose stream never came, reclaimed since the last renewal reported them.
    lapsed: Vec<LapsedReservation>,
    /// The waiting room's line (docs/reference.md#waiting-room).
    line: Line,
    /// Caller number → end of its WhatsApp cooldown.
    whatsapp_sent: HashMap<String, Instant>,
    /// Outbound calls (docs/reference.md#outbound).
    outbound: outbound::Outbound,
}

impl Inner {
    /// Drops lapsed slots, ending their states. Runs on every admission, so it finds them by
    /// deadline (O(log n + lapsed)) rather than by walking every live call.
    fn reclaim(&mut self, now: Instant) -> Vec<String> {
        let expired = self.slots.expired(now);
        for sid in &expired {
            if let Some((state, until)) = self.states.get(sid)
                && *until > now
                && state.status == CallStatus::Reserved
            {
                self.lapsed.push(LapsedReservation::of(state));
            }
            self.slot_tenant.remove(sid);
            self.end_state(sid, EndReason::LeaseExpired, now);
        }
        expired
    }

    /// Forgets expired locks and states: the TTLs Redis would enforce. Run on the renewal tick,
    /// not per admission, since it walks every state kept for the last `CALL_STATE_TTL_SECS`.
    fn purge_expired(&mut self, now: Instant) {
        self.locks.retain(|_, (_, until)| *until > now);
        self.states.retain(|_, (_, until)| *until > now);
    }

    fn end_state(&mut self, sid: &str, reason: EndReason, now: Instant) {
        if let Some((state, until)) = self.states.get_mut(sid)
            && *until > now
        {
            state.end(reason);
        }
    }

    /// Ended for good; a lapsed lease is not, so a paused owner's live call can come back.
    fn has_ended(&self, sid: &str, now: Instant) -> bool {
        self.states.get(sid).is_some_and(|(state, until)| {
            *until > now
                && state.status == CallStatus::Ended
                && state.end_reason != Some(EndReason::LeaseExpired)
        })
    }

    /// The lock owner's token, if the lock is live.
    fn lock_owner(&self, sid: &str, now: Instant) -> Option<&str> {
        self.locks
            .get(sid)
            .filter(|(_, until)| *until > now)
            .map(|(token, _)| token.as_str())
    }

    fn active(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Frees the call's slot, if held, with its tenant's; returns whether one was held.
    fn free(&mut self, call_sid: &str) -> bool {
        self.slot_tenant.remove(call_sid);
        self.slots.remove(call_sid).is_some()
    }

    /// Live slots of `tenant`, reservations included.
    fn tenant_active(&self, tenant: &str) -> u64 {
        self.slot_tenant.active(tenant)
    }

    /// The admission rule of `admit_slot` in the Lua prelude, after a reclaim: the global cap
    /// first, then the tenant's (its own, else `default_tenant_limit`). A call admitted before
    /// (`admitted_before`) takes a slot again without being counted as started again.
    fn admit(
        &mut self,
        call_sid: &str,
        policy: AdmitPolicy,
        deadline: Instant,
        config: &StoreConfig,
        tenant: Option<&str>,
    ) -> Admission {
        // A caller who waited in line has a state (`waiting`) but was never counted.
        let counted = self
            .states
            .get(call_sid)
            .is_some_and(|(state, _)| state.status != CallStatus::Waiting);
        // The new lease replaces the old one (a stream activating its reservation).
        if self.slots.renew(call_sid, |_| deadline) {
            let active = self.active();
            return Admission::Admitted { new: false, active };
        }
        if policy == AdmitPolicy::ExistingOnly {
            return Admission::Refused(Refusal::NoSlotHeld);
        }
        let active = self.active();
        if active >= config.limit {
            self.rejected_max_concurrent += 1;
            return Admission::Refused(Refusal::AtLimit { active });
        }
        if let Some(tenant) = tenant {
            // Tenants' own caps are set with the command line, in Redis: in-process state has
            // only the default.
            let cap = config.default_tenant_limit;
            if cap.is_some_and(|cap| self.tenant_active(tenant) >= cap) {
                self.rejected_tenant_limit += 1;
                return Admission::Refused(Refusal::TenantAtLimit { active });
            }
            self.slot_tenant
                .insert(call_sid.to_owned(), tenant.to_owned());
        }
        self.slots.set(call_sid, deadline);
        if !counted {
            self.started += 1;
        }
        Admission::Admitted {
            new: !counted,
            active: active + 1,
        }
    }

    /// `state` with the stored state's pending continuation grant kept
    /// (docs/reference.md#after-stream): the old stream's last writes must not take it from the new
    /// stream (`keep_grant` in the prelude).
    fn keep_grant(&self, call_sid: &str, now: Instant, state: &CallState) -> CallState {
        let mut state = state.clone();
        if let Some(grant) = self
            .states
            .get(call_sid)
            .filter(|(_, until)| *until > now)
            .and_then(|(stored, _)| stored.resume_grant)
        {
            state.resumes = grant;
            state.resume_grant = Some(grant);
            if let Some((stored, _)) = self.states.get(call_sid) {
                state.handovers = stored.handovers;
            }
        }
        state
    }

    /// A live state of the call that has not ended, if one is stored.
    fn open_state(&self, call_sid: &str, now: Instant) -> Option<&CallState> {
        self.states
            .get(call_sid)
            .filter(|(state, until)| *until > now && state.status != CallStatus::Ended)
            .map(|(state, _)| state)
    }
}

impl Inner {
    /// Free slots under `tenant`'s cap (`""`: no tenant, no cap of its own).
    fn tenant_room(&self, tenant: &str, config: &StoreConfig) -> u64 {
        match config.default_tenant_limit {
            Some(cap) if !tenant.is_empty() => cap.saturating_sub(self.tenant_active(tenant)),
            _ => u64::MAX,
        }
    }

    /// A caller leaving the line unserved: counted once as refused for the reason that sent
    /// them there, their state ended with `reason`.
    fn left_unserved(&mut self, call_sid: &str, caller: &InLine, reason: EndReason, now: Instant) {
        match caller.reason {
            WaitReason::MaxConcurrent => self.rejected_max_concurrent += 1,
            WaitReason::TenantLimit => self.rejected_tenant_limit += 1,
        }
        self.end_state(call_sid, reason, now);
    }

    /// Callers silent for two polls leave the line.
    fn prune_line(&mut self, now: Instant, settings: &WaitSettings) -> Vec<(String, WaitReason)> {
        let gone = self.line.prune(now, settings);
        for (sid, caller) in &gone {
            self.left_unserved(sid, caller, EndReason::WaitAbandoned, now);
        }
        gone.into_iter()
            .map(|(sid, caller)| (sid, caller.reason))
            .collect()
    }

    /// The callers whose turn it is now.
    fn turns(
        &self,
        now: Instant,
        settings: &WaitSettings,
        config: &StoreConfig,
    ) -> Vec<(String, String)> {
        let free = config.limit.saturating_sub(self.active());
        self.line.turns(now, settings, free, &|tenant| {
            self.tenant_room(tenant, config)
        })
    }

    /// `wait.lua`'s visit, in process.
    fn visit(
        &mut self,
        visit: &WaitVisit<'_>,
        now: Instant,
        settings: &WaitSettings,
        config: &StoreConfig,
    ) -> WaitOutcome {
        let sid = visit.call_sid.as_str();
        let tenant = visit.tenant.unwrap_or("");
        let deadline = now + visit.reservation;
        if self.slots.contains(sid) {
            // A retried webhook, or a visit after the admission: the slot it holds, never a
            // second one.
            self.line.remove(sid);
            let admission = self.admit(sid, AdmitPolicy::MayTakeSlot, deadline, config, None);
            let active = self.active();
            return WaitOutcome::Admitted {
                new: false,
                active: match admission {
                    Admission::Admitted { active, .. } => active,
                    Admission::Refused(_) => active,
                },
                waited: None,
            };
        }
        if let Some(caller) = self.line.get_mut(sid) {
            caller.last_visit = now;
            let (joined, caller_tenant) = (caller.joined, caller.tenant.clone());
            let waited = now.saturating_duration_since(joined);
            if visit.digit {
                return self.overflow(sid, OverflowReason::Digit, now);
            }
            let turn = self
                .turns(now, settings, config)
                .iter()
                .any(|(t, _)| t == sid);
            if turn {
                let tenant = (!caller_tenant.is_empty()).then_some(caller_tenant.as_str());
                if let Admission::Admitted { new, active } =
                    self.admit(sid, AdmitPolicy::MayTakeSlot, deadline, config, tenant)
                {
                    self.line.remove(sid);
                    self.line.served(&caller_tenant);
                    // The admitted call's state says how long it waited (as wait.lua splices it).
                    let mut reserved = visit.reserved.clone();
                    reserved.waiting_since = self
                        .states
                        .get(sid)
                        .and_then(|(stored, _)| stored.waiting_since.clone());
                    self.write_state(&reserved, now, config);
                    return WaitOutcome::Admitted {
                        new,
                        active,
                        waited: Some(waited),
                    };
                }
            }
            if waited >= settings.max_wait {
                return self.overflow(sid, OverflowReason::Timeout, now);
            }
            let position = self.line.position(now, settings, sid);
            let caller = self.line.get_mut(sid).expect("still in line");
            let announce = caller.position != position;
            caller.position = position;
            return WaitOutcome::Waiting {
                position,
                announce,
                joined: false,
            };
        }
        if self.has_ended(sid, now) {
            return WaitOutcome::Ended;
        }
        // Nobody jumps the line: a new call takes a slot only if one is left after every turn
        // of the callers present, under its own tenant's cap too.
        let turns = self.turns(now, settings, config);
        let free = config
            .limit
            .saturating_sub(self.active())
            .saturating_sub(turns.len() as u64);
        let own_turns = turns.iter().filter(|(_, t)| t == tenant).count() as u64;
        let room = self.tenant_room(tenant, config).saturating_sub(own_turns);
        if free > 0 && room > 0 {
            let admission = self.admit(
                sid,
                AdmitPolicy::MayTakeSlot,
                deadline,
                config,
                visit.tenant,
            );
            if let Admission::Admitted { new, active } = admission {
                self.write_state(visit.reserved, now, config);
                return WaitOutcome::Admitted {
                    new,
                    active,
                    waited: None,
                };
            }
        }
        let reason = if free == 0 {
            WaitReason::MaxConcurrent
        } else {
            WaitReason::TenantLimit
        };
        if self.line.len() >= settings.max_callers {
            match reason {
                WaitReason::MaxConcurrent => self.rejected_max_concurrent += 1,
                WaitReason::TenantLimit => self.rejected_tenant_limit += 1,
            }
            return WaitOutcome::Overflow {
                reason: OverflowReason::Full,
                sent_by: reason,
                waited: None,
            };
        }
        self.line.join(sid, tenant, reason, now);
        self.write_state(visit.waiting, now, config);
        let position = self.line.position(now, settings, sid);
        if let Some(caller) = self.line.get_mut(sid) {
            caller.position = position;
        }
        WaitOutcome::Waiting {
            position,
            announce: true,
            joined: true,
        }
    }

    fn overflow(&mut self, call_sid: &str, reason: OverflowReason, now: Instant) -> WaitOutcome {
        let caller = self
            .line
            .remove(call_sid)
            .expect("overflow of a caller in line");
        self.left_unserved(call_sid, &caller, EndReason::WaitOverflow, now);
        WaitOutcome::Overflow {
            reason,
            sent_by: caller.reason,
            waited: Some(now.saturating_duration_since(caller.joined)),
        }
    }

    fn write_state(&mut self, state: &CallState, now: Instant, config: &StoreConfig) {
        self.states.insert(
            state.call_sid.clone(),
            (state.clone(), now + config.state_ttl),
        );
    }
}

/// The owner named when a `resumed` stream carries no grant the state records.
const NO_GRANT: &str = "no matching resume grant";

pub struct MemoryStore {
    inner: Mutex<Inner>,
    config: StoreConfig,
}

impl MemoryStore {
    pub fn new(config: StoreConfig) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No operation panics while holding the guard, but a poisoned map is still consistent:
        // every mutation is a single insert or remove (the slots' two indexes: a pair with nothing
        // that can panic between them).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl CallStore for MemoryStore {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    async fn admit(
        &self,
        call_sid: &CallSid,
        policy: AdmitPolicy,
        lease: Duration,
        initial_state: Option<&CallState>,
    ) -> Result<Admission, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.reclaim(now);
        if initial_state.is_some()
            && !inner.slots.contains(call_sid.as_str())
            && inner.has_ended(call_sid.as_str(), now)
        {
            return Ok(Admission::Refused(Refusal::Ended));
        }
        let tenant = initial_state.and_then(|state| state.tenant.as_deref());
        let held = inner.slots.contains(call_sid.as_str());
        let admission = inner.admit(call_sid.as_str(), policy, now + lease, &self.config, tenant);
        if let (Admission::Admitted { .. }, false, Some(state)) = (&admission, held, initial_state)
        {
            let until = now + self.config.state_ttl;
            inner
                .states
                .insert(call_sid.to_string(), (state.clone(), until));
        }
        Ok(admission)
    }

    async fn start_stream(
        &self,
        call_sid: &CallSid,
        lock_token: &str,
        policy: AdmitPolicy,
        lease: Duration,
        fresh: &CallState,
        claim: StreamClaim,
    ) -> Result<StreamAdmission, StoreError> {
        let now = Instant::now();
        let sid = call_sid.as_str();
        let resumed = claim.resumed;
        let mut inner = self.lock();
        // docs/reference.md#stream-token: an unbound start may only be a new admission, where the
        // call's TwiML carried a token (as stream_start.lua).
        let token_issued = inner
            .states
            .get(sid)
            .is_some_and(|(state, until)| *until > now && state.stream_token);
        if !claim.bound && token_issued && (resumed.is_some() || inner.slots.contains(sid)) {
            return Ok(StreamAdmission::Unbound);
        }
        // docs/reference.md#after-stream: a `resumed` stream takes the call over only with the
        // grant the state records.
        let stored = inner
            .states
            .get(sid)
            .filter(|(_, until)| *until > now)
            .map(|(state, _)| state);
        // A grant not yet taken reserves the call for its continuation: no other stream gets it.
        let grant = stored.and_then(|s| s.resume_grant);
        let took_over = match (resumed, grant) {
            (None, None) => false,
            (Some(n), Some(g)) if n == g => true,
            _ => return Ok(StreamAdmission::LockedBy(NO_GRANT.to_owned())),
        };
        if !took_over
            && let Some(owner) = inner.lock_owner(sid, now)
            && owner != lock_token
        {
            return Ok(StreamAdmission::LockedBy(owner.to_owned()));
        }
        inner.reclaim(now);
        let tenant = fresh.tenant.as_deref();
        let (new_slot, active) = if took_over {
            // A live call is never dropped by the limiter: its slot comes back whatever the count,
            // in the tenant it was admitted for (its state's), else this stream's.
            inner.slots.set(sid, now + lease);
            let admitted_for = inner
                .states
                .get(sid)
                .and_then(|(state, _)| state.tenant.clone())
                .or_else(|| tenant.map(str::to_owned));
            if let Some(admitted_for) = admitted_for {
                inner.slot_tenant.insert(sid.to_owned(), admitted_for);
            }
            (false, inner.active())
        } else {
            match inner.admit(sid, policy, now + lease, &self.config, tenant) {
                Admission::Admitted { new, active } => (new, active),
                Admission::Refused(refusal) => return Ok(StreamAdmission::Refused(refusal)),
            }
        };
        inner.locks.insert(
            sid.to_owned(),
            (lock_token.to_owned(), now + self.config.lock_ttl),
        );
        let mut state = fresh.clone();
        let carried = if took_over {
            inner.states.get(sid).map(|(state, _)| state)
        } else {
            inner.open_state(sid, now)
        };
        if let Some(stored) = carried {
            state.created_at.clone_from(&stored.created_at);
            state.from.clone_from(&stored.from);
            state.to.clone_from(&stored.to);
            if state.account_sid.is_none() {
                state.account_sid.clone_from(&stored.account_sid);
            }
            if stored.tenant.is_some() {
                state.tenant.clone_from(&stored.tenant);
            }
            state.handovers = stored.handovers;
            state.stream_token = stored.stream_token;
            state.direction = stored.direction;
        }
        // docs/reference.md#resume-limit: a stream without `resumed` never resets the call's
        // continuation count, whatever state it finds (as stream_start.lua).
        if !took_over
            && let Some((stored, _)) = inner
                .states
                .get(sid)
                .filter(|(stored, until)| *until > now && stored.resumes > 0)
        {
            state.resumes = stored.resumes;
            state.handovers = stored.handovers;
        }
        inner
            .states
            .insert(sid.to_owned(), (state.clone(), now + self.config.state_ttl));
        Ok(StreamAdmission::Started {
            new_slot,
            active,
            state: Box::new(state),
            replaced_corrupt_state: false,
            took_over,
        })
    }

    async fn grant_resume(
        &self,
        call_sid: &CallSid,
        limit: u32,
        stream: Option<u32>,
    ) -> Result<ResumeGrant, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let stored = inner
            .states
            .get(call_sid.as_str())
            .filter(|(_, until)| *until > now)
            .map(|(state, _)| state);
        match next_grant(stored, limit, stream) {
            Ok((granted, resumed)) => {
                let until = now + self.config.state_ttl;
                inner.states.insert(call_sid.to_string(), (granted, until));
                // A slot still held waits for the continuation at least RESERVATION_SECS
                // (docs/reference.md#hand-over), as in grant.lua.
                if let Some(held) = inner.slots.deadline(call_sid.as_str())
                    && held > now
                {
                    inner
                        .slots
                        .set(call_sid.as_str(), held.max(now + self.config.reservation));
                }
                Ok(ResumeGrant::Granted { resumed })
            }
            Err(answer) => Ok(answer),
        }
    }

    async fn live_replicas(&self, _except: &str) -> Result<u64, StoreError> {
        // In-process state is one replica's alone: there is never another to hand calls to.
        Ok(0)
    }

    async fn end_stream(
        &self,
        call_sid: &CallSid,
        lock_token: &str,
        final_state: &CallState,
    ) -> Result<StreamEnd, StoreError> {
        let now = Instant::now();
        let sid = call_sid.as_str();
        let mut inner = self.lock();
        if let Some(owner) = inner.lock_owner(sid, now)
            && owner != lock_token
        {
            return Ok(StreamEnd::LockedBy(owner.to_owned()));
        }
        inner.locks.remove(sid);
        let state = inner.keep_grant(sid, now, final_state);
        inner
            .states
            .insert(sid.to_owned(), (state, now + self.config.state_ttl));
        // A hand-over keeps a slot that has not lapsed for its continuation
        // (docs/reference.md#hand-over), as in stream_end.lua.
        if hands_over(final_state) && inner.slots.deadline(sid).is_some_and(|held| held > now) {
            inner.slots.set(sid, now + self.config.reservation);
            return Ok(StreamEnd::Held);
        }
        let freed = inner.free(sid);
        Ok(StreamEnd::Ended { freed })
    }

    async fn release(&self, call_sid: &CallSid, reason: EndReason) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let freed = inner.free(call_sid.as_str());
        inner.end_state(call_sid.as_str(), reason, now);
        Ok(freed)
    }

    async fn renew(&self, batch: &RenewBatch) -> Result<RenewReport, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.purge_expired(now);
        let reclaimed = inner.reclaim(now);
        let deadline = now + batch.lease;
        let mut report = RenewReport {
            lapsed_reservations: std::mem::take(&mut inner.lapsed),
            ..RenewReport::default()
        };
        for call in &batch.calls {
            let sid = call.call_sid.as_str();
            if inner.has_ended(sid, now) {
                report.ended.push(sid.to_owned());
                continue;
            }
            if !inner.slots.renew(sid, |held| held.max(deadline)) {
                inner.slots.set(sid, deadline);
                report.readded.push(sid.to_owned());
            }
            // A slot keeps the tenant it was admitted under; a re-added one takes the call's.
            if let Some(tenant) = call.tenant()
                && !inner.slot_tenant.contains(sid)
            {
                inner.slot_tenant.insert(sid.to_owned(), tenant.to_owned());
            }
            let owns = inner
                .lock_owner(sid, now)
                .is_none_or(|owner| owner == call.lock_token);
            if !owns {
                report.lock_lost.push(sid.to_owned());
                continue;
            }
            inner.locks.insert(
                sid.to_owned(),
                (call.lock_token.clone(), now + self.config.lock_ttl),
            );
            let state_until = now + self.config.state_ttl;
            match (&call.state, inner.states.get_mut(sid)) {
                (Some(state), _) => {
                    let state = inner.keep_grant(sid, now, state);
                    inner.states.insert(sid.to_owned(), (state, state_until));
                }
                (None, Some((_, until))) => *until = state_until,
                (None, None) => {}
            }
        }
        // The heartbeat has no reader in a single process; the replica block of the metrics
        // comes from the process itself.
        report.active = inner.active();
        report.reclaimed = reclaimed
            .into_iter()
            .filter(|sid| !report.readded.contains(sid))
            .collect();
        Ok(report)
    }

    async fn read_state(&self, call_sid: &CallSid) -> Result<Option<CallState>, StoreError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .states
            .get(call_sid.as_str())
            .filter(|(_, until)| *until > now)
            .map(|(state, _)| state.clone()))
    }

    async fn write_state(&self, state: &CallState) -> Result<(), StoreError> {
        let until = Instant::now() + self.config.state_ttl;
        self.lock()
            .states
            .insert(state.call_sid.clone(), (state.clone(), until));
        Ok(())
    }

    async fn wait(
        &self,
        op: WaitOp<'_>,
        settings: &WaitSettings,
    ) -> Result<WaitReport, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.reclaim(now);
        let abandoned = inner.prune_line(now, settings);
        let outcome = match op {
            WaitOp::Visit(visit) => inner.visit(&visit, now, settings, &self.config),
            WaitOp::Leave(call_sid) => {
                let sid = call_sid.as_str();
                let sent_by = inner.line.remove(sid).map(|caller| {
                    inner.left_unserved(sid, &caller, EndReason::WaitAbandoned, now);
                    caller.reason
                });
                WaitOutcome::Left { sent_by }
            }
            WaitOp::Sweep => WaitOutcome::Swept,
        };
        let (waiting, longest) = match outcome {
            WaitOutcome::Swept => (inner.line.len(), inner.line.longest(now)),
            _ => (0, Duration::ZERO),
        };
        Ok(WaitReport {
            outcome,
            abandoned,
            waiting,
            longest,
        })
    }

    async fn claim_whatsapp(&self, number: &str, cooldown: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.whatsapp_sent.retain(|_, until| *until > now);
        if inner.whatsapp_sent.contains_key(number) {
            return Ok(false);
        }
        inner
            .whatsapp_sent
            .insert(number.to_owned(), now + cooldown);
        Ok(true)
    }

    async fn stats(&self) -> Result<ClusterStats, StoreError> {
        let inner = self.lock();
        Ok(ClusterStats {
            active: inner.active(),
            started: inner.started,
            rejected_max_concurrent: inner.rejected_max_concurrent,
            rejected_tenant_limit: inner.rejected_tenant_limit,
        })
    }

    async fn snapshot(
        &self,
        with_tenants: bool,
    ) -> Result<(ClusterStats, TenantsUsage), StoreError> {
        let stats = self.stats().await?;
        if !with_tenants {
            return Ok((stats, TenantsUsage::new()));
        }
        let inner = self.lock();
        let usage = tenants_usage(
            inner.slot_tenant.tenants(),
            &BTreeMap::new(),
            self.config.default_tenant_limit,
        );
        Ok((stats, usage))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn reregister_wanted(&self) {
        // In-process state cannot be lost while the process lives.
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lapsed lease, as a dead replica's slot becomes.
    fn lapse(store: &MemoryStore, call_sid: &CallSid) {
        store.lock().slots.remove(call_sid.as_str());
    }
    use crate::state::CallStatus;

    fn sid(n: u32) -> CallSid {
        CallSid::parse(&format!("CA{n:032x}")).unwrap()
    }

    fn active_state(call_sid: &CallSid) -> CallState {
        let mut state = CallState::reserved(call_sid.as_str(), "r1");
        state.status = CallStatus::Active;
        state
    }

    async fn start(
        store: &MemoryStore,
        call_sid: &CallSid,
        token: &str,
        resumed: Option<u32>,
    ) -> StreamAdmission {
        let mut fresh = active_state(call_sid);
        fresh.resumes = resumed.unwrap_or(0);
        store
            .start_stream(
                call_sid,
                token,
                AdmitPolicy::MayTakeSlot,
                Duration::from_secs(30),
                &fresh,
                resumed.into(),
            )
            .await
            .unwrap()
    }

    /// docs/reference.md#after-stream in the in-process store, as the Redis scripts do it: a grant
    /// is counted against the limit, taken once by the stream that carries it (lock replaced, slot
    /// back above the limit), and no other stream gets the call.
    #[tokio::test]
    async fn a_grant_takes_the_call_over_once_even_above_the_limit() {
        let store = MemoryStore::new(StoreConfig {
            limit: 1,
            ..StoreConfig::default()
        });
        let call = sid(1);
        assert!(matches!(
            start(&store, &call, "old", None).await,
            StreamAdmission::Started { .. }
        ));
        // Its replica died: the lock stays, the state says active. Another call fills the limit.
        lapse(&store, &call);
        let other = sid(2);
        assert!(matches!(
            start(&store, &other, "t2", None).await,
            StreamAdmission::Started { .. }
        ));
        assert_eq!(
            store.grant_resume(&call, 1, None).await.unwrap(),
            ResumeGrant::Granted { resumed: 1 }
        );
        // Without the grant, or with a wrong one: refused, nothing changes.
        for resumed in [None, Some(2)] {
            assert!(matches!(
                start(&store, &call, "forged", resumed).await,
                StreamAdmission::LockedBy(_)
            ));
        }
        // The old stream's last write keeps the grant.
        let mut last = active_state(&call);
        last.end(EndReason::Disconnected);
        assert!(matches!(
            store.end_stream(&call, "old", &last).await.unwrap(),
            StreamEnd::Ended { .. }
        ));
        match start(&store, &call, "new", Some(1)).await {
            StreamAdmission::Started {
                took_over,
                new_slot,
                active,
                state,
                ..
            } => {
                assert!(took_over && !new_slot);
                assert_eq!(active, 2, "above the limit of 1");
                assert_eq!((state.resumes, state.resume_grant), (1, None));
            }
            other => panic!("{other:?}"),
        }
        // Spent: a replay is refused; the limit is reached: the next loss gets no grant.
        assert!(matches!(
            start(&store, &call, "replay", Some(1)).await,
            StreamAdmission::LockedBy(_)
        ));
        // A drain's ending is a planned hand-over: continued at the limit, on no budget; asked
        // again (that grant's stream never came) it is a failure, and the budget is spent.
        let mut drained = active_state(&call);
        drained.resumes = 1;
        drained.end(EndReason::DrainTimeout);
        store.end_stream(&call, "new", &drained).await.unwrap();
        assert_eq!(
            store.grant_resume(&call, 1, None).await.unwrap(),
            ResumeGrant::Granted { resumed: 2 }
        );
        assert_eq!(
            store.grant_resume(&call, 1, None).await.unwrap(),
            ResumeGrant::LimitReached
        );
        match start(&store, &call, "handed-over", Some(2)).await {
            StreamAdmission::Started { state, .. } => {
                assert_eq!((state.resumes, state.handovers), (2, 1));
            }
            other => panic!("{other:?}"),
        }
        let mut lost = active_state(&call);
        (lost.resumes, lost.handovers) = (2, 1);
        lost.end(EndReason::Disconnected);
        store.end_stream(&call, "handed-over", &lost).await.unwrap();
        assert_eq!(
            store.grant_resume(&call, 1, None).await.unwrap(),
            ResumeGrant::LimitReached,
            "one failure continued already: the budget of 1 is spent"
        );
        // A call that ended for good, or that was never seen, is not continued.
        let mut stopped = active_state(&other);
        stopped.end(EndReason::Stop);
        store.end_stream(&other, "t2", &stopped).await.unwrap();
        assert!(matches!(
            store.grant_resume(&other, 5, None).await.unwrap(),
            ResumeGrant::NotContinuable(Some(_))
        ));
        assert_eq!(
            store.grant_resume(&sid(3), 5, None).await.unwrap(),
            ResumeGrant::NotContinuable(None)
        );
    }
}
