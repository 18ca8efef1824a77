//! Outbound calls (docs/reference.md#outbound): the record of a call the cluster places, the
//! request that queues one, its life's statuses, and what the stores do with them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::state::now_rfc3339;

pub use crate::outbound_id::{BadOutboundId, ID_PREFIX, OutboundId};
/// The same `Idempotency-Key` within this long answers the first request's call.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// A record not yet ended lives this long (a call still queued after a day is dropped, as Twilio
/// drops a call queued over its calls per second for 24 h); an ended one `CALL_STATE_TTL_SECS`.
pub const OPEN_RECORD_TTL: Duration = Duration::from_secs(24 * 3600);
/// A placed call that reports nothing within its ring timeout plus this ends `dial_interrupted`;
/// its slot lives as long. Covers the REST request's 10 s and Twilio's own dial delay.
pub const DIAL_MARGIN: Duration = Duration::from_secs(30);
/// `timeout_secs` when the request names none.
pub const DEFAULT_TIMEOUT_SECS: u32 = 30;
/// Twilio takes at most 600 s of ringing.
pub const MAX_TIMEOUT_SECS: u32 = 600;
/// `parameters` reach the stream as `<Parameter>`s: bounded like a call's custom parameters.
pub const MAX_PARAMETERS_BYTES: usize = 4096;
/// Stream parameter names the call's own TwiML sets (docs/reference.md#media-stream): a request's
/// `parameters` may not use them.
pub const RESERVED_PARAMETERS: [&str; 5] =
    ["CallSid", "from_number", "to_number", "resumed", "token"];
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// At most this many records in one list answer (the newest first).
pub const LIST_LIMIT: usize = 1000;
/// The `error.reason` of a call whose replica died while placing it and of which Twilio said
/// nothing within its ring timeout plus [`DIAL_MARGIN`].
pub const DIAL_INTERRUPTED: &str = "dial_interrupted";

/// Where an outbound call is in its life (`status` of `GET /v1/calls/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboundStatus {
    Queued,
    Dialing,
    Ringing,
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl OutboundStatus {
    pub const ALL: [Self; 9] = [
        Self::Queued,
        Self::Dialing,
        Self::Ringing,
        Self::InProgress,
        Self::Completed,
        Self::Busy,
        Self::NoAnswer,
        Self::Failed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Dialing => "dialing",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// A Twilio `CallStatus` as the record says it (`queued`/`initiated` at Twilio: still
    /// `dialing` here).
    pub fn from_twilio(call_status: &str) -> Option<Self> {
        match call_status {
            "queued" | "initiated" => Some(Self::Dialing),
            "ringing" => Some(Self::Ringing),
            "in-progress" | "answered" => Some(Self::InProgress),
            other => Self::parse(other).filter(|s| s.is_final()),
        }
    }

    pub fn is_final(self) -> bool {
        self.rank() == 4
    }

    /// Statuses only move forward: a callback that arrives late never takes a call back.
    pub fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Dialing => 1,
            Self::Ringing => 2,
            Self::InProgress => 3,
            _ => 4,
        }
    }
}

impl fmt::Display for OutboundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call failed: Twilio's code and message when Twilio refused it; `reason` says which kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundError {
    pub code: Option<u32>,
    pub message: String,
    /// `twilio_refused`, `twilio_unanswered` (no answer within the request's timeout) or
    /// [`DIAL_INTERRUPTED`].
    pub reason: String,
}

/// One outbound call's record (`calls:outbound:{id}`), as `GET /v1/calls/{id}` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundCall {
    pub id: String,
    pub status: OutboundStatus,
    /// Always `outbound`, as the call's state says.
    #[serde(default = "outbound")]
    pub direction: String,
    #[serde(default)]
    pub call_sid: Option<String>,
    pub to: String,
    pub from: String,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    pub timeout_secs: u32,
    pub created_at: String,
    #[serde(default)]
    pub dialed_at: Option<String>,
    /// The dial step's time in ms of Redis `TIME`: the clock the cluster-wide pace is kept on.
    #[serde(default)]
    pub dialed_ms: Option<u64>,
    #[serde(default)]
    pub answered_at: Option<String>,
    #[serde(default)]
    pub ended_at: Option<String>,
    #[serde(default)]
    pub error: Option<OutboundError>,
    /// The replica that took the call from the queue and placed it (or is placing it).
    #[serde(default)]
    pub replica: Option<String>,
}

fn outbound() -> String {
    "outbound".to_owned()
}

impl OutboundCall {
    /// A queued record for `request`.
    pub fn queued(id: &OutboundId, request: NewOutbound) -> Self {
        Self {
            id: id.to_string(),
            status: OutboundStatus::Queued,
            direction: outbound(),
            call_sid: None,
            to: request.to,
            from: request.from,
            tenant: request.tenant,
            parameters: request.parameters,
            timeout_secs: request.timeout_secs,
            created_at: now_rfc3339(),
            dialed_at: None,
            dialed_ms: None,
            answered_at: None,
            ended_at: None,
            error: None,
            replica: None,
        }
    }

    /// How long the call waited from its request until now (wall clocks; for the dial histogram).
    pub fn queued_for(&self) -> Option<Duration> {
        use time::format_description::well_known::Rfc3339;
        let created = time::OffsetDateTime::parse(&self.created_at, &Rfc3339).ok()?;
        let waited = time::OffsetDateTime::now_utc() - created;
        waited.try_into().ok()
    }

    /// How long the call's slot is held from the moment it is taken: the ring timeout and
    /// `margin`; no report within it ends the call `dial_interrupted`.
    pub fn dial_deadline(&self, margin: Duration) -> Duration {
        Duration::from_secs(u64::from(self.timeout_secs)) + margin
    }
}

