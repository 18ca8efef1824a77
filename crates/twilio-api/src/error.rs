//! What can go wrong with a request to Twilio, typed: Twilio's refusal (its HTTP status, error
//! code and message), a rate limit, no answer in time, no connection, a broken one, an answer that
//! is not Twilio's. Each says whether Twilio may still have acted on the request.

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    /// HTTP 429 (Twilio's code 20429): not processed, safe to send again after backing off.
    #[error("Twilio rate-limited the request (HTTP 429, code {code}): {message}")]
    RateLimited {
        code: u32,
        message: String,
        /// The answer's `Retry-After`, when it had one.
        retry_after: Option<Duration>,
    },
    /// Twilio answered an error: its HTTP status, and its code and message when the body was
    /// Twilio's error JSON (a proxy's page has no code; its message is the start of the body).
    #[error("Twilio answered HTTP {status}{}: {message}", code.map(|c| format!(" (code {c})")).unwrap_or_default())]
    Refused {
        status: u16,
        code: Option<u32>,
        message: String,
        more_info: Option<String>,
    },
    /// No complete answer within the timeout: Twilio may or may not have acted on it.
    #[error("no answer from Twilio within {0:?}")]
    Timeout(Duration),
    /// No connection (DNS, refused, TLS handshake): nothing reached Twilio.
    #[error("could not connect to Twilio: {0}")]
    Connect(String),
    /// The connection broke after the request went out: Twilio may have acted on it.
    #[error("the connection to Twilio broke mid-request: {0}")]
    Transport(String),
    /// A success status whose body is not the resource (cut short, not JSON).
    #[error("Twilio's answer (HTTP {status}) could not be read: {detail}")]
    BadResponse { status: u16, detail: String },
}

impl ApiError {
    /// The HTTP status Twilio answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::RateLimited { .. } => Some(429),
            Self::Refused { status, .. } | Self::BadResponse { status, .. } => Some(*status),
            Self::Timeout(_) | Self::Connect(_) | Self::Transport(_) => None,
        }
    }

    /// Twilio's error code (`21211`, `20429`, …), if the answer carried one.
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::RateLimited { code, .. } => Some(*code),
            Self::Refused { code, .. } => *code,
            _ => None,
        }
    }

    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Self::RateLimited { .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether Twilio may have acted on the request although it failed (a call may ring): after
    /// a timeout, a connection broken mid-request, a 5xx, or an unreadable success. Never after a
    /// 4xx (a 429 included) or a connection that was never made.
    pub fn may_have_been_processed(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Transport(_) | Self::BadResponse { .. } => true,
            Self::Refused { status, .. } => *status >= 500,
            Self::RateLimited { .. } | Self::Connect(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_twilio_said_and_what_may_have_happened() {
        let refused = ApiError::Refused {
            status: 400,
            code: Some(21211),
            message: "Invalid 'To' Phone Number".into(),
            more_info: None,
        };
        assert_eq!(
            refused.to_string(),
            "Twilio answered HTTP 400 (code 21211): Invalid 'To' Phone Number"
        );
        assert_eq!((refused.status(), refused.code()), (Some(400), Some(21211)));
        assert!(!refused.may_have_been_processed());
        let limited = ApiError::RateLimited {
            code: 20429,
            message: "Too Many Requests".into(),
            retry_after: None,
        };
        assert!(limited.is_rate_limited() && !limited.may_have_been_processed());
        assert_eq!(limited.status(), Some(429));
        let timeout = ApiError::Timeout(Duration::from_secs(10));
        assert!(timeout.is_timeout() && timeout.may_have_been_processed());
        assert!(!ApiError::Connect("refused".into()).may_have_been_processed());
        let proxy = ApiError::Refused {
            status: 502,
            code: None,
            message: "<html>".into(),
            more_info: None,
        };
        assert_eq!(proxy.to_string(), "Twilio answered HTTP 502: <html>");
        assert!(proxy.may_have_been_processed());
    }
}
