//! The WhatsApp hand-off (docs/reference.md#waiting-room): one message through Twilio's Messages
//! API to a caller turned away, sent beside the TwiML answer, at most once per number per cooldown.

use std::sync::Arc;
use std::time::Duration;

use calls_core::calls::Calls;
use tracing::{info, warn};
use twilio_api::{NewMessage, TwilioClient};

use crate::config::WhatsAppConfig;
use crate::metrics::{Metrics, WhatsAppResult};

/// The Messages API has this long to answer; the caller never waits for it.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Whom a message goes to and what fills its placeholders.
#[derive(Debug, Clone, Default)]
pub(crate) struct TurnedAway {
    pub call_sid: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub tenant: Option<String>,
}

pub(crate) struct WhatsApp {
    config: WhatsAppConfig,
    client: TwilioClient,
    calls: Arc<Calls>,
    metrics: Arc<Metrics>,
}

impl WhatsApp {
    pub(crate) fn new(
        config: WhatsAppConfig,
        client: &TwilioClient,
        calls: Arc<Calls>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            client: client.with_timeout(SEND_TIMEOUT),
            calls,
            metrics,
        }
    }

    /// Sends the message in its own task: the caller's answer never waits for Twilio. Tried once:
    /// a failure is logged and counted, never retried (the caller may get a second call's worth
    /// after the cooldown, never a loop of messages).
    pub(crate) fn hand_off(self: &Arc<Self>, caller: TurnedAway) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = this.send(&caller).await;
            this.metrics.wait.whatsapp(result);
        });
    }

    async fn send(&self, caller: &TurnedAway) -> WhatsAppResult {
        let call_sid = caller.call_sid.as_str();
        let Some(number) = caller.from.as_deref().filter(|n| is_e164(n)) else {
            info!(
                call_sid,
                "no WhatsApp message: the caller's number is no E.164 number"
            );
            return WhatsAppResult::NoNumber;
        };
        match self
            .calls
            .store()
            .claim_whatsapp(number, self.config.cooldown)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                info!(
                    call_sid,
                    "no WhatsApp message: this number had one within WHATSAPP_COOLDOWN_SECS"
                );
                return WhatsAppResult::Cooldown;
            }
            Err(err) => {
                // Without the cooldown the once-per-number promise cannot be kept: no message.
                self.metrics.redis_error(err.op());
                warn!(call_sid, error = %err, "WhatsApp message not sent: the cooldown could not be checked");
                return WhatsAppResult::Failed;
            }
        }
        let body = fill(&self.config.message, caller);
        let to = format!("whatsapp:{number}");
        let message = NewMessage {
            from: &self.config.from,
            to: &to,
            body: &body,
        };
        match self.client.send_message(&message).await {
            Ok(sent) => {
                info!(call_sid, message_sid = %sent.sid, status = %sent.status, "WhatsApp message sent to the caller turned away");
                WhatsAppResult::Sent
            }
            Err(err) => {
                warn!(call_sid, error = %err, "WhatsApp message failed; not retried");
                WhatsAppResult::Failed
            }
        }
    }
}

/// `+` and 2 to 15 digits, the first not 0 (ITU-T E.164).
pub(crate) fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `WHATSAPP_MESSAGE` with `{from}`, `{to}`, `{tenant}` filled in (empty where unknown).
fn fill(template: &str, caller: &TurnedAway) -> String {
    template
        .replace("{from}", caller.from.as_deref().unwrap_or(""))
        .replace("{to}", caller.to.as_deref().unwrap_or(""))
        .replace("{tenant}", caller.tenant.as_deref().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_e164_numbers_get_a_message() {
        for good in ["+14155238886", "+442071838750", "+12"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "",
            "14155238886",
            "+0155",
            "+1415 523",
            "client:alice",
            "sip:a@b.c",
            "anonymous",
            "+1234567890123456",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let caller = TurnedAway {
            call_sid: "CA1".into(),
            from: Some("+15550100".into()),
            to: Some("+15550199".into()),
            tenant: None,
        };
        assert_eq!(
            fill("{from} called {to} of {tenant}.", &caller),
            "+15550100 called +15550199 of ."
        );
    }
}
