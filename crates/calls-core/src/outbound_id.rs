//! The outbound call id (`OB` + 32 hex digits) every `calls:outbound:*` key and `/v1/calls/{id}`
//! is built from (docs/reference.md#outbound); a leaf, so the key space can name it.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// Every outbound id starts so (then 32 hex digits), like Twilio's SIDs; never a call SID (`CA`).
pub const ID_PREFIX: &str = "OB";

/// An outbound id: `OB` and 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboundId(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not an outbound call id (OB and 32 hex digits)")]
pub struct BadOutboundId;

impl OutboundId {
    pub fn parse(raw: &str) -> Result<Self, BadOutboundId> {
        let hex = raw.strip_prefix(ID_PREFIX).ok_or(BadOutboundId)?;
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(BadOutboundId)
        }
    }

    /// A fresh random id (the process' random hasher keys, the clock and a counter).
    pub fn random() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let word = |salt: u64| {
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u128(nanos);
            hasher.write_u64(n);
            hasher.write_u64(salt);
            hasher.write_u32(std::process::id());
            hasher.finish()
        };
        Self(format!("{ID_PREFIX}{:016x}{:016x}", word(1), word(2)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OutboundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
