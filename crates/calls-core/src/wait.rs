//! The waiting room's rules both stores share (docs/reference.md#waiting-room): the settings and
//! answers of one step in line, and the fair order that decides whose turn it is.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::call_sid::CallSid;
use crate::reject::RejectReason;
use crate::state::CallState;

/// `WAIT_MAX_CALLERS` when unset.
pub const DEFAULT_WAIT_MAX_CALLERS: u64 = 100;
/// `WAIT_POLL_SECS` when unset.
pub const DEFAULT_WAIT_POLL_SECS: u64 = 5;
/// The shortest margin a turn is kept past one poll: Twilio's redirect and a busy replica take
/// some time, and a caller must not lose a turn for arriving a moment after the poll.
const MIN_TURN_MARGIN: Duration = Duration::from_secs(2);
/// How long the line's keys outlive the last step that touched them, past the longest wait: the
/// line is gone by then anyway (every caller left after two polls without a visit).
const KEY_TTL_SLACK: Duration = Duration::from_secs(60);

/// The waiting room's settings (`WAIT_*`), handed to every step so the stores need no
/// configuration of their own for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitSettings {
    /// `WAIT_MAX_SECS`: a caller in line this long overflows at their next visit.
    pub max_wait: Duration,
    /// `WAIT_MAX_CALLERS`: at most this many wait, cluster-wide.
    pub max_callers: u64,
    /// `WAIT_POLL_SECS`: a waiting caller visits at least this often.
    pub poll: Duration,
    /// The longest the hold TwiML keeps a caller between two visits: `poll`, or longer where
    /// `WAIT_MESSAGE` takes longer to say (docs/reference.md#waiting-room). `Duration::ZERO`:
    /// `poll`.
    pub hold: Duration,
}

impl WaitSettings {
    /// How long after a visit a caller still counts as present: their turn is kept for them this
    /// long (one poll plus a margin, never past [`Self::gone_after`]).
    pub fn turn_kept(&self) -> Duration {
        let period = self.period();
        (period + (period / 2).max(MIN_TURN_MARGIN)).min(self.gone_after())
    }

    /// How long after a visit a caller who has not come back leaves the line: two polls, or two
    /// of the longest holds where the spoken message makes a hold outlast the poll (else every
    /// caller would count as gone before their first return).
    pub fn gone_after(&self) -> Duration {
        self.period() * 2
    }

    /// The longest time between two visits of a caller who is still there.
    fn period(&self) -> Duration {
        self.poll.max(self.hold)
    }

    /// The TTL of the line's keys in Redis, refreshed by every step.
    pub fn key_ttl(&self) -> Duration {
        self.max_wait + self.gone_after() + KEY_TTL_SLACK
    }
}

/// Why a caller was sent to the line: the refusal they are counted under if they leave it unserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    MaxConcurrent,
    TenantLimit,
}

impl WaitReason {
    pub fn reject_reason(self) -> RejectReason {
        match self {
            Self::MaxConcurrent => RejectReason::MaxConcurrent,
            Self::TenantLimit => RejectReason::TenantLimit,
        }
    }

    /// From the one-letter code `wait.lua` stores (`m`, `t`).
    pub(crate) fn from_code(code: &str) -> Self {
        if code == "t" {
            Self::TenantLimit
        } else {
            Self::MaxConcurrent
        }
    }
}

/// Why a caller left the line for the reject mode (`calls_wait_overflow_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverflowReason {
    /// In line for `WAIT_MAX_SECS`.
    Timeout,
    /// Pressed `WAIT_OVERFLOW_DIGIT`.
    Digit,
    /// `WAIT_MAX_CALLERS` already waited: never joined.
    Full,
}

impl OverflowReason {
    pub const ALL: [Self; 3] = [Self::Timeout, Self::Digit, Self::Full];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Digit => "digit",
            Self::Full => "full",
        }
    }
}

