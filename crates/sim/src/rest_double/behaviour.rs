//! What one REST endpoint of the double does with a request: answer as Twilio does, answer late,
//! fail with a given status and Twilio code, hang, or rate-limit with 429/20429; set per endpoint
//! at start (`--messages fail:500`) or at run time (`PUT /_double/behaviour/{endpoint}`).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::resources::ApiError;

/// The endpoints a behaviour is set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST …/Messages.json`.
    Messages,
    /// `POST …/Calls.json`.
    Calls,
    /// `POST …/Calls/{Sid}.json`.
    CallUpdate,
}

impl Endpoint {
    pub const ALL: [Self; 3] = [Self::Messages, Self::Calls, Self::CallUpdate];

    pub fn name(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Calls => "calls",
            Self::CallUpdate => "call-update",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// What a request to an endpoint gets, before its form is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Answered as Twilio would (validation errors included).
    Answer,
    /// This HTTP status with Twilio's error JSON.
    Fail(ApiError),
    /// Acted on at once (a call placed, a message queued) and answered this much later: a client
    /// that gives up first has still placed the call.
    Delay(Duration),
    /// Accepted and never answered, nor acted on: the client's own timeout ends it.
    Hang,
    /// 429 with code 20429 for the first N requests after the behaviour was set.
    RateLimitFirst(u64),
    /// 429 with code 20429 for a request that finds N already answered in the last second.
    RateLimitPerSecond(u32),
}

/// A mode, for the next `times` requests only (then `Answer`) or for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    pub mode: Mode,
    pub times: Option<u64>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            mode: Mode::Answer,
            times: None,
        }
    }
}

impl Behaviour {
    /// Parses `ok`, `delay:SECS`, `fail:STATUS[:CODE[:MESSAGE]]`, `hang`, `rate-limit:first=N`
    /// or `rate-limit:per-second=N`, optionally prefixed `N*` (the next N requests only).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let (times, mode) = match spec.split_once('*') {
            Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u64 = n.parse().map_err(|_| format!("{n:?} is not a count"))?;
                (Some(n), rest.trim())
            }
            _ => (None, spec),
        };
        let mode = if mode == "ok" {
            Mode::Answer
        } else if mode == "hang" {
            Mode::Hang
        } else if let Some(secs) = mode.strip_prefix("delay:") {
            let secs: f64 = secs
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && (0.0..=3600.0).contains(s))
                .ok_or_else(|| format!("{spec:?}: delay needs seconds, 0 to 3600"))?;
            Mode::Delay(Duration::from_secs_f64(secs))
        } else if let Some(rest) = mode.strip_prefix("fail:") {
            let mut parts = rest.splitn(3, ':');
            let status: u16 = parts
                .next()
                .and_then(|s| s.trim().parse().ok())
                .filter(|s| (400..=599).contains(s))
                .ok_or_else(|| format!("{spec:?}: fail needs an HTTP status 400-599"))?;
            let code = match parts.next() {
                Some(code) => code
                    .trim()
                    .parse()
                    .map_err(|_| format!("{spec:?}: {code:?} is not a Twilio error code"))?,
                // Twilio's own codes for plain HTTP errors follow this pattern (20404, 20429,
                // 20500, 20503).
                None => 20_000 + u32::from(status),
            };
            let message = parts
                .next()
                .map_or_else(|| reason(status).to_owned(), str::to_owned);
            Mode::Fail(ApiError {
                status,
                code,
                message,
            })
        } else if let Some(n) = mode.strip_prefix("rate-limit:first=") {
            Mode::RateLimitFirst(n.parse().map_err(|_| format!("{spec:?}: bad count"))?)
        } else if let Some(n) = mode.strip_prefix("rate-limit:per-second=") {
            Mode::RateLimitPerSecond(
                n.parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{spec:?}: bad rate"))?,
            )
        } else {
            return Err(format!(
                "{spec:?}: expected ok, delay:SECS, hang, fail:STATUS[:CODE[:MESSAGE]], \
                 rate-limit:first=N or rate-limit:per-second=N, optionally prefixed N*"
            ));
        };
        Ok(Self { mode, times })
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.times {
            write!(f, "{n}*")?;
        }
        match &self.mode {
            Mode::Answer => f.write_str("ok"),
            Mode::Delay(d) => write!(f, "delay:{}", d.as_secs_f64()),
            Mode::Hang => f.write_str("hang"),
            Mode::Fail(e) => write!(f, "fail:{}:{}:{}", e.status, e.code, e.message),
            Mode::RateLimitFirst(n) => write!(f, "rate-limit:first={n}"),
            Mode::RateLimitPerSecond(n) => write!(f, "rate-limit:per-second={n}"),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// What the double does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Answer,
    /// Act on it now, answer after this long.
    Delay(Duration),
    Fail(ApiError),
    Hang,
}

