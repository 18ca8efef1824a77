//! A call's status as Twilio writes it in the Call resource and in status callbacks (`queued` to
//! `canceled`), and which statuses are final: one spelling for the REST client and the double.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
    /// A status this code does not know (Twilio may add some).
    #[serde(other)]
    Unknown,
}

impl CallStatus {
    pub const ALL: [Self; 9] = [
        Self::Queued,
        Self::Initiated,
        Self::Ringing,
        Self::InProgress,
        Self::Completed,
        Self::Busy,
        Self::NoAnswer,
        Self::Failed,
        Self::Canceled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Unknown => "unknown",
        }
    }

    /// `CallStatus` as a form or JSON field spells it; `Unknown` for anything else.
    pub fn parse(text: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .unwrap_or(Self::Unknown)
    }

    /// The call is over: `completed`, `busy`, `no-answer`, `failed` or `canceled`.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Busy | Self::NoAnswer | Self::Failed | Self::Canceled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_as_twilio_spells_it_both_ways() {
        for status in CallStatus::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(serde_json::from_str::<CallStatus>(&json).unwrap(), status);
            assert_eq!(CallStatus::parse(status.as_str()), status);
        }
        assert_eq!(
            serde_json::from_str::<CallStatus>("\"paused\"").unwrap(),
            CallStatus::Unknown
        );
        assert_eq!(CallStatus::parse("in_progress"), CallStatus::Unknown);
        let finals: Vec<&str> = CallStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .map(CallStatus::as_str)
            .collect();
        assert_eq!(
            finals,
            ["completed", "busy", "no-answer", "failed", "canceled"]
        );
    }
}