/// One visit of a call: a voice webhook over the cap, or its return to `/twilio/wait`.
#[derive(Debug, Clone, Copy)]
pub struct WaitVisit<'a> {
    pub call_sid: &'a CallSid,
    /// The call's tenant (`None`: only the global cap).
    pub tenant: Option<&'a str>,
    /// The caller pressed `WAIT_OVERFLOW_DIGIT`.
    pub digit: bool,
    /// The reservation's lease if the call is admitted (`RESERVATION_SECS`).
    pub reservation: Duration,
    /// Written when the call is admitted with a new slot (a webhook's reserved state).
    pub reserved: &'a CallState,
    /// Written when the call joins the line (`status: "waiting"`, `waiting_since`).
    pub waiting: &'a CallState,
}

/// One step of the waiting room.
#[derive(Debug, Clone, Copy)]
pub enum WaitOp<'a> {
    /// A call that is over the cap, or in line: admit it, keep it in line, or let it overflow.
    Visit(WaitVisit<'a>),
    /// A final status callback: a waiting call leaves the line at once.
    Leave(&'a CallSid),
    /// A renewal tick: callers silent for two polls leave; reports the line's size.
    Sweep,
}

/// What a visit decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The call holds a slot (a reservation, as a webhook's); `waited` is how long it waited in
    /// line, `None` when it never did (a free slot nobody in line could use, or a slot it held).
    Admitted {
        new: bool,
        active: u64,
        waited: Option<Duration>,
    },
    /// In line at `position` (1 = next); `announce` when it just joined or its position changed.
    Waiting {
        position: u64,
        announce: bool,
        joined: bool,
    },
    /// Out of the line to the reject mode (its state ended `wait_overflow`, counted as refused for
    /// `sent_by`); `waited` is how long it waited (`None` for `Full`: it never joined).
    Overflow {
        reason: OverflowReason,
        sent_by: WaitReason,
        waited: Option<Duration>,
    },
    /// Not admitted and not in line: the call already ended for good.
    Ended,
    /// `Leave`: the reason the call waited for, if it was in line (its state then ended
    /// `wait_abandoned`).
    Left { sent_by: Option<WaitReason> },
    /// `Sweep`.
    Swept,
}

/// What one step did, besides its outcome: who it found gone (silent for two polls: their states
/// ended `wait_abandoned`, each counted as refused for the reason that sent them to the line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitReport {
    pub outcome: WaitOutcome,
    pub abandoned: Vec<(String, WaitReason)>,
    /// Callers in line after the step (`Sweep` only; 0 otherwise).
    pub waiting: u64,
    /// The longest current wait (`Sweep` only).
    pub longest: Duration,
}

/// One caller in line, as the fair order sees it.
#[derive(Debug, Clone, Copy)]
pub struct Waiter<'a> {
    pub call_sid: &'a str,
    /// `""` for a call without a tenant.
    pub tenant: &'a str,
    /// Visited within [`WaitSettings::turn_kept`]: only present callers are given turns.
    pub present: bool,
}

/// The first `free` callers of `line` (in the order they joined) to be served: tenant by tenant,
/// the tenant served least recently (`served`: a larger value is more recent, none is never) whose
/// `room` (free slots under its own cap) is not used up goes first, ties to the earliest waiter;
/// first come, first served within a tenant. Callers not present are passed over.
pub fn turns<'a>(
    line: &[Waiter<'a>],
    free: u64,
    room: &dyn Fn(&str) -> u64,
    served: &HashMap<String, u64>,
) -> Vec<&'a str> {
    order(line, free, Some(room), served, true)
}