/// An endpoint's behaviour and what it has counted since it was set.
#[derive(Debug, Default)]
pub struct EndpointState {
    behaviour: Behaviour,
    /// Requests seen since the behaviour was set.
    seen: u64,
    /// When requests were let through, over the last second (for `per-second`).
    answered: VecDeque<Instant>,
}

impl EndpointState {
    pub fn set(&mut self, behaviour: Behaviour) {
        *self = Self {
            behaviour,
            ..Self::default()
        };
    }

    pub fn behaviour(&self) -> &Behaviour {
        &self.behaviour
    }

    pub fn decide(&mut self, now: Instant) -> Decision {
        self.seen += 1;
        let active = self.behaviour.times.is_none_or(|n| self.seen <= n);
        let decision = match &self.behaviour.mode {
            _ if !active => Decision::Answer,
            Mode::Answer => Decision::Answer,
            Mode::Delay(d) => Decision::Delay(*d),
            Mode::Hang => Decision::Hang,
            Mode::Fail(error) => Decision::Fail(error.clone()),
            Mode::RateLimitFirst(n) if self.seen <= *n => Decision::Fail(ApiError::rate_limited()),
            Mode::RateLimitFirst(_) => Decision::Answer,
            Mode::RateLimitPerSecond(limit) => {
                while self
                    .answered
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                {
                    self.answered.pop_front();
                }
                if self.answered.len() >= *limit as usize {
                    Decision::Fail(ApiError::rate_limited())
                } else {
                    Decision::Answer
                }
            }
        };
        if matches!(decision, Decision::Answer | Decision::Delay(_)) {
            self.answered.push_back(now);
            if self.answered.len() > 10_000 {
                self.answered.pop_front();
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_prints_it_back() {
        for spec in [
            "ok",
            "hang",
            "delay:12.5",
            "fail:500:20500:Internal Server Error",
            "fail:400:21211:Invalid 'To' Phone Number: a:b",
            "rate-limit:first=3",
            "rate-limit:per-second=2",
            "2*fail:503:20503:Service Unavailable",
            "1*hang",
        ] {
            assert_eq!(Behaviour::parse(spec).unwrap().to_string(), spec);
        }
        assert_eq!(
            Behaviour::parse("fail:503").unwrap().mode,
            Mode::Fail(ApiError {
                status: 503,
                code: 20503,
                message: "Service Unavailable".into()
            })
        );
        for bad in [
            "",
            "nope",
            "fail:200",
            "fail:x",
            "rate-limit:per-second=0",
            "x*ok",
        ] {
            assert!(Behaviour::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limits_count_from_when_they_were_set() {
        let now = Instant::now();
        let mut state = EndpointState::default();
        state.set(Behaviour::parse("rate-limit:first=2").unwrap());
        let limited = Decision::Fail(ApiError::rate_limited());
        assert_eq!(state.decide(now), limited);
        assert_eq!(state.decide(now), limited);
        assert_eq!(state.decide(now), Decision::Answer);

        state.set(Behaviour::parse("rate-limit:per-second=2").unwrap());
        assert_eq!(state.decide(now), Decision::Answer);
        assert_eq!(state.decide(now), Decision::Answer);
        assert_eq!(state.decide(now), limited);
        let later = now + Duration::from_millis(1_001);
        assert_eq!(state.decide(later), Decision::Answer);

        state.set(Behaviour::parse("1*hang").unwrap());
        assert_eq!(state.decide(now), Decision::Hang);
        assert_eq!(state.decide(now), Decision::Answer);
    }
}
