//! Which tenant a call belongs to (docs/reference.md#tenants): named by the webhook's `AccountSid`
//! or `To`, or, for a stream without a reservation, by `start.accountSid` or its `to_number`
//! parameter; and what a tenant's name may be, for the replicas and the command line alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A name that cannot be a tenant (see [`check_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{name:?} is not a tenant name: {why}")]
pub struct InvalidTenant {
    pub name: String,
    pub why: &'static str,
}

/// The longest tenant name, in bytes (docs/reference.md#tenants): an `AccountSid` is 34, a phone
/// number at most 16, and a `client:` or `sip:` address that names a business fits. The name is
/// part of a Redis key and of every slot's entry in `calls:slot_tenant`: a caller-chosen `To` (a
/// SIP address) must not make either as large as it likes.
pub const MAX_TENANT_NAME: usize = 64;

/// Whether `name` can name a tenant: what Twilio sends as an `AccountSid` (`AC` and 32 hex
/// digits) or a `To` (`+15551234567`, `client:alice`, `sip:alice@example.com`) always can. Not
/// empty, at most [`MAX_TENANT_NAME`] bytes, no whitespace or control characters (a `To` with
/// one is no number Twilio dialled), no
/// `{` or `}` (the name is spliced into `calls:tenant:{tenant}:slots`, where braces would read
/// as a placeholder, and as a hash tag on a Redis Cluster). The one rule the replicas and
/// `prosaas-calls tenants set` share.
///
/// # Errors
///
/// [`InvalidTenant`], saying which rule the name breaks (a long name cut to its first bytes).
pub fn check_name(name: &str) -> Result<(), InvalidTenant> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_TENANT_NAME {
        "it is longer than 64 bytes"
    } else if name.chars().any(char::is_whitespace) {
        "it holds whitespace"
    } else if name.chars().any(char::is_control) {
        "it holds a control character"
    } else if name.contains(['{', '}']) {
        "it holds { or }"
    } else {
        return Ok(());
    };
    // The error is logged and printed: a long name is cut, never copied whole.
    let mut end = name.len().min(MAX_TENANT_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < name.len() { "…" } else { "" };
    Err(InvalidTenant {
        name: format!("{}{cut}", &name[..end]),
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
    /// Every value, in the order `TENANT_KEY` lists them.
    pub const ALL: [Self; 3] = [Self::None, Self::AccountSid, Self::To];

    /// The variable's value: `none`, `account_sid` or `to`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::AccountSid => "account_sid",
            Self::To => "to",
        }
    }

    /// The tenant the voice webhook names (its `AccountSid` and `To`); `Ok(None)` when tenants
    /// are off or the field is missing or blank.
    ///
    /// # Errors
    ///
    /// The field names no valid tenant ([`check_name`]).
    pub fn of_webhook(
        self,
        account_sid: Option<&str>,
        to: Option<&str>,
    ) -> Result<Option<String>, InvalidTenant> {
        match self {
            Self::None => Ok(None),
            Self::AccountSid => tenant_of(account_sid),
            Self::To => tenant_of(to),
        }
    }

    /// The tenant a stream's `start` names (its `accountSid` and `customParameters`), for a stream
    /// without a reservation (a reserved call keeps the tenant its webhook took the slot for).
    ///
    /// # Errors
    ///
    /// The field names no valid tenant ([`check_name`]).
    pub fn of_stream(
        self,
        account_sid: Option<&str>,
        custom_parameters: &BTreeMap<String, String>,
    ) -> Result<Option<String>, InvalidTenant> {
        match self {
            Self::None => Ok(None),
            Self::AccountSid => tenant_of(account_sid),
            Self::To => tenant_of(custom_parameters.get("to_number").map(String::as_str)),
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
        let (account, to) = (Some("AC1"), Some("+1666"));
        assert_eq!(TenantKey::None.of_webhook(account, to), Ok(None));
        assert_eq!(
            TenantKey::AccountSid.of_webhook(account, to),
            Ok(Some("AC1".into()))
        );
        assert_eq!(
            TenantKey::To.of_webhook(account, to),
            Ok(Some("+1666".into()))
        );
        assert_eq!(TenantKey::To.of_webhook(None, None), Ok(None));

        let account = Some("AC2");
        let mut parameters = BTreeMap::new();
        assert_eq!(
            TenantKey::AccountSid.of_stream(account, &parameters),
            Ok(Some("AC2".into()))
        );
        assert_eq!(TenantKey::To.of_stream(account, &parameters), Ok(None));
        parameters.insert("to_number".into(), " +1777 ".into());
        assert_eq!(
            TenantKey::To.of_stream(account, &parameters),
            Ok(Some("+1777".into()))
        );
        parameters.insert("to_number".into(), " ".into());
        assert_eq!(TenantKey::To.of_stream(account, &parameters), Ok(None));
        parameters.insert("to_number".into(), "bad tenant{x}".into());
        assert!(TenantKey::To.of_stream(account, &parameters).is_err());
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
            (&"a".repeat(MAX_TENANT_NAME + 1), "longer than 64 bytes"),
            (
                &format!("sip:{}@example.com", "x".repeat(10_000)),
                "longer than 64",
            ),
        ] {
            let err = check_name(bad).expect_err(bad);
            assert!(err.why.contains(why), "{bad:?}: {err}");
            assert!(err.to_string().contains("is not a tenant name"), "{err}");
            assert!(err.name.len() <= MAX_TENANT_NAME + '…'.len_utf8(), "{err}");
        }
        assert_eq!(check_name(&"a".repeat(MAX_TENANT_NAME)), Ok(()));
        // A long `To` from the webhook names no tenant: the call has only the global cap.
        let long = format!("sip:{}@example.com", "x".repeat(100));
        assert!(TenantKey::To.of_webhook(None, Some(&long)).is_err());
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
