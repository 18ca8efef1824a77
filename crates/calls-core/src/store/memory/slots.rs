//! The in-process store's slots: each live call's lease deadline, by call SID and by deadline (as
//! the `calls:slots` ZSET keeps them in Redis), so a reclaim finds lapsed leases in O(log n + k).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::time::Instant;

/// Both indexes hold the same (SID, deadline) pairs on every path out of a method: each change
/// goes through `place`/`remove`. The SID is one shared allocation, so the second index costs a
/// pointer, not a second copy of the string.
#[derive(Default)]
pub(super) struct Slots {
    by_sid: HashMap<Arc<str>, Instant>,
    by_deadline: BTreeSet<(Instant, Arc<str>)>,
}

impl Slots {
    pub(super) fn len(&self) -> usize {
        self.by_sid.len()
    }

    pub(super) fn contains(&self, sid: &str) -> bool {
        self.by_sid.contains_key(sid)
    }

    /// The lease deadline of the call's slot, if it holds one.
    pub(super) fn deadline(&self, sid: &str) -> Option<Instant> {
        self.by_sid.get(sid).copied()
    }

    /// Gives the call's slot `deadline`, taking one if it holds none; returns whether it held one.
    pub(super) fn set(&mut self, sid: &str, deadline: Instant) -> bool {
        if self.renew(sid, |_| deadline) {
            return true;
        }
        self.place(Arc::from(sid), deadline);
        false
    }

    /// Moves a held slot's deadline to `to(current)`; a call without a slot is left without one
    /// (returns false).
    pub(super) fn renew(&mut self, sid: &str, to: impl FnOnce(Instant) -> Instant) -> bool {
        let Some((key, &old)) = self.by_sid.get_key_value(sid) else {
            return false;
        };
        let new = to(old);
        if new != old {
            let key = Arc::clone(key);
            self.by_deadline.remove(&(old, Arc::clone(&key)));
            self.place(key, new);
        }
        true
    }

    /// Frees the call's slot; returns the deadline it had, if it held one.
    pub(super) fn remove(&mut self, sid: &str) -> Option<Instant> {
        let (key, deadline) = self.by_sid.remove_entry(sid)?;
        self.by_deadline.remove(&(deadline, key));
        Some(deadline)
    }

    /// Frees every slot whose lease lapsed by `now` and returns their SIDs sorted by SID (the
    /// order the reclaim ended their states in before this index, and the one callers see).
    pub(super) fn expired(&mut self, now: Instant) -> Vec<String> {
        let mut expired = Vec::new();
        while self
            .by_deadline
            .first()
            .is_some_and(|(deadline, _)| *deadline <= now)
            && let Some((_, sid)) = self.by_deadline.pop_first()
        {
            self.by_sid.remove(&sid);
            expired.push(sid.to_string());
        }
        // SIDs are unique, so an unstable sort gives the same order as a stable one.
        expired.sort_unstable();
        expired
    }

    /// The one place a (SID, deadline) pair enters both indexes; the caller has taken any older
    /// deadline of the SID out of `by_deadline`, and `insert` replaces its `by_sid` value.
    fn place(&mut self, key: Arc<str>, deadline: Instant) {
        self.by_deadline.insert((deadline, Arc::clone(&key)));
        self.by_sid.insert(key, deadline);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Both indexes agree, pair for pair.
    fn assert_consistent(slots: &Slots) {
        assert_eq!(slots.by_sid.len(), slots.by_deadline.len());
        for (deadline, sid) in &slots.by_deadline {
            assert_eq!(slots.by_sid.get(sid), Some(deadline), "{sid}");
        }
    }

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn a_new_deadline_moves_the_entry() {
        let t = Instant::now();
        let mut slots = Slots::default();
        assert!(!slots.set("CA1", at(t, 10)));
        assert!(slots.set("CA1", at(t, 1)), "held: the deadline is replaced");
        assert_eq!((slots.len(), slots.deadline("CA1")), (1, Some(at(t, 1))));
        assert_consistent(&slots);
        assert!(slots.renew("CA1", |held| held.max(at(t, 20))));
        assert_consistent(&slots);
        assert_eq!(slots.expired(at(t, 19)), Vec::<String>::new());
        assert!(
            slots.contains("CA1"),
            "the old deadline is gone from the index"
        );
        assert_eq!(slots.expired(at(t, 20)), ["CA1"]);
        assert_consistent(&slots);
    }

    #[test]
    fn renew_takes_no_slot_for_a_call_without_one() {
        let t = Instant::now();
        let mut slots = Slots::default();
        assert!(!slots.renew("CA1", |_| at(t, 5)));
        assert!(!slots.contains("CA1"));
        assert_eq!(slots.len(), 0);
        assert_consistent(&slots);
        // An unchanged deadline leaves the entry as it was.
        slots.set("CA1", at(t, 5));
        assert!(slots.renew("CA1", |held| held));
        assert_eq!(slots.deadline("CA1"), Some(at(t, 5)));
        assert_consistent(&slots);
    }

    #[test]
    fn remove_drops_both_indexes() {
        let t = Instant::now();
        let mut slots = Slots::default();
        slots.set("CA1", at(t, 1));
        slots.set("CA2", at(t, 1));
        assert_eq!(slots.remove("CA1"), Some(at(t, 1)));
        assert_eq!(slots.remove("CA1"), None, "already free");
        assert!(!slots.contains("CA1"));
        assert_eq!(slots.deadline("CA1"), None);
        assert_consistent(&slots);
        assert_eq!(
            slots.expired(at(t, 100)),
            ["CA2"],
            "CA1 is not reclaimed again"
        );
        assert_eq!(slots.len(), 0);
        assert_consistent(&slots);
    }

    #[test]
    fn expired_returns_only_lapsed_slots_by_sid_and_keeps_the_rest() {
        let t = Instant::now();
        let mut slots = Slots::default();
        // Deadline order is the reverse of SID order: the answer must follow the SIDs.
        slots.set("CA3", at(t, 1));
        slots.set("CA2", at(t, 2));
        slots.set("CA1", at(t, 3));
        slots.set("CA0", at(t, 9));
        slots.set("CA4", at(t, 3));
        assert_eq!(slots.expired(at(t, 0)), Vec::<String>::new());
        // A deadline equal to now has lapsed (`<= now`, as ZRANGEBYSCORE's inclusive bound).
        assert_eq!(slots.expired(at(t, 3)), ["CA1", "CA2", "CA3", "CA4"]);
        assert_eq!(slots.len(), 1);
        assert!(slots.contains("CA0"));
        assert_consistent(&slots);
        assert_eq!(
            slots.expired(at(t, 3)),
            Vec::<String>::new(),
            "reclaimed once"
        );
    }
}
