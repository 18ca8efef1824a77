//! What a call hears once its stream has closed (SPEC §9): read from the call's stored state, so
//! any replica answers Twilio's `<Connect action>` request the same way.

use tracing::{info, warn};

use crate::call_sid::CallSid;
use crate::calls::Calls;
use crate::state::{CallState, CallStatus, EndReason};

/// The answer to `/twilio/after-stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStream {
    /// The call is over: `<Hangup/>`.
    Hangup,
    /// The agent failed, or the call cannot be continued: `REJECT_MESSAGE`, then
    /// `REJECT_REDIRECT_URL` or `<Hangup/>`.
    Fallback,
    /// A fresh stream for the call, its `N`th continuation. Not produced yet: continuation grants
    /// (`RESUME_LIMIT`) are their own issue and land in [`Calls::after_stream`].
    Continue { resumed: u32 },
}

/// What the stored state says about how the stream ended, before any continuation is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnding {
    /// Ended by its caller or its agent, by bad input, or unknown.
    CallOver,
    /// The voice agent could not be reached, was lost or stopped reading.
    AgentFailed,
    /// The stream was lost while the call goes on: its replica died or drained, the socket
    /// dropped, the lock was lost.
    StreamLost,
}

/// Classifies a call's stored state (`None`: no state, e.g. expired or never admitted).
pub fn decide_after_stream(state: Option<&CallState>) -> StreamEnding {
    let Some(state) = state else {
        return StreamEnding::CallOver;
    };
    match (state.status, state.end_reason) {
        // Its replica died with the stream live: Twilio asks only once that socket is gone.
        (CallStatus::Reserved | CallStatus::Active, _) => StreamEnding::StreamLost,
        (CallStatus::Ended, None) => StreamEnding::CallOver,
        (CallStatus::Ended, Some(reason)) => match reason {
            EndReason::BridgeConnectFailed | EndReason::BridgeLost | EndReason::BridgeStalled => {
                StreamEnding::AgentFailed
            }
            EndReason::LeaseExpired
            | EndReason::Disconnected
            | EndReason::DrainTimeout
            | EndReason::LockLost => StreamEnding::StreamLost,
            EndReason::Stop
            | EndReason::StatusCallback
            | EndReason::AgentHangup
            | EndReason::IdleTimeout
            | EndReason::StartTimeout
            | EndReason::SlowConsumer
            | EndReason::MessageTooLarge
            | EndReason::Error
            | EndReason::Other => StreamEnding::CallOver,
        },
    }
}

impl Calls {
    /// The answer for a call whose stream closed, from its stored state. A stream lost while the
    /// call goes on gets the fallback for now: exactly what `RESUME_LIMIT=0` means, until
    /// continuation grants exist.
    pub async fn after_stream(&self, call_sid: &CallSid) -> AfterStream {
        let state = match self.store().read_state(call_sid).await {
            Ok(state) => state,
            Err(err) => {
                // Unknown because the store failed, not because the call is over: the caller
                // hears the fallback message rather than a silent hang-up.
                warn!(%call_sid, error = %err, "after-stream: state unreadable; answering the fallback");
                return AfterStream::Fallback;
            }
        };
        let ending = decide_after_stream(state.as_ref());
        let answer = match ending {
            StreamEnding::CallOver => AfterStream::Hangup,
            StreamEnding::AgentFailed | StreamEnding::StreamLost => AfterStream::Fallback,
        };
        info!(
            %call_sid,
            end_reason = state.as_ref().and_then(|s| s.end_reason).map_or("none", EndReason::as_str),
            ?ending,
            ?answer,
            "after-stream answered"
        );
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(reason: EndReason) -> CallState {
        let mut state = CallState::reserved("CA1", "r1");
        state.end(reason);
        state
    }

    #[test]
    fn every_end_reason_has_its_answer() {
        use StreamEnding::{AgentFailed, CallOver, StreamLost};
        let expected = |reason: EndReason| match reason {
            EndReason::BridgeConnectFailed | EndReason::BridgeLost | EndReason::BridgeStalled => {
                AgentFailed
            }
            EndReason::LeaseExpired
            | EndReason::Disconnected
            | EndReason::DrainTimeout
            | EndReason::LockLost => StreamLost,
            _ => CallOver,
        };
        for reason in EndReason::ALL {
            assert_eq!(
                decide_after_stream(Some(&ended(reason))),
                expected(reason),
                "{reason:?}"
            );
        }
        assert_eq!(
            decide_after_stream(Some(&ended(EndReason::Other))),
            CallOver
        );
        assert_eq!(
            decide_after_stream(Some(&ended(EndReason::AgentHangup))),
            CallOver
        );
        assert_eq!(decide_after_stream(None), CallOver);
        let mut live = CallState::reserved("CA1", "r1");
        assert_eq!(decide_after_stream(Some(&live)), StreamLost);
        live.status = CallStatus::Active;
        assert_eq!(decide_after_stream(Some(&live)), StreamLost);
    }
}
