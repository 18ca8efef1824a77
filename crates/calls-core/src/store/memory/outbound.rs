//! The in-process side of outbound calls: the same queue, records, pace and dial step as the
//! Redis scripts (`dial.lua`, `outbound_update.lua`), under the store's one lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Inner, MemoryStore};
use crate::call_sid::CallSid;
use crate::outbound::{
    DIAL_INTERRUPTED, IDEMPOTENCY_TTL, LIST_LIMIT, OPEN_RECORD_TTL, OutboundCall, OutboundError,
    OutboundId, OutboundStatus,
};
use crate::state::now_rfc3339;
use crate::store::StoreError;
use crate::store::{DialOutcome, DialPolicy, DialStep, Enqueued, OutboundStore, Transition};

/// Outbound calls in memory, as the `calls:outbound:*` keys hold them in Redis.
#[derive(Default)]
pub(super) struct Outbound {
    /// Outbound ids not yet placed, oldest first.
    queue: VecDeque<String>,
    /// id → (record, expiry), with the creation order for the listing.
    records: HashMap<String, (OutboundCall, Instant, u64)>,
    created: u64,
    /// Idempotency-Key → (id, expiry).
    idempotency: HashMap<String, (String, Instant)>,
    /// id → deadline of a placed call waiting for Twilio's word.
    inflight: BTreeMap<String, Instant>,
    /// No dial before this.
    pace: Option<Instant>,
}

impl Outbound {
    fn record(&mut self, id: &str, now: Instant) -> Option<&mut OutboundCall> {
        self.records
            .get_mut(id)
            .filter(|(_, until, _)| *until > now)
            .map(|(record, _, _)| record)
    }

    fn set_ttl(&mut self, id: &str, until: Instant) {
        if let Some(entry) = self.records.get_mut(id) {
            entry.1 = until;
        }
    }
}

impl Inner {
    /// Callers in the waiting room's line (docs/reference.md#waiting-room). A caller gone silent
    /// counts until the line's sweep (each visit, each renewal tick) takes them out.
    fn waiting_callers(&self, _now: Instant) -> u64 {
        self.line.len()
    }

    /// Frees the slot held under `member` (an outbound id or a call SID).
    fn free_member(&mut self, member: &str) {
        self.free(member);
    }

    /// `bind` of the outbound prelude: the slot moves from the id to the call SID Twilio named.
    fn bind(&mut self, id: &str, call_sid: &str, now: Instant) {
        let Some(record) = self.outbound.record(id, now) else {
            return;
        };
        match &record.call_sid {
            None => record.call_sid = Some(call_sid.to_owned()),
            Some(bound) if bound != call_sid => return,
            Some(_) => {}
        }
        if let Some(deadline) = self.slots.remove(id) {
            self.slots.set(call_sid, deadline);
            if let Some(tenant) = self.slot_tenant.remove(id) {
                self.slot_tenant.insert(call_sid.to_owned(), tenant);
            }
            self.started += 1;
        }
    }

    /// Ends the record with `status`, frees the id's slot, and keeps it `state_ttl` more.
    fn finish(&mut self, id: &str, status: OutboundStatus, now: Instant, state_ttl: Duration) {
        if let Some(record) = self.outbound.record(id, now) {
            record.status = status;
            record.ended_at = Some(now_rfc3339());
        }
        self.free_member(id);
        self.outbound.inflight.remove(id);
        self.outbound.set_ttl(id, now + state_ttl);
    }

    /// The sweep of `dial.lua`: placed calls past their deadline end `dial_interrupted`.
    fn sweep_interrupted(&mut self, now: Instant, state_ttl: Duration) -> Vec<OutboundCall> {
        let due: Vec<String> = self
            .outbound
            .inflight
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut interrupted = Vec::new();
        for id in due {
            self.outbound.inflight.remove(&id);
            let Some(record) = self.outbound.record(&id, now) else {
                continue;
            };
            if record.status.is_final() {
                continue;
            }
            record.error = Some(OutboundError {
                code: None,
                message:
                    "the replica placing the call stopped mid-request and Twilio reported nothing"
                        .into(),
                reason: DIAL_INTERRUPTED.into(),
            });
            let call_sid = record.call_sid.clone();
            self.finish(&id, OutboundStatus::Failed, now, state_ttl);
            if let Some(call_sid) = call_sid {
                self.free_member(&call_sid);
            }
            if let Some(record) = self.outbound.record(&id, now) {
                interrupted.push(record.clone());
            }
        }
        interrupted
    }

