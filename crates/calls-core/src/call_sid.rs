//! The validated call identifier every key, log line and state blob is built from.
//! Twilio's SIDs are `CA` + 32 hex; anything that cannot safely name a Redis key is refused here.

use std::fmt;

use thiserror::Error;

/// Longest SID accepted: Twilio's are 34 characters; the slack admits test and outbound-leg IDs
/// while keeping keys short and bounded.
pub const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallSidError {
    #[error("call SID is empty")]
    Empty,
    #[error("call SID is {0} bytes long; at most {MAX_LEN} are accepted")]
    TooLong(usize),
    #[error("call SID contains {0:?}; only ASCII letters, digits, '-' and '_' are accepted")]
    BadChar(char),
}

/// A call SID that is non-empty, at most [`MAX_LEN`] bytes, and made of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallSid(String);

impl CallSid {
    pub fn parse(raw: &str) -> Result<Self, CallSidError> {
        if raw.is_empty() {
            return Err(CallSidError::Empty);
        }
        if raw.len() > MAX_LEN {
            return Err(CallSidError::TooLong(raw.len()));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(CallSidError::BadChar(bad));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallSid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CallSid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_twilio_sids() {
        let sid = "CA0123456789abcdef0123456789abcdef";
        assert_eq!(CallSid::parse(sid).unwrap().as_str(), sid);
    }

    #[test]
    fn refuses_empty_long_and_odd_sids() {
        assert_eq!(CallSid::parse(""), Err(CallSidError::Empty));
        assert_eq!(
            CallSid::parse(&"C".repeat(65)),
            Err(CallSidError::TooLong(65))
        );
        assert_eq!(CallSid::parse("CA 1"), Err(CallSidError::BadChar(' ')));
        assert_eq!(CallSid::parse("CA{x}"), Err(CallSidError::BadChar('{')));
        assert_eq!(CallSid::parse("CA:1"), Err(CallSidError::BadChar(':')));
    }
}
