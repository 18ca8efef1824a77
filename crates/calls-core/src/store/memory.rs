//! The in-process backend: one replica, no Redis, the same rules as the Redis scripts.
//! Used by `cargo run` without `REDIS_URL`; state dies with the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

mod outbound;

use super::{
    Admission, AdmitPolicy, Backend, CallStore, ClusterStats, LapsedReservation, Refusal,
    RenewBatch, RenewReport, ResumeGrant, StoreConfig, StoreError, StreamAdmission, StreamEnd,
    TenantsUsage, next_grant, tenants_usage,
};
use crate::call_sid::CallSid;
use crate::state::{CallState, CallStatus, EndReason};

#[derive(Default)]
struct Inner {
    /// call SID -> lease deadline.
    slots: HashMap<String, Instant>,
    started: u64,
    rejected_max_concurrent: u64,
    rejected_tenant_limit: u64,
    /// call SID -> tenant, for every slot of a call with a tenant (as `calls:slot_tenant`).
    slot_tenant: HashMap<String, String>,
    /// call SID -> (owner token, expiry).
    locks: HashMap<String, (String, Instant)>,
    /// call SID -> (state, expiry).
    states: HashMap<String, (CallState, Instant)>,
    /// Reservations whose stream never came, reclaimed since the last renewal reported them.
    lapsed: Vec<LapsedReservation>,
    /// Outbound calls (docs/reference.md#outbound).
    outbound: outbound::Outbound,
}

impl Inner {
    /// Drops lapsed slots, ending their states.
    fn reclaim(&mut self, now: Instant) -> Vec<String> {
        let mut expired: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(sid, _)| sid.clone())
            .collect();
        expired.sort();
        for sid in &expired {
            self.slots.remove(sid);
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
        self.slot_tenant.values().filter(|t| *t == tenant).count() as u64
    }

    /// The admission rule of `admit_slot` in the Lua prelude, after a reclaim: the global cap
    /// first, then the tenant's (its own, else `default_tenant_limit`).
    fn admit(
        &mut self,
        call_sid: &str,
        policy: AdmitPolicy,
        deadline: Instant,
        config: &StoreConfig,
        tenant: Option<&str>,
    ) -> Admission {
        if let Some(held) = self.slots.get_mut(call_sid) {
            // The new lease replaces the old one (a stream activating its reservation).
            *held = deadline;
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
        self.slots.insert(call_sid.to_owned(), deadline);
        self.started += 1;
        Admission::Admitted {
            new: true,
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
        // every mutation is a single insert or remove.
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
            && !inner.slots.contains_key(call_sid.as_str())
            && inner.has_ended(call_sid.as_str(), now)
        {
            return Ok(Admission::Refused(Refusal::Ended));
        }
        let tenant = initial_state.and_then(|state| state.tenant.as_deref());
        let admission = inner.admit(call_sid.as_str(), policy, now + lease, &self.config, tenant);
        if let (Admission::Admitted { new: true, .. }, Some(state)) = (&admission, initial_state) {
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
        resumed: Option<u32>,
    ) -> Result<StreamAdmission, StoreError> {
        let now = Instant::now();
        let sid = call_sid.as_str();
        let mut inner = self.lock();
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
            inner.slots.insert(sid.to_owned(), now + lease);
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
            state.direction = stored.direction;
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
    ) -> Result<ResumeGrant, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let stored = inner
            .states
            .get(call_sid.as_str())
            .filter(|(_, until)| *until > now)
            .map(|(state, _)| state);
        match next_grant(stored, limit) {
            Ok((granted, resumed)) => {
                let until = now + self.config.state_ttl;
                inner.states.insert(call_sid.to_string(), (granted, until));
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
            match inner.slots.get_mut(sid) {
                Some(held) => *held = (*held).max(deadline),
                None => {
                    inner.slots.insert(sid.to_owned(), deadline);
                    report.readded.push(sid.to_owned());
                }
            }
            // A slot keeps the tenant it was admitted under; a re-added one takes the call's.
            if let Some(tenant) = call.tenant()
                && !inner.slot_tenant.contains_key(sid)
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
            inner.slot_tenant.values().map(String::as_str),
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
                resumed,
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
            store.grant_resume(&call, 1).await.unwrap(),
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
            store.grant_resume(&call, 1).await.unwrap(),
            ResumeGrant::Granted { resumed: 2 }
        );
        assert_eq!(
            store.grant_resume(&call, 1).await.unwrap(),
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
            store.grant_resume(&call, 1).await.unwrap(),
            ResumeGrant::LimitReached,
            "one failure continued already: the budget of 1 is spent"
        );
        // A call that ended for good, or that was never seen, is not continued.
        let mut stopped = active_state(&other);
        stopped.end(EndReason::Stop);
        store.end_stream(&other, "t2", &stopped).await.unwrap();
        assert!(matches!(
            store.grant_resume(&other, 5).await.unwrap(),
            ResumeGrant::NotContinuable(Some(_))
        ));
        assert_eq!(
            store.grant_resume(&sid(3), 5).await.unwrap(),
            ResumeGrant::NotContinuable(None)
        );
    }
}
