//! The per-call session state stored as JSON under `calls:state:{call_sid}`
//! (docs/reference.md#admission). Field names are part of the contract; dashboards and runbooks
//! read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// docs/reference.md#admission: what a caller can grow is capped, so a state never grows with a
/// call's length: the last 256 DTMF digits are kept.
pub const MAX_DTMF_DIGITS: usize = 256;
/// The last 100 mark names are kept.
pub const MAX_MARKS: usize = 100;
/// A stored mark name is cut to this many bytes (at a character boundary): with 64 KiB messages,
/// 100 marks could otherwise still weigh 6 MiB, written every tick.
pub const MAX_MARK_NAME_BYTES: usize = 256;
/// Custom parameters (names plus values, in bytes) kept from a stream's `start`.
pub const MAX_CUSTOM_PARAMETERS_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// In the waiting room's line (docs/reference.md#waiting-room): no slot held.
    Waiting,
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
    /// The voice agent closed its socket (1000 or 1001): the call is over
    /// (docs/reference.md#bridge).
    AgentHangup,
    /// The voice agent could not be reached (refused, DNS, TLS, not 101, timeout).
    BridgeConnectFailed,
    /// The voice agent's socket was lost or errored mid-call.
    BridgeLost,
    /// The voice agent stopped reading (a write waited 5 s).
    BridgeStalled,
    /// Left the waiting room's line for the reject mode: waited `WAIT_MAX_SECS`, pressed the
    /// overflow digit (docs/reference.md#waiting-room).
    WaitOverflow,
    /// Left the waiting room's line unserved: hung up (a final status callback) or stopped
    /// coming back for two polls.
    WaitAbandoned,
    #[serde(other)]
    Other,
}

impl EndReason {
    /// Every reason a replica records, for metrics that must exist at zero from start-up.
    pub const ALL: [Self; 17] = [
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
        Self::WaitOverflow,
        Self::WaitAbandoned,
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
            Self::WaitOverflow => "wait_overflow",
            Self::WaitAbandoned => "wait_abandoned",
            Self::Other => "other",
        }
    }
}

/// What docs/reference.md#after-stream makes of a stream's ending, before the continuation limit is
/// applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The call is over (its caller or agent ended it, bad input, or nothing is known).
    Hangup,
    /// The voice agent failed: the caller hears the fallback.
    Fallback,
    /// The stream was lost while the call goes on: continue it on a new stream, if allowed.
    Continue,
}

impl CallState {
    /// docs/reference.md#after-stream: what the after-stream answer does for a call whose stored
    /// state is this one. A state still `reserved` or `active` means its replica died before
    /// recording an ending.
    pub fn disposition(&self) -> Disposition {
        if self.status != CallStatus::Ended {
            return Disposition::Continue;
        }
        match self.end_reason {
            Some(
                EndReason::LeaseExpired
                | EndReason::Disconnected
                | EndReason::DrainTimeout
                | EndReason::LockLost,
            ) => Disposition::Continue,
            Some(
                EndReason::BridgeConnectFailed | EndReason::BridgeLost | EndReason::BridgeStalled,
            ) => Disposition::Fallback,
            _ => Disposition::Hangup,
        }
    }
}

/// Twilio's `start.mediaFormat`, kept as Twilio's wire format reads it.
pub use twilio::messages::MediaFormat;

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
    /// The stream URL the webhook's TwiML gave, so a reservation whose stream never came can be
    /// reported with the URL Twilio could not open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_url: Option<String>,
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
    /// The tenant the call belongs to (docs/reference.md#tenants), `None` without `TENANT_KEY` or
    /// when the webhook or stream named none: such a call has only the global cap.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Continuations granted so far (docs/reference.md#after-stream), planned hand-overs included:
    /// at most `RESUME_LIMIT` more than `handovers`.
    #[serde(default)]
    pub resumes: u32,
    /// Of `resumes`, the continuations of a stream its replica's drain ended (`drain_timeout`): a
    /// planned hand-over, which does not use up the budget `RESUME_LIMIT` keeps for failures, so a
    /// rolling restart of any size cuts nobody however the balancer places the calls.
    #[serde(default)]
    pub handovers: u32,
    /// The continuation granted by the after-stream answer and not yet taken by its stream: the
    /// `resumed` parameter a new stream's `start` must carry to take the call over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_grant: Option<u32>,
    /// When the call joined the waiting room's line (RFC 3339), while it waits and after
    /// (docs/reference.md#waiting-room); absent for a call that never waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<String>,
    /// The call's TwiML carried a stream token (docs/reference.md#stream-token), so a `start` that
    /// claims the call must carry it. False for a call admitted before tokens were on, or by an
    /// older replica during a roll: its streams could not show one.
    #[serde(default)]
    pub stream_token: bool,
    /// `inbound`, or `outbound` for a call the cluster placed (docs/reference.md#outbound).
    #[serde(default)]
    pub direction: Direction,
}

