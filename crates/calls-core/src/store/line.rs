//! The in-process store's waiting line (docs/reference.md#waiting-room): who waits, since when,
//! for which tenant, and which tenant was served last; `wait.lua` keeps the same in Redis.

use std::collections::{BTreeMap, HashMap};

use tokio::time::Instant;

use crate::wait::{self, WaitReason, WaitSettings, Waiter};

/// One caller in line.
#[derive(Debug, Clone)]
pub(super) struct InLine {
    pub seq: u64,
    pub joined: Instant,
    pub last_visit: Instant,
    /// `""` for a call without a tenant.
    pub tenant: String,
    pub reason: WaitReason,
    /// The position the caller last heard.
    pub position: u64,
}

#[derive(Debug, Default)]
pub(super) struct Line {
    /// Joining order → call SID.
    order: BTreeMap<u64, String>,
    callers: HashMap<String, InLine>,
    /// Tenant → when it was last served from the line (a sequence: larger is more recent).
    served: HashMap<String, u64>,
    next_seq: u64,
    next_served: u64,
}

impl Line {
    pub(super) fn len(&self) -> u64 {
        self.callers.len() as u64
    }

    pub(super) fn get_mut(&mut self, call_sid: &str) -> Option<&mut InLine> {
        self.callers.get_mut(call_sid)
    }

    pub(super) fn join(&mut self, call_sid: &str, tenant: &str, reason: WaitReason, now: Instant) {
        self.next_seq += 1;
        self.order.insert(self.next_seq, call_sid.to_owned());
        self.callers.insert(
            call_sid.to_owned(),
            InLine {
                seq: self.next_seq,
                joined: now,
                last_visit: now,
                tenant: tenant.to_owned(),
                reason,
                position: 0,
            },
        );
    }

    pub(super) fn remove(&mut self, call_sid: &str) -> Option<InLine> {
        let caller = self.callers.remove(call_sid)?;
        self.order.remove(&caller.seq);
        Some(caller)
    }

    /// Takes out every caller who has not visited for two polls.
    pub(super) fn prune(&mut self, now: Instant, settings: &WaitSettings) -> Vec<(String, InLine)> {
        let gone: Vec<String> = self
            .callers
            .iter()
            .filter(|(_, caller)| caller.last_visit + settings.gone_after() <= now)
            .map(|(sid, _)| sid.clone())
            .collect();
        let mut removed: Vec<(String, InLine)> = gone
            .into_iter()
            .filter_map(|sid| self.remove(&sid).map(|caller| (sid, caller)))
            .collect();
        removed.sort_by_key(|(_, caller)| caller.seq);
        removed
    }

    pub(super) fn served(&mut self, tenant: &str) {
        self.next_served += 1;
        self.served.insert(tenant.to_owned(), self.next_served);
    }

    fn waiters(&self, now: Instant, settings: &WaitSettings) -> Vec<Waiter<'_>> {
        self.order
            .values()
            .filter_map(|sid| self.callers.get_key_value(sid))
            .map(|(sid, caller)| Waiter {
                call_sid: sid,
                tenant: &caller.tenant,
                present: caller.last_visit + settings.turn_kept() > now,
            })
            .collect()
    }

    /// The callers whose turn it is, given `free` global slots and each tenant's `room`.
    pub(super) fn turns(
        &self,
        now: Instant,
        settings: &WaitSettings,
        free: u64,
        room: &dyn Fn(&str) -> u64,
    ) -> Vec<(String, String)> {
        let waiters = self.waiters(now, settings);
        wait::turns(&waiters, free, room, &self.served)
            .into_iter()
            .map(|sid| (sid.to_owned(), self.callers[sid].tenant.clone()))
            .collect()
    }

    pub(super) fn position(&self, now: Instant, settings: &WaitSettings, call_sid: &str) -> u64 {
        wait::position(&self.waiters(now, settings), &self.served, call_sid)
    }

    /// The longest current wait.
    pub(super) fn longest(&self, now: Instant) -> std::time::Duration {
        self.callers
            .values()
            .map(|caller| now.saturating_duration_since(caller.joined))
            .max()
            .unwrap_or_default()
    }
}