/// The 1-based place of `call_sid` in `line` by the same order, caps aside: what the caller hears.
pub fn position(line: &[Waiter<'_>], served: &HashMap<String, u64>, call_sid: &str) -> u64 {
    let all = order(line, u64::MAX, None, served, false);
    all.iter()
        .position(|sid| *sid == call_sid)
        .map_or(all.len() as u64 + 1, |at| at as u64 + 1)
}

fn order<'a>(
    line: &[Waiter<'a>],
    limit: u64,
    room: Option<&dyn Fn(&str) -> u64>,
    served: &HashMap<String, u64>,
    present_only: bool,
) -> Vec<&'a str> {
    // Each tenant's queue, in joining order (indices into `line`).
    let mut queues: BTreeMap<&str, (usize, Vec<usize>, u64)> = BTreeMap::new();
    for (at, waiter) in line.iter().enumerate() {
        if present_only && !waiter.present {
            continue;
        }
        let entry = queues.entry(waiter.tenant).or_insert_with(|| {
            let left = room.map_or(u64::MAX, |room| room(waiter.tenant));
            (0, Vec::new(), left)
        });
        entry.1.push(at);
    }
    let mut recency: HashMap<&str, u64> = queues
        .keys()
        .map(|tenant| (*tenant, served.get(*tenant).map_or(0, |at| at + 1)))
        .collect();
    // Served in this very ordering: after every real service, in turn.
    let mut next_served = served.values().max().map_or(1, |at| at + 2);
    let mut picked = Vec::new();
    while (picked.len() as u64) < limit {
        let best = queues
            .iter()
            .filter(|(_, (head, queue, left))| *head < queue.len() && *left > 0)
            .min_by_key(|(tenant, (head, queue, _))| (recency[**tenant], queue[*head]))
            .map(|(tenant, _)| *tenant);
        let Some(tenant) = best else { break };
        let (head, queue, left) = queues.get_mut(tenant).expect("a tenant just found");
        picked.push(line[queue[*head]].call_sid);
        *head += 1;
        *left -= 1;
        recency.insert(tenant, next_served);
        next_served += 1;
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(callers: &[(&'a str, &'a str)]) -> Vec<Waiter<'a>> {
        callers
            .iter()
            .map(|(call_sid, tenant)| Waiter {
                call_sid,
                tenant,
                present: true,
            })
            .collect()
    }

    #[test]
    fn tenants_take_turns_and_ties_go_to_the_earliest_waiter() {
        let waiting = line(&[("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B")]);
        let none = HashMap::new();
        let all = turns(&waiting, 4, &|_| u64::MAX, &none);
        assert_eq!(all, ["a1", "b1", "a2", "a3"]);
        assert_eq!(position(&waiting, &none, "b1"), 2);
        assert_eq!(position(&waiting, &none, "a3"), 4);
        // A served just now: B goes first.
        let served = HashMap::from([("A".to_owned(), 7)]);
        assert_eq!(turns(&waiting, 1, &|_| u64::MAX, &served), ["b1"]);
    }

    #[test]
    fn a_tenant_at_its_cap_and_absent_callers_are_passed_over() {
        let mut waiting = line(&[("a1", "A"), ("b1", "B"), ("b2", "B")]);
        let none = HashMap::new();
        let room = |tenant: &str| if tenant == "A" { 0 } else { 5 };
        assert_eq!(turns(&waiting, 2, &room, &none), ["b1", "b2"]);
        waiting[1].present = false;
        assert_eq!(turns(&waiting, 2, &|_| 5, &none), ["a1", "b2"]);
    }

    #[test]
    fn settings_keep_a_turn_one_poll_and_a_margin() {
        let settings = WaitSettings {
            max_wait: Duration::from_secs(60),
            max_callers: 10,
            poll: Duration::from_secs(5),
            hold: Duration::ZERO,
        };
        assert_eq!(settings.turn_kept(), Duration::from_millis(7500));
        assert_eq!(settings.gone_after(), Duration::from_secs(10));
        let short = WaitSettings {
            poll: Duration::from_secs(1),
            ..settings
        };
        assert_eq!(short.turn_kept(), Duration::from_secs(2));
        // A message that takes 10.4 s to say and hear out: a caller returning after it is still
        // there, and keeps a turn kept for them.
        let spoken = WaitSettings {
            hold: Duration::from_millis(10_400),
            ..settings
        };
        assert_eq!(spoken.gone_after(), Duration::from_millis(20_800));
        assert_eq!(spoken.turn_kept(), Duration::from_millis(15_600));
    }
}
