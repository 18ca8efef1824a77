//! Where Redis' clock (`TIME`, the one every script uses) stands against this replica's monotonic
//! clock, learnt from round trips the store makes anyway; for admission deadlines only.
//!
//! A reply carrying Redis' time `r`, sent at `s` and received at `t` (this replica's clock), says
//! the offset (Redis minus here) lies in `[r - t, r - s]`. The store keeps the highest lower bound
//! seen, so a local instant mapped onto Redis' clock is never later than it truly is: a deadline
//! passed to a script can only be early. A measurement whose upper bound lies below the kept
//! value means Redis' clock stepped back: the kept value starts again from it.

use std::sync::Mutex;

use tokio::time::Instant;

pub(super) struct RedisClock {
    /// The instant offsets are measured from.
    origin: Instant,
    /// Redis ms minus ms since `origin`: the highest lower bound seen; `None` before any.
    offset: Mutex<Option<i64>>,
}

impl RedisClock {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
            offset: Mutex::new(None),
        }
    }

    /// Records a reply that carried Redis' time `redis_ms`, for a request sent at `sent` and
    /// answered at `received`.
    pub(super) fn saw(&self, redis_ms: i64, sent: Instant, received: Instant) {
        let low = redis_ms - self.millis(received);
        let high = redis_ms - self.millis(sent);
        let mut offset = self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *offset = Some(match *offset {
            Some(kept) if kept <= high => kept.max(low),
            _ => low,
        });
    }

    /// `at` on Redis' clock, in ms, never later than it truly is; `None` before any reply.
    pub(super) fn redis_ms(&self, at: Instant) -> Option<i64> {
        let offset = *self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        offset.map(|offset| self.millis(at) + offset)
    }

    fn millis(&self, at: Instant) -> i64 {
        let since = at.saturating_duration_since(self.origin).as_millis();
        i64::try_from(since).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn mapped_instants_are_never_late_and_a_step_back_starts_again() {
        let clock = RedisClock::new();
        let t0 = Instant::now();
        assert_eq!(clock.redis_ms(t0), None);
        // Redis reads 1_000_000 ms at t0 + 5 ms; the reply takes 10 ms each way.
        clock.saw(1_000_000, t0, t0 + Duration::from_millis(20));
        // The lower bound: the mapped instant is 15 ms early.
        assert_eq!(clock.redis_ms(t0 + Duration::from_millis(5)), Some(999_985));
        // A faster round trip tightens it.
        clock.saw(
            1_000_100,
            t0 + Duration::from_millis(104),
            t0 + Duration::from_millis(106),
        );
        assert_eq!(
            clock.redis_ms(t0 + Duration::from_millis(105)),
            Some(1_000_099)
        );
        // A slower one never loosens it.
        clock.saw(
            1_000_200,
            t0 + Duration::from_millis(100),
            t0 + Duration::from_millis(300),
        );
        assert_eq!(
            clock.redis_ms(t0 + Duration::from_millis(105)),
            Some(1_000_099)
        );
        // Redis' clock stepped back a minute: no measurement fits the kept value any more.
        clock.saw(
            940_400,
            t0 + Duration::from_millis(399),
            t0 + Duration::from_millis(401),
        );
        assert_eq!(
            clock.redis_ms(t0 + Duration::from_millis(400)),
            Some(940_399)
        );
    }
}
