//! What the client sends Twilio (a message, a call, a call's end) and what Twilio answers (the
//! Message and Call resources, the fields the server reads).

use serde::Deserialize;
pub use twilio::call_status::CallStatus;

/// `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// `whatsapp:+14155238886` for WhatsApp, or a number.
    pub from: &'a str,
    /// `whatsapp:+E164` for WhatsApp (same channel as `from`).
    pub to: &'a str,
    pub body: &'a str,
}

impl NewMessage<'_> {
    pub(crate) fn form(&self) -> Vec<(&str, &str)> {
        vec![("From", self.from), ("To", self.to), ("Body", self.body)]
    }
}

/// The Message resource, as created.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Message {
    /// `SM…`.
    pub sid: String,
    /// `queued`, `sending`, `sent`, `failed`, … (`queued` when just created).
    pub status: String,
    pub to: String,
    pub from: String,
}

/// A call progress event a status callback may report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEvent {
    Initiated,
    Ringing,
    Answered,
    Completed,
}

impl CallEvent {
    pub const ALL: [Self; 4] = [
        Self::Initiated,
        Self::Ringing,
        Self::Answered,
        Self::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Completed => "completed",
        }
    }
}

/// `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`.
#[derive(Debug, Clone, Copy)]
pub struct NewCall<'a> {
    /// E.164.
    pub to: &'a str,
    /// One of the account's numbers, E.164.
    pub from: &'a str,
    /// The voice webhook Twilio requests (POST) once the call is answered.
    pub url: &'a str,
    /// Seconds to ring before `no-answer`; `None`: Twilio's default (60).
    pub timeout_secs: Option<u32>,
    /// Where status callbacks go (POST); `None`: none.
    pub status_callback: Option<&'a str>,
    /// Which events are reported there; empty: `completed` only (Twilio's default).
    pub status_callback_events: &'a [CallEvent],
}

impl NewCall<'_> {
    pub(crate) fn form(&self) -> Vec<(&str, String)> {
        let mut form = vec![
            ("To", self.to.to_owned()),
            ("From", self.from.to_owned()),
            ("Url", self.url.to_owned()),
            ("Method", "POST".to_owned()),
        ];
        if let Some(timeout) = self.timeout_secs {
            form.push(("Timeout", timeout.to_string()));
        }
        if let Some(callback) = self.status_callback {
            form.push(("StatusCallback", callback.to_owned()));
            form.push(("StatusCallbackMethod", "POST".to_owned()));
            // One parameter per event, as Twilio's own helper libraries send a list.
            for event in self.status_callback_events {
                form.push(("StatusCallbackEvent", event.as_str().to_owned()));
            }
        }
        form
    }
}

/// How to end a call (`POST …/Calls/{Sid}.json` with `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCall {
    /// `Status=canceled`: ends a call that is queued or ringing; an answered call goes on.
    Cancel,
    /// `Status=completed`: ends the call however far it got (hangs up an answered one).
    HangUp,
}

impl EndCall {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "canceled",
            Self::HangUp => "completed",
        }
    }
}

/// The Call resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Call {
    /// `CA…`.
    pub sid: String,
    pub status: CallStatus,
    pub to: String,
    pub from: String,
    /// `outbound-api` for a call placed through the API.
    #[serde(default)]
    pub direction: Option<String>,
    /// Seconds, once the call ended.
    #[serde(default)]
    pub duration: Option<String>,
    /// Milliseconds the call waited in Twilio's queue for the account's calls per second.
    #[serde(default)]
    pub queue_time: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_sends_each_event_as_its_own_parameter() {
        let call = NewCall {
            to: "+14155550100",
            from: "+14155550101",
            url: "https://calls.example.com/twilio/voice?outbound=o1",
            timeout_secs: Some(30),
            status_callback: Some("https://calls.example.com/twilio/status?outbound=o1"),
            status_callback_events: &CallEvent::ALL,
        };
        let form = call.form();
        let events: Vec<&str> = form
            .iter()
            .filter(|(k, _)| *k == "StatusCallbackEvent")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(events, ["initiated", "ringing", "answered", "completed"]);
        assert!(form.contains(&("Timeout", "30".to_owned())));
    }

    #[test]
    fn reads_the_call_resource_and_unknown_statuses() {
        let call: Call = serde_json::from_str(
            r#"{"sid":"CA1","status":"in-progress","to":"+1","from":"+2","direction":"outbound-api","extra":1}"#,
        )
        .unwrap();
        assert_eq!(call.status, CallStatus::InProgress);
        let odd: Call =
            serde_json::from_str(r#"{"sid":"CA1","status":"paused","to":"+1","from":"+2"}"#)
                .unwrap();
        assert_eq!(odd.status, CallStatus::Unknown);
    }
}
