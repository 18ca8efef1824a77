//! Which tenant a call belongs to (docs/reference.md#tenants): named by the webhook's `AccountSid`
//! or `To`, or, for a stream without a reservation, by `start.accountSid` or its `to_number`
//! parameter.

use std::collections::BTreeMap;

/// `TENANT_KEY`: the field that names a call's tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TenantKey {
    /// No tenants: every call has only the global cap.
    #[default]
    None,
    /// The Twilio account (`AccountSid`; one subaccount per business).
    AccountSid,
    /// The number called (`To`).
    To,
}

impl TenantKey {
    /// Every value, in the order `TENANT_KEY` lists them.
    pub const ALL: [Self; 3] = [Self::None, Self::AccountSid, Self::To];

    /// The `TENANT_KEY` spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::AccountSid => "account_sid",
            Self::To => "to",
        }
    }

    /// The tenant the voice webhook names (its `AccountSid` and `To`); `None` when tenants are
    /// off or the field is missing.
    pub fn of_webhook(self, account_sid: Option<&str>, to: Option<&str>) -> Option<String> {
        match self {
            Self::None => None,
            Self::AccountSid => non_empty(account_sid),
            Self::To => non_empty(to),
        }
    }

    /// The tenant a stream's `start` names (its `accountSid` and `customParameters`), for a stream
    /// without a reservation (a reserved call keeps the tenant its webhook took the slot for).
    pub fn of_stream(
        self,
        account_sid: Option<&str>,
        custom_parameters: &BTreeMap<String, String>,
    ) -> Option<String> {
        match self {
            Self::None => None,
            Self::AccountSid => non_empty(account_sid),
            Self::To => non_empty(custom_parameters.get("to_number").map(String::as_str)),
        }
    }
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_reads_its_own_field() {
        let (account, to) = (Some("AC1"), Some("+1666"));
        assert_eq!(TenantKey::None.of_webhook(account, to), None);
        assert_eq!(
            TenantKey::AccountSid.of_webhook(account, to).as_deref(),
            Some("AC1")
        );
        assert_eq!(
            TenantKey::To.of_webhook(account, to).as_deref(),
            Some("+1666")
        );
        assert_eq!(TenantKey::To.of_webhook(None, None), None);

        let mut parameters = BTreeMap::new();
        assert_eq!(
            TenantKey::AccountSid
                .of_stream(Some("AC2"), &parameters)
                .as_deref(),
            Some("AC2")
        );
        assert_eq!(TenantKey::To.of_stream(Some("AC2"), &parameters), None);
        parameters.insert("to_number".into(), "+1777".into());
        assert_eq!(
            TenantKey::To.of_stream(None, &parameters).as_deref(),
            Some("+1777")
        );
        parameters.insert("to_number".into(), " ".into());
        assert_eq!(TenantKey::To.of_stream(None, &parameters), None);
    }
}
