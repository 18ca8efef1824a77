//! The waiting room's side of the call lifecycle (docs/reference.md#waiting-room): a call over the
//! cap visits the line, a final status takes it out, each tick sweeps it; the store decides.

use std::time::Duration;

use tracing::{info, warn};

use super::{Calls, Intake, RejectReason, WebhookCall};
use crate::call_sid::CallSid;
use crate::state::CallState;
use crate::wait::{
    OverflowReason, WaitOp, WaitOutcome, WaitReason, WaitReport, WaitSettings, WaitVisit,
};

/// What the caller hears after a visit to the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitAnswer {
    /// Admitted (a reservation, as a webhook's): the stream TwiML.
    Connect { new: bool },
    /// In line: the hold TwiML, saying `position` when `announce`.
    Wait { position: u64, announce: bool },
    /// Out of the line: the reject mode's message (and a WhatsApp message, where set).
    Overflow { reason: OverflowReason },
    /// Refused without a place in line (draining alone, recovering, no store): the reject mode.
    Reject(RejectReason),
    /// The call already ended for good: hang up.
    Ended,
}

/// The line's size as a sweep found it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineSummary {
    pub waiting: u64,
    pub longest: Duration,
}

impl Calls {
    /// The waiting room's settings, `None` when it is off (`WAIT_MAX_SECS=0`).
    pub fn waiting_room(&self) -> Option<&WaitSettings> {
        self.config.wait.as_ref()
    }

    /// A voice webhook (or a visit to `/twilio/wait`, `digit` when the caller pressed the overflow
    /// digit) with the waiting room on: one atomic store step admits the call, keeps it in line, or
    /// overflows it.
    pub async fn visit_line(
        &self,
        call_sid: &CallSid,
        call: WebhookCall,
        digit: bool,
        intake: Intake,
    ) -> WaitAnswer {
        let Some(settings) = self.config.wait else {
            return match self.admit_webhook(call_sid, call, intake).await {
                super::WebhookOutcome::Connect { new } => WaitAnswer::Connect { new },
                super::WebhookOutcome::Reject(reason) => WaitAnswer::Reject(reason),
                super::WebhookOutcome::Ended => WaitAnswer::Ended,
            };
        };
        if intake == Intake::Closed {
            // Draining with no other live replica: nobody is left to serve the line either. A
            // caller in it leaves it now (counted once, as it leaves), not two polls later.
            if self
                .leave_line(call_sid, &settings, "the last live replica drains")
                .await
            {
                return WaitAnswer::Reject(RejectReason::Draining);
            }
            return match self.admit_webhook(call_sid, call, intake).await {
                super::WebhookOutcome::Connect { new } => WaitAnswer::Connect { new },
                super::WebhookOutcome::Reject(reason) => WaitAnswer::Reject(reason),
                super::WebhookOutcome::Ended => WaitAnswer::Ended,
            };
        }
        let reserved = self.reserved_state(call_sid, call);
        let mut waiting = CallState::waiting(call_sid.as_str(), &self.config.replica_id);
        waiting.tenant.clone_from(&reserved.tenant);
        waiting.account_sid.clone_from(&reserved.account_sid);
        waiting.from.clone_from(&reserved.from);
        waiting.to.clone_from(&reserved.to);
        let visit = WaitVisit {
            call_sid,
            tenant: reserved.tenant.as_deref(),
            digit,
            reservation: self.config.reservation,
            reserved: &reserved,
            waiting: &waiting,
        };
        let started = std::time::Instant::now();
        let result = self.store.wait(WaitOp::Visit(visit), &settings).await;
        self.events.admission_time(started.elapsed());
        let report = match result {
            Ok(report) => report,
            Err(err) => {
                return WaitAnswer::Reject(self.store_failed(call_sid, "wait", &err));
            }
        };
        self.count_abandoned(&report);
        match report.outcome {
            WaitOutcome::Admitted {
                new,
                active,
                waited,
            } => {
                if new {
                    self.events.slot_taken();
                }
                if let Some(waited) = waited {
                    self.events.wait_admitted(waited);
                    info!(%call_sid, active, waited_ms = waited.as_millis() as u64, "call admitted from the waiting line");
                } else {
                    info!(%call_sid, new, active, "call reserved");
                }
                WaitAnswer::Connect { new }
            }
            WaitOutcome::Waiting {
                position,
                announce,
                joined,
            } => {
                if joined {
                    self.events.wait_joined();
                    info!(%call_sid, position, tenant = reserved.tenant.as_deref(), "call over the cap joined the waiting line");
                }
                WaitAnswer::Wait { position, announce }
            }
            WaitOutcome::Overflow {
                reason,
                sent_by,
                waited,
            } => {
                self.events.refused(sent_by.reject_reason());
                self.events.wait_overflow(reason);
                info!(%call_sid, reason = reason.as_str(), sent_by = sent_by.reject_reason().as_str(), waited_ms = waited.map(|w| w.as_millis() as u64), "call left the waiting line for the reject mode");
                WaitAnswer::Overflow { reason }
            }
            WaitOutcome::Ended => {
                info!(%call_sid, "visit for a call that already ended; no slot taken");
                WaitAnswer::Ended
            }
            WaitOutcome::Left { .. } | WaitOutcome::Swept => {
                warn!(%call_sid, "the store answered a visit as another step; refusing");
                WaitAnswer::Reject(RejectReason::StoreUnavailable)
            }
        }
    }

