//! How a stream ends: the WebSocket close codes (docs/reference.md#media-stream) and the end
//! reason recorded for each ending.

use calls_core::live_calls::LiveCall;
use calls_core::state::EndReason;

pub(crate) mod close {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const GOING_AWAY: u16 = 1001;
    pub(crate) const PROTOCOL: u16 = 1002;
    pub(crate) const INVALID_DATA: u16 = 1007;
    pub(crate) const POLICY: u16 = 1008;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const TRY_AGAIN_LATER: u16 = 1013;
}

/// How the live phase ended: the reason recorded in state, and the close frame to send (if any).
pub(crate) struct Ending {
    pub reason: EndReason,
    pub close: Option<(u16, &'static str)>,
}

impl Ending {
    pub(crate) fn new(reason: EndReason, close: Option<(u16, &'static str)>) -> Self {
        Self { reason, close }
    }

    /// The close a stream gets at the drain deadline, live or still waiting for its `start`.
    pub(crate) const DRAIN_CLOSE: (u16, &'static str) =
        (close::GOING_AWAY, "replica shutting down");
}

/// The ending of a stream told to stop by someone else: the call core (a final status callback,
/// the lock taken by another stream) names its reason; otherwise it is the drain deadline.
pub(crate) fn ended_from_outside(live: &LiveCall) -> Ending {
    match live.ended_by() {
        Some(EndReason::StatusCallback) => Ending::new(
            EndReason::StatusCallback,
            Some((close::NORMAL, "call ended")),
        ),
        Some(reason) => Ending::new(reason, Some((close::POLICY, "call is streaming elsewhere"))),
        None => Ending::new(EndReason::DrainTimeout, Some(Ending::DRAIN_CLOSE)),
    }
}