/// Who placed the call: the caller (`inbound`), or the cluster through `POST /v1/calls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
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
            stream_url: None,
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
            tenant: None,
            resumes: 0,
            handovers: 0,
            resume_grant: None,
            waiting_since: None,
            stream_token: false,
            direction: Direction::Inbound,
        }
    }

    /// A state as a call joining the waiting room's line writes it.
    pub fn waiting(call_sid: &str, replica: &str) -> Self {
        let mut state = Self::reserved(call_sid, replica);
        state.status = CallStatus::Waiting;
        state.waiting_since = Some(state.created_at.clone());
        state
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

impl CallState {
    /// Trims what a caller grows during the call (DTMF digits, marks) to the caps above, keeping
    /// the most recent. Cheap when nothing is over: it runs after every mark and digit.
    pub fn cap_growth(&mut self) {
        if self.dtmf.len() > MAX_DTMF_DIGITS {
            let excess = self.dtmf.chars().count().saturating_sub(MAX_DTMF_DIGITS);
            let cut = self
                .dtmf
                .char_indices()
                .nth(excess)
                .map_or(self.dtmf.len(), |(at, _)| at);
            self.dtmf.drain(..cut);
        }
        if self.marks.len() > MAX_MARKS {
            let excess = self.marks.len() - MAX_MARKS;
            self.marks.drain(..excess);
        }
        for mark in &mut self.marks {
            truncate_at_char(mark, MAX_MARK_NAME_BYTES);
        }
    }
}

/// Keeps the custom parameters that fit in [`MAX_CUSTOM_PARAMETERS_BYTES`] (name plus value bytes):
/// in name order, each parameter that still fits is kept and one that does not is dropped, so a
/// single oversized value never costs the small ones after it. Returns what was dropped, by name.
pub fn cap_custom_parameters(
    parameters: BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut budget = MAX_CUSTOM_PARAMETERS_BYTES;
    let mut kept = BTreeMap::new();
    let mut dropped = Vec::new();
    for (name, value) in parameters {
        let size = name.len() + value.len();
        if size <= budget {
            budget -= size;
            kept.insert(name, value);
        } else {
            dropped.push(name);
        }
    }
    (kept, dropped)
}

fn truncate_at_char(text: &mut String, max_bytes: usize) {
    if text.len() > max_bytes {
        let mut cut = max_bytes;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.shrink_to_fit();
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
            "resumes",
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
    fn growth_keeps_the_most_recent_digits_and_marks() {
        let mut state = CallState::reserved("CA1", "r1");
        for n in 0..10_000 {
            state.dtmf.push(char::from(b'0' + (n % 10) as u8));
            state.marks.push(format!("mark-{n}"));
            state.cap_growth();
        }
        assert_eq!(state.dtmf.len(), MAX_DTMF_DIGITS);
        assert!(state.dtmf.ends_with("6789"));
        assert_eq!(state.marks.len(), MAX_MARKS);
        assert_eq!(state.marks[0], "mark-9900");
        assert_eq!(state.marks[99], "mark-9999");

        state.dtmf = "é".repeat(300);
        state.marks = vec!["ü".repeat(1000)];
        state.cap_growth();
        assert_eq!(state.dtmf.chars().count(), MAX_DTMF_DIGITS);
        assert!(state.marks[0].len() <= MAX_MARK_NAME_BYTES);
        assert!(state.marks[0].len() > MAX_MARK_NAME_BYTES - 4);
        assert!(state.marks[0].chars().all(|c| c == 'ü'));
    }

    #[test]
    fn custom_parameters_keep_what_fits_in_name_order() {
        let mut params = BTreeMap::new();
        params.insert("CallSid".to_owned(), "CA1".to_owned());
        params.insert("big".to_owned(), "x".repeat(5000));
        params.insert("filler".to_owned(), "y".repeat(4070));
        params.insert("to_number".to_owned(), "+15550100".to_owned());
        let (kept, dropped) = cap_custom_parameters(params);
        assert_eq!(dropped, ["big", "to_number"]);
        assert_eq!(
            kept.keys().map(String::as_str).collect::<Vec<_>>(),
            ["CallSid", "filler"]
        );
        let size: usize = kept.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(size <= MAX_CUSTOM_PARAMETERS_BYTES);
    }

    #[test]
    fn disposition_follows_spec_9() {
        let mut state = CallState::reserved("CA1", "r1");
        assert_eq!(state.disposition(), Disposition::Continue);
        state.status = CallStatus::Active;
        assert_eq!(state.disposition(), Disposition::Continue);
        let cases = [
            (EndReason::Stop, Disposition::Hangup),
            (EndReason::StatusCallback, Disposition::Hangup),
            (EndReason::AgentHangup, Disposition::Hangup),
            (EndReason::IdleTimeout, Disposition::Hangup),
            (EndReason::StartTimeout, Disposition::Hangup),
            (EndReason::SlowConsumer, Disposition::Hangup),
            (EndReason::MessageTooLarge, Disposition::Hangup),
            (EndReason::Error, Disposition::Hangup),
            (EndReason::Other, Disposition::Hangup),
            (EndReason::BridgeConnectFailed, Disposition::Fallback),
            (EndReason::BridgeLost, Disposition::Fallback),
            (EndReason::BridgeStalled, Disposition::Fallback),
            (EndReason::LeaseExpired, Disposition::Continue),
            (EndReason::Disconnected, Disposition::Continue),
            (EndReason::DrainTimeout, Disposition::Continue),
            (EndReason::LockLost, Disposition::Continue),
        ];
        for (reason, expected) in cases {
            let mut ended = state.clone();
            ended.end(reason);
            assert_eq!(ended.disposition(), expected, "{}", reason.as_str());
        }
    }

    #[test]
    fn reasons_are_snake_case_and_all_listed() {
        for reason in EndReason::ALL {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json, reason.as_str());
        }
        assert!(EndReason::ALL.contains(&EndReason::BridgeStalled));
    }

    #[test]
    fn unknown_end_reason_reads_as_other() {
        let mut v = serde_json::to_value(CallState::reserved("CA1", "r1")).unwrap();
        v["end_reason"] = "something_new".into();
        let state: CallState = serde_json::from_value(v).unwrap();
        assert_eq!(state.end_reason, Some(EndReason::Other));
    }
}