/// `POST /v1/calls`' body, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbound {
    pub to: String,
    pub from: String,
    pub tenant: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub timeout_secs: u32,
}

/// The request field that is wrong, and why (a 400 names it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn field_error(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Whether `number` is E.164: `+`, a non-zero digit, at most 15 digits in all.
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

impl NewOutbound {
    /// Checks a request body: `to`, `from` (E.164), `tenant`, `parameters` (strings, at most
    /// [`MAX_PARAMETERS_BYTES`] in all), `timeout_secs` (1..=600); any other field is refused.
    pub fn from_json(body: &serde_json::Value) -> Result<Self, FieldError> {
        let object = body
            .as_object()
            .ok_or_else(|| field_error("body", "expected a JSON object"))?;
        for key in object.keys() {
            if !matches!(
                key.as_str(),
                "to" | "from" | "tenant" | "parameters" | "timeout_secs"
            ) {
                return Err(field_error(key, "unknown field"));
            }
        }
        let number = |name: &str| -> Result<String, FieldError> {
            match object.get(name) {
                None | Some(serde_json::Value::Null) => Err(field_error(name, "required")),
                Some(serde_json::Value::String(n)) if is_e164(n) => Ok(n.clone()),
                Some(_) => Err(field_error(
                    name,
                    "expected an E.164 number such as +14155550100",
                )),
            }
        };
        let to = number("to")?;
        let from = number("from")?;
        let tenant = match object.get("tenant") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(t)) => {
                crate::tenant::check_name(t).map_err(|e| field_error("tenant", e.to_string()))?;
                Some(t.clone())
            }
            Some(_) => return Err(field_error("tenant", "expected a string")),
        };
        let mut parameters = BTreeMap::new();
        match object.get("parameters") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(map)) => {
                let mut bytes = 0;
                for (name, value) in map {
                    let serde_json::Value::String(value) = value else {
                        return Err(field_error(
                            &format!("parameters.{name}"),
                            "expected a string",
                        ));
                    };
                    if name.is_empty() {
                        return Err(field_error("parameters", "a parameter name is empty"));
                    }
                    if RESERVED_PARAMETERS.contains(&name.as_str()) {
                        return Err(field_error(
                            &format!("parameters.{name}"),
                            "a name the stream's own parameters use",
                        ));
                    }
                    bytes += name.len() + value.len();
                    parameters.insert(name.clone(), value.clone());
                }
                if bytes > MAX_PARAMETERS_BYTES {
                    return Err(field_error(
                        "parameters",
                        format!("at most {MAX_PARAMETERS_BYTES} bytes of names and values"),
                    ));
                }
            }
            Some(_) => return Err(field_error("parameters", "expected an object of strings")),
        }
        let timeout_secs = match object.get("timeout_secs") {
            None | Some(serde_json::Value::Null) => DEFAULT_TIMEOUT_SECS,
            Some(value) => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_TIMEOUT_SECS).contains(n))
                .ok_or_else(|| {
                    field_error(
                        "timeout_secs",
                        format!("expected a whole number of seconds from 1 to {MAX_TIMEOUT_SECS}"),
                    )
                })?,
        };
        Ok(Self {
            to,
            from,
            tenant,
            parameters,
            timeout_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_checked_field_by_field() {
        let ok = NewOutbound::from_json(&serde_json::json!({
            "to": "+14155550100", "from": "+14155550101", "tenant": "acme",
            "parameters": {"lang": "en"}, "timeout_secs": 20
        }))
        .unwrap();
        assert_eq!((ok.timeout_secs, ok.tenant.as_deref()), (20, Some("acme")));
        let field = |body: serde_json::Value| NewOutbound::from_json(&body).unwrap_err().field;
        assert_eq!(field(serde_json::json!({"from": "+14155550101"})), "to");
        assert_eq!(
            field(serde_json::json!({"to": "0415", "from": "+14155550101"})),
            "to"
        );
        assert_eq!(field(serde_json::json!({"to": "+14155550100"})), "from");
        assert_eq!(
            field(
                serde_json::json!({"to": "+14155550100", "from": "+14155550101", "timeout_secs": 0})
            ),
            "timeout_secs"
        );
        assert_eq!(
            field(
                serde_json::json!({"to": "+14155550100", "from": "+14155550101", "parameters": {"a": 1}})
            ),
            "parameters.a"
        );
        assert_eq!(
            field(
                serde_json::json!({"to": "+14155550100", "from": "+14155550101", "colour": "red"})
            ),
            "colour"
        );
        assert_eq!(field(serde_json::json!([1])), "body");
    }

    #[test]
    fn ids_and_statuses() {
        let id = OutboundId::random();
        assert_eq!(OutboundId::parse(id.as_str()), Ok(id.clone()));
        assert_ne!(OutboundId::random(), id);
        assert!(OutboundId::parse("CA0123456789abcdef0123456789abcdef").is_err());
        assert_eq!(
            OutboundStatus::from_twilio("initiated"),
            Some(OutboundStatus::Dialing)
        );
        assert_eq!(
            OutboundStatus::from_twilio("no-answer"),
            Some(OutboundStatus::NoAnswer)
        );
        assert_eq!(OutboundStatus::from_twilio("queued-ish"), None);
        assert!(OutboundStatus::Canceled.is_final() && !OutboundStatus::InProgress.is_final());
        assert_eq!(
            serde_json::to_string(&OutboundStatus::NoAnswer).unwrap(),
            "\"no-answer\""
        );
    }
}
