//! The per-call session state stored as JSON under `calls:state:{call_sid}` (SPEC §4).
//! Field names are part of the contract; dashboards and runbooks read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Reserved,
    Active,
    Ended,
}

/// Why a call ended. Unknown reasons written by a newer replica read back as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Stop,
    StatusCallback,
    Disconnected,
    IdleTimeout,
    StartTimeout,
    DrainTimeout,
    LeaseExpired,
    /// Another replica's stream took the call's lock: this stream must not go on.
    LockLost,
    SlowConsumer,
    MessageTooLarge,
    Error,
    /// The voice agent closed its socket (1000 or 1001): the call is over (SPEC §8).
    AgentHangup,
    /// The voice agent could not be reached (refused, DNS, TLS, not 101, timeout).
    BridgeConnectFailed,
    /// The voice agent's socket was lost or errored mid-call.
    BridgeLost,
    /// The voice agent stopped reading (a write waited 5 s).
    BridgeStalled,
    #[serde(other)]
    Other,
}

impl EndReason {
    /// Every reason a replica records, for metrics that must exist at zero from start-up.
    pub const ALL: [Self; 15] = [
        Self::Stop,
        Self::StatusCallback,
        Self::Disconnected,
        Self::IdleTimeout,
        Self::StartTimeout,
        Self::DrainTimeout,
        Self::LeaseExpired,
        Self::LockLost,
        Self::SlowConsumer,
        Self::MessageTooLarge,
        Self::Error,
        Self::AgentHangup,
        Self::BridgeConnectFailed,
        Self::BridgeLost,
        Self::BridgeStalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::StatusCallback => "status_callback",
            Self::Disconnected => "disconnected",
            Self::IdleTimeout => "idle_timeout",
            Self::StartTimeout => "start_timeout",
            Self::DrainTimeout => "drain_timeout",
            Self::LeaseExpired => "lease_expired",
            Self::LockLost => "lock_lost",
            Self::SlowConsumer => "slow_consumer",
            Self::MessageTooLarge => "message_too_large",
            Self::Error => "error",
            Self::AgentHangup => "agent_hangup",
            Self::BridgeConnectFailed => "bridge_connect_failed",
            Self::BridgeLost => "bridge_lost",
            Self::BridgeStalled => "bridge_stalled",
            Self::Other => "other",
        }
    }
}

/// Twilio's `start.mediaFormat`, kept in Twilio's own field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallState {
    pub call_sid: String,
    #[serde(default)]
    pub stream_sid: Option<String>,
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    pub status: CallStatus,
    pub replica: String,
    pub created_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub ended_at: Option<String>,
    #[serde(default)]
    pub end_reason: Option<EndReason>,
    #[serde(default)]
    pub media_format: Option<MediaFormat>,
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub frames_in: u64,
    #[serde(default)]
    pub frames_out: u64,
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub dtmf: String,
    #[serde(default)]
    pub marks: Vec<String>,
}

impl CallState {
    /// A fresh state as the voice webhook writes it, before any stream exists.
    pub fn reserved(call_sid: &str, replica: &str) -> Self {
        Self {
            call_sid: call_sid.to_owned(),
            stream_sid: None,
            account_sid: None,
            from: None,
            to: None,
            status: CallStatus::Reserved,
            replica: replica.to_owned(),
            created_at: now_rfc3339(),
            started_at: None,
            ended_at: None,
            end_reason: None,
            media_format: None,
            custom_parameters: BTreeMap::new(),
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            dtmf: String::new(),
            marks: Vec::new(),
        }
    }

    /// Marks the call ended unless it already is; the first recorded reason wins.
    /// Returns whether anything changed.
    pub fn end(&mut self, reason: EndReason) -> bool {
        if self.status == CallStatus::Ended {
            return false;
        }
        self.status = CallStatus::Ended;
        self.ended_at = Some(now_rfc3339());
        self.end_reason = Some(reason);
        true
    }
}

/// Wall-clock time as RFC 3339, for the human-facing timestamps in the state JSON.
/// Lease arithmetic never uses it: leases run on Redis `TIME`.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_contract_field_names() {
        let mut state = CallState::reserved("CA1", "r1");
        state.media_format = Some(MediaFormat {
            encoding: "audio/x-mulaw".into(),
            sample_rate: 8000,
            channels: 1,
        });
        let v: serde_json::Value = serde_json::to_value(&state).unwrap();
        for field in [
            "call_sid",
            "stream_sid",
            "account_sid",
            "from",
            "to",
            "status",
            "replica",
            "created_at",
            "started_at",
            "ended_at",
            "end_reason",
            "media_format",
            "custom_parameters",
            "frames_in",
            "frames_out",
            "bytes_in",
            "dtmf",
            "marks",
        ] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
        assert_eq!(v["status"], "reserved");
        assert_eq!(v["media_format"]["sampleRate"], 8000);
        assert!(v["marks"].is_array());
    }

    #[test]
    fn end_keeps_the_first_reason() {
        let mut state = CallState::reserved("CA1", "r1");
        assert!(state.end(EndReason::Stop));
        assert!(!state.end(EndReason::LeaseExpired));
        assert_eq!(state.end_reason, Some(EndReason::Stop));
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains("\"end_reason\":\"stop\""));
    }

    #[test]
    fn unknown_end_reason_reads_as_other() {
        let mut v = serde_json::to_value(CallState::reserved("CA1", "r1")).unwrap();
        v["end_reason"] = "something_new".into();
        let state: CallState = serde_json::from_value(v).unwrap();
        assert_eq!(state.end_reason, Some(EndReason::Other));
    }
}