    fn transition(&mut self, id: &str, now: Instant, became: Option<OutboundStatus>) -> Transition {
        Transition {
            record: self.outbound.record(id, now).map(|r| r.clone()),
            became,
        }
    }
}

#[async_trait]
impl OutboundStore for MemoryStore {
    async fn enqueue(
        &self,
        record: &OutboundCall,
        idempotency_key: Option<&str>,
    ) -> Result<Enqueued, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let outbound = &mut inner.outbound;
        if let Some(key) = idempotency_key {
            let first = outbound
                .idempotency
                .get(key)
                .filter(|(_, until)| *until > now)
                .map(|(id, _)| id.clone());
            if let Some(first) = first
                && let Some(record) = outbound.record(&first, now)
            {
                return Ok(Enqueued {
                    record: record.clone(),
                    new: false,
                });
            }
            outbound
                .idempotency
                .insert(key.to_owned(), (record.id.clone(), now + IDEMPOTENCY_TTL));
        }
        outbound.created += 1;
        let order = outbound.created;
        outbound.records.insert(
            record.id.clone(),
            (record.clone(), now + OPEN_RECORD_TTL, order),
        );
        outbound.queue.push_back(record.id.clone());
        // The TTLs Redis would enforce.
        outbound.records.retain(|_, (_, until, _)| *until > now);
        outbound.idempotency.retain(|_, (_, until)| *until > now);
        Ok(Enqueued {
            record: record.clone(),
            new: true,
        })
    }

    async fn dial_next(&self, policy: &DialPolicy) -> Result<DialOutcome, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let interrupted = inner.sweep_interrupted(now, self.config.state_ttl);
        inner.reclaim(now);
        let outcome = |step| DialOutcome {
            step,
            interrupted: interrupted.clone(),
        };
        let head = loop {
            let Some(id) = inner.outbound.queue.front().cloned() else {
                return Ok(outcome(DialStep::Idle));
            };
            match inner.outbound.record(&id, now) {
                Some(record) if record.status == OutboundStatus::Queued => break record.clone(),
                _ => {
                    inner.outbound.queue.pop_front();
                }
            }
        };
        if let Some(next) = inner.outbound.pace
            && now < next
        {
            return Ok(outcome(DialStep::Paced(next - now)));
        }
        if inner.waiting_callers(now) > 0 {
            return Ok(outcome(DialStep::CallersWaiting));
        }
        if inner.active() >= policy.outbound_limit {
            return Ok(outcome(DialStep::Full));
        }
        if let Some(tenant) = &head.tenant
            && self
                .config
                .default_tenant_limit
                .is_some_and(|cap| inner.tenant_active(tenant) >= cap)
        {
            return Ok(outcome(DialStep::TenantFull));
        }
        let deadline = now + head.dial_deadline(policy.dial_margin);
        inner.slots.set(&head.id, deadline);
        if let Some(tenant) = &head.tenant {
            inner.slot_tenant.insert(head.id.clone(), tenant.clone());
        }
        inner.outbound.queue.pop_front();
        inner.outbound.pace = Some(now + policy.interval);
        inner.outbound.inflight.insert(head.id.clone(), deadline);
        let Some(record) = inner.outbound.record(&head.id, now) else {
            return Ok(outcome(DialStep::Idle));
        };
        record.status = OutboundStatus::Dialing;
        record.replica = Some(policy.replica.clone());
        record.dialed_at = Some(now_rfc3339());
        // In-process there is no Redis clock: the wall clock's ms since the epoch.
        record.dialed_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok());
        let record = record.clone();
        Ok(outcome(DialStep::Dial(Box::new(record))))
    }

    async fn placed(&self, id: &OutboundId, call_sid: &CallSid) -> Result<Transition, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.bind(id.as_str(), call_sid.as_str(), now);
        Ok(inner.transition(id.as_str(), now, None))
    }

    async fn requeue(&self, id: &OutboundId, backoff: Duration) -> Result<Transition, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let id = id.as_str();
        let requeued = match inner.outbound.record(id, now) {
            Some(record)
                if record.status == OutboundStatus::Dialing && record.call_sid.is_none() =>
            {
                record.status = OutboundStatus::Queued;
                record.replica = None;
                record.dialed_at = None;
                record.dialed_ms = None;
                true
            }
            _ => false,
        };
        if requeued {
            inner.free_member(id);
            inner.outbound.inflight.remove(id);
            inner.outbound.queue.push_front(id.to_owned());
            let until = now + backoff;
            if inner.outbound.pace.is_none_or(|next| next < until) {
                inner.outbound.pace = Some(until);
            }
        }
        Ok(inner.transition(id, now, requeued.then_some(OutboundStatus::Queued)))
    }

    async fn fail(&self, id: &OutboundId, error: &OutboundError) -> Result<Transition, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let id = id.as_str();
        let failed = match inner.outbound.record(id, now) {
            Some(record) if !record.status.is_final() => {
                record.error = Some(error.clone());
                true
            }
            _ => false,
        };
        if failed {
            inner.finish(id, OutboundStatus::Failed, now, self.config.state_ttl);
        }
        Ok(inner.transition(id, now, failed.then_some(OutboundStatus::Failed)))
    }

    async fn report(
        &self,
        id: &OutboundId,
        call_sid: Option<&CallSid>,
        status: OutboundStatus,
    ) -> Result<Transition, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let id = id.as_str();
        if let Some(call_sid) = call_sid {
            inner.bind(id, call_sid.as_str(), now);
        }
        let forward = inner
            .outbound
            .record(id, now)
            .is_some_and(|record| status.rank() > record.status.rank());
        if !forward {
            return Ok(inner.transition(id, now, None));
        }
        if status.is_final() {
            inner.finish(id, status, now, self.config.state_ttl);
        } else {
            if let Some(record) = inner.outbound.record(id, now) {
                record.status = status;
                if status == OutboundStatus::InProgress {
                    record.answered_at = Some(now_rfc3339());
                }
            }
            if status == OutboundStatus::InProgress {
                inner.outbound.inflight.remove(id);
            }
        }
        Ok(inner.transition(id, now, Some(status)))
    }

    async fn cancel_queued(&self, id: &OutboundId) -> Result<Transition, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let id = id.as_str();
        let canceled = match inner.outbound.record(id, now) {
            Some(record) if record.status == OutboundStatus::Queued => {
                record.status = OutboundStatus::Canceled;
                record.ended_at = Some(now_rfc3339());
                true
            }
            _ => false,
        };
        if canceled {
            inner.outbound.queue.retain(|queued| queued != id);
            let until = now + self.config.state_ttl;
            inner.outbound.set_ttl(id, until);
        }
        Ok(inner.transition(id, now, canceled.then_some(OutboundStatus::Canceled)))
    }

    async fn outbound_call(&self, id: &OutboundId) -> Result<Option<OutboundCall>, StoreError> {
        let now = Instant::now();
        Ok(self
            .lock()
            .outbound
            .record(id.as_str(), now)
            .map(|r| r.clone()))
    }

    async fn outbound_calls(
        &self,
        status: Option<OutboundStatus>,
    ) -> Result<Vec<OutboundCall>, StoreError> {
        let now = Instant::now();
        let inner = self.lock();
        let mut found: Vec<(u64, OutboundCall)> = inner
            .outbound
            .records
            .values()
            .filter(|(record, until, _)| *until > now && status.is_none_or(|s| s == record.status))
            .map(|(record, _, order)| (*order, record.clone()))
            .collect();
        found.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
        Ok(found
            .into_iter()
            .take(LIST_LIMIT)
            .map(|(_, record)| record)
            .collect())
    }

    async fn outbound_queued(&self) -> Result<u64, StoreError> {
        Ok(self.lock().outbound.queue.len() as u64)
    }
}
