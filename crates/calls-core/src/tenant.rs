//! Which tenant a call belongs to (SPEC §10): named by the webhook's `AccountSid` or `To`, or, for
//! a stream without a reservation, by `start.accountSid` or its `to_number` parameter; and what a
//! tenant's name may be, for the replicas and the command line alike.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::calls::{StreamStart, WebhookCall};

/// A name that cannot be a tenant (see [`check_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{name:?} is not a tenant name: {why}")]
pub struct InvalidTenant {
    pub name: String,
    pub why: &'static str,
}

/// Whether `name` can name a tenant: what Twilio sends as an `AccountSid` (`AC` and 32 hex
/// digits) or a `To` (`+15551234567`, `client:alice`, `sip:alice@example.com`) always can. Not
/// empty, no whitespace or control characters (a `To` with one is no number Twilio dialled), no
/// `{` or `}` (the name is spliced into `calls:tenant:{tenant}:slots`, where braces would read
/// as a placeholder, and as a hash tag on a Redis Cluster). The one rule the replicas and
/// `prosaas-calls tenants set` share.
///
/// # Errors
///
/// [`InvalidTenant`], saying which rule the name breaks.
pub fn check_name(name: &str) -> Result<(), InvalidTenant> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.chars().any(char::is_whitespace) {
        "it holds whitespace"
    } else if name.chars().any(char::is_control) {
        "it holds a control character"
    } else if name.contains(['{', '}']) {
        "it holds { or }"
    } else {
        return Ok(());
    };
    Err(InvalidTenant {
        name: name.to_owned(),
        why,
    })
}

/// `TENANT_KEY`: the field that names a call's tenant. Spelled as the variable's values
/// (`none`, `account_sid`, `to`) in a replica's heartbeat.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
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
    /// The variable's value: `none`, `account_sid` or `to`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::AccountSid => "account_sid",
            Self::To => "to",
        }
    }

    /// The tenant the voice webhook names; `Ok(None)` when tenants are off or the field is
    /// missing or blank.
    ///
    /// # Errors
    ///
    /// The field names no valid tenant ([`check_name`]).
    pub fn of_webhook(self, call: &WebhookCall) -> Result<Option<String>, InvalidTenant> {
        let field = match self {
            Self::None => return Ok(None),
            Self::AccountSid => &call.account_sid,
            Self::To => &call.to,
        };
        tenant_of(field.as_deref())
    }

    /// The tenant a stream's `start` names, for a stream without a reservation (a reserved call
    /// keeps the tenant its webhook took the slot for).
    ///
    /// # Errors
    ///
    /// The field names no valid tenant ([`check_name`]).
    pub fn of_stream(self, start: &StreamStart) -> Result<Option<String>, InvalidTenant> {
        match self {
            Self::None => Ok(None),
            Self::AccountSid => tenant_of(start.account_sid.as_deref()),
            Self::To => tenant_of(start.custom_parameters.get("to_number").map(String::as_str)),
        }
    }
}

/// A field's tenant: surrounding whitespace trimmed, blank as none, anything else checked.
fn tenant_of(value: Option<&str>) -> Result<Option<String>, InvalidTenant> {
    match value.map(str::trim).filter(|value| !value.is_empty()) {
        None => Ok(None),
        Some(name) => check_name(name).map(|()| Some(name.to_owned())),
    }
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
        assert_eq!(TenantKey::None.of_webhook(&call), Ok(None));
        assert_eq!(
            TenantKey::AccountSid.of_webhook(&call),
            Ok(Some("AC1".into()))
        );
        assert_eq!(TenantKey::To.of_webhook(&call), Ok(Some("+1666".into())));
        assert_eq!(TenantKey::To.of_webhook(&WebhookCall::default()), Ok(None));

        let mut start = StreamStart {
            account_sid: Some("AC2".into()),
            ..StreamStart::default()
        };
        assert_eq!(
            TenantKey::AccountSid.of_stream(&start),
            Ok(Some("AC2".into()))
        );
        assert_eq!(TenantKey::To.of_stream(&start), Ok(None));
        start
            .custom_parameters
            .insert("to_number".into(), " +1777 ".into());
        assert_eq!(TenantKey::To.of_stream(&start), Ok(Some("+1777".into())));
        start
            .custom_parameters
            .insert("to_number".into(), " ".into());
        assert_eq!(TenantKey::To.of_stream(&start), Ok(None));
        start
            .custom_parameters
            .insert("to_number".into(), "bad tenant{x}".into());
        assert!(TenantKey::To.of_stream(&start).is_err());
    }

    #[test]
    fn what_twilio_sends_names_a_tenant_and_nothing_odd_does() {
        for good in [
            "AC0123456789abcdef0123456789abcdef",
            "+15551234567",
            "client:alice",
            "sip:alice@example.com;transport=tls",
            "acme-42",
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("bad tenant", "whitespace"),
            ("tab\there", "whitespace"),
            ("bell\u{7}", "control"),
            ("acme{x}", "{ or }"),
            ("}", "{ or }"),
        ] {
            let err = check_name(bad).expect_err(bad);
            assert!(err.why.contains(why), "{bad:?}: {err}");
            assert!(err.to_string().contains("is not a tenant name"), "{err}");
        }
    }

    #[test]
    fn a_tenant_key_is_spelled_as_its_variable() {
        for key in [TenantKey::None, TenantKey::AccountSid, TenantKey::To] {
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(json, format!("\"{}\"", key.as_str()));
            assert_eq!(serde_json::from_str::<TenantKey>(&json).unwrap(), key);
        }
    }
}
