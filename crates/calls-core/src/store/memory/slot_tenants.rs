//! The in-process store's tenant of each slot (as `calls:slot_tenant` in Redis), with a live count
//! per tenant, so a tenant's cap is checked without walking every live call.

use std::collections::HashMap;

/// Every path in and out goes through `insert`/`remove`, so `counts` is always the number of
/// slots `by_sid` gives each tenant.
#[derive(Default)]
pub(super) struct SlotTenants {
    by_sid: HashMap<String, String>,
    counts: HashMap<String, u64>,
}

impl SlotTenants {
    /// Gives the call's slot `tenant`, replacing any it had.
    pub(super) fn insert(&mut self, sid: String, tenant: String) {
        // A tenant already counted is found by reference: no copy of its name per admission.
        match self.counts.get_mut(&tenant) {
            Some(count) => *count += 1,
            None => {
                self.counts.insert(tenant.clone(), 1);
            }
        }
        if let Some(old) = self.by_sid.insert(sid, tenant) {
            self.uncount(&old);
        }
    }

    /// Forgets the call's tenant; returns it, if it had one.
    pub(super) fn remove(&mut self, sid: &str) -> Option<String> {
        let tenant = self.by_sid.remove(sid)?;
        self.uncount(&tenant);
        Some(tenant)
    }

    pub(super) fn contains(&self, sid: &str) -> bool {
        self.by_sid.contains_key(sid)
    }

    /// Live slots of `tenant`.
    pub(super) fn active(&self, tenant: &str) -> u64 {
        self.counts.get(tenant).copied().unwrap_or(0)
    }

    /// The tenant of every slot that has one.
    pub(super) fn tenants(&self) -> impl Iterator<Item = &str> {
        self.by_sid.values().map(String::as_str)
    }

    /// A tenant with no slot left leaves the map, so tenants that come and go do not pile up.
    fn uncount(&mut self, tenant: &str) {
        if let Some(count) = self.counts.get_mut(tenant) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts are what a walk of every slot would give, and hold no tenant without a slot.
    fn assert_counts_agree(tenants: &SlotTenants) {
        let mut walked: HashMap<&str, u64> = HashMap::new();
        for tenant in tenants.tenants() {
            *walked.entry(tenant).or_default() += 1;
        }
        assert_eq!(walked.len(), tenants.counts.len());
        for (tenant, count) in walked {
            assert_eq!(tenants.active(tenant), count, "{tenant}");
        }
    }

    #[test]
    fn counts_follow_inserts_replacements_and_removals() {
        let mut tenants = SlotTenants::default();
        tenants.insert("CA1".into(), "acme".into());
        tenants.insert("CA2".into(), "acme".into());
        tenants.insert("CA3".into(), "globex".into());
        assert_eq!((tenants.active("acme"), tenants.active("globex")), (2, 1));
        assert_counts_agree(&tenants);

        tenants.insert("CA2".into(), "globex".into());
        assert_eq!((tenants.active("acme"), tenants.active("globex")), (1, 2));
        assert_counts_agree(&tenants);

        assert_eq!(tenants.remove("CA1").as_deref(), Some("acme"));
        assert_eq!(tenants.remove("CA1"), None, "removed once");
        assert_eq!(tenants.active("acme"), 0);
        assert!(!tenants.counts.contains_key("acme"), "no empty tenant kept");
        assert!(tenants.contains("CA3") && !tenants.contains("CA1"));
        assert_counts_agree(&tenants);
    }
}
