//! A small, fast generator for the simulator's SIDs, WebSocket keys and frame masks: varied enough
//! for test traffic, seeded per run and call, and no new dependency (not for anything secret).

use std::time::{SystemTime, UNIX_EPOCH};

/// splitmix64: one multiply-xorshift step per number, every seed usable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A seed that differs between runs and processes.
    pub fn seed_from_clock() -> u64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        nanos ^ (u64::from(std::process::id()) << 32)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        out
    }

    /// A Twilio-style SID: `prefix` and 32 lowercase hex digits.
    pub fn sid(&mut self, prefix: &str) -> String {
        format!("{prefix}{:016x}{:016x}", self.next_u64(), self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_look_like_twilio_sids() {
        let mut rng = Rng::new(7);
        let sid = rng.sid("CA");
        assert_eq!(sid.len(), 34);
        assert!(sid[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(sid, rng.sid("CA"));
        assert_ne!(rng.bytes::<4>(), rng.bytes::<4>());
    }
}
