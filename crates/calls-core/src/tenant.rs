//! Which tenant a call belongs to (SPEC §10): named by the webhook's `AccountSid` or `To`, or, for
//! a stream without a reservation, by `start.accountSid` or its `to_number` parameter.

use crate::calls::{StreamStart, WebhookCall};

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
    /// The tenant the voice webhook names; `None` when tenants are off or the field is missing.
    pub fn of_webhook(self, call: &WebhookCall) -> Option<String> {
        let field = match self {
            Self::None => return None,
            Self::AccountSid => &call.account_sid,
            Self::To => &call.to,
        };
        non_empty(field.as_deref())
    }

    /// The tenant a stream's `start` names, for a stream without a reservation (a reserved call
    /// keeps the tenant its webhook took the slot for).
    pub fn of_stream(self, start: &StreamStart) -> Option<String> {
        match self {
            Self::None => None,
            Self::AccountSid => non_empty(start.account_sid.as_deref()),
            Self::To => non_empty(start.custom_parameters.get("to_number").map(String::as_str)),
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
        let call = WebhookCall {
            account_sid: Some("AC1".into()),
            from: Some("+1555".into()),
            to: Some("+1666".into()),
            stream_url: None,
        };
        assert_eq!(TenantKey::None.of_webhook(&call), None);
        assert_eq!(
            TenantKey::AccountSid.of_webhook(&call).as_deref(),
            Some("AC1")
        );
        assert_eq!(TenantKey::To.of_webhook(&call).as_deref(), Some("+1666"));
        assert_eq!(TenantKey::To.of_webhook(&WebhookCall::default()), None);

        let mut start = StreamStart {
            account_sid: Some("AC2".into()),
            ..StreamStart::default()
        };
        assert_eq!(
            TenantKey::AccountSid.of_stream(&start).as_deref(),
            Some("AC2")
        );
        assert_eq!(TenantKey::To.of_stream(&start), None);
        start
            .custom_parameters
            .insert("to_number".into(), "+1777".into());
        assert_eq!(TenantKey::To.of_stream(&start).as_deref(), Some("+1777"));
        start
            .custom_parameters
            .insert("to_number".into(), " ".into());
        assert_eq!(TenantKey::To.of_stream(&start), None);
    }
}