    /// A final status callback for a call that may be waiting: it leaves the line at once.
    /// Returns whether it was in line (then it holds no slot to release).
    pub(super) async fn leave_line(
        &self,
        call_sid: &CallSid,
        settings: &WaitSettings,
        why: &str,
    ) -> bool {
        match self.store.wait(WaitOp::Leave(call_sid), settings).await {
            Ok(report) => {
                self.count_abandoned(&report);
                match report.outcome {
                    WaitOutcome::Left {
                        sent_by: Some(sent_by),
                    } => {
                        self.abandoned(call_sid.as_str(), sent_by, why);
                        true
                    }
                    _ => false,
                }
            }
            Err(err) => {
                self.events.store_error(err.op());
                warn!(%call_sid, error = %err, "status callback could not take the call out of the waiting line; it leaves after two polls");
                false
            }
        }
    }

    /// The renewal tick's sweep of the line: callers silent for two polls leave. `None` with the
    /// waiting room off or the store failing (logged).
    pub async fn sweep_line(&self) -> Option<LineSummary> {
        let settings = self.config.wait?;
        match self.store.wait(WaitOp::Sweep, &settings).await {
            Ok(report) => {
                self.count_abandoned(&report);
                self.events.wait_line(report.waiting, report.longest);
                Some(LineSummary {
                    waiting: report.waiting,
                    longest: report.longest,
                })
            }
            Err(err) => {
                self.events.store_error(err.op());
                warn!(error = %err, "could not sweep the waiting line");
                None
            }
        }
    }

    fn count_abandoned(&self, report: &WaitReport) {
        for (call_sid, sent_by) in &report.abandoned {
            self.abandoned(call_sid, *sent_by, "stopped coming back for two polls");
        }
    }

    /// A caller who left the line unserved: counted once as refused for the reason that sent
    /// them there (the store counted the cluster's figure in the same step), and as abandoned.
    fn abandoned(&self, call_sid: &str, sent_by: WaitReason, why: &str) {
        self.events.refused(sent_by.reject_reason());
        self.events.wait_abandoned();
        info!(%call_sid, why, "caller left the waiting line unserved");
    }

    /// The reserved state a webhook writes, with its tenant.
    pub(super) fn reserved_state(&self, call_sid: &CallSid, call: WebhookCall) -> CallState {
        let mut state = CallState::reserved(call_sid.as_str(), &self.config.replica_id);
        let tenant = self
            .config
            .tenant_key
            .of_webhook(call.account_sid.as_deref(), call.to.as_deref());
        state.tenant = self.tenant_or_none(call_sid, tenant);
        state.account_sid = call.account_sid;
        state.from = call.from;
        state.to = call.to;
        state.stream_url = call.stream_url;
        // The TwiML that admits it carries a token where tokens are on (docs/reference.md#stream-token).
        state.stream_token = self.config.stream_tokens;
        state
    }
}
