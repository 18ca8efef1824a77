//! Twilio's REST shapes as the double answers them: the Message and Call resources, the error
//! JSON (`code`, `message`, `more_info`, `status`), and the form checks behind Twilio's 400s.

use serde_json::{Value, json};
pub use twilio::call_status::CallStatus;

use super::clock;

/// Twilio's answer to a request it refuses: an HTTP status and one of its error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status,
        })
    }

    pub fn rate_limited() -> Self {
        Self::new(429, 20429, "Too Many Requests")
    }

    pub fn authenticate() -> Self {
        Self::new(401, 20003, "Authenticate")
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            404,
            20404,
            format!("The requested resource {path} was not found"),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(405, 20004, "Method not allowed")
    }
}

/// A posted form: pairs in the order sent, repeats kept (`StatusCallbackEvent` may repeat).
pub struct Form<'a>(pub &'a [(String, String)]);

impl Form<'_> {
    /// The first value of `name`, if present and not blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `+` then 2 to 15 digits, the first not 0.
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// A checked `POST …/Messages.json`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub to: String,
    pub from: String,
    pub body: String,
}

impl NewMessage {
    pub fn from_form(form: &Form<'_>) -> Result<Self, ApiError> {
        let to = form
            .get("To")
            .ok_or_else(|| ApiError::new(400, 21604, "A 'To' phone number is required."))?;
        let from = form
            .get("From")
            .ok_or_else(|| ApiError::new(400, 21603, "A 'From' phone number is required."))?;
        let body = form
            .get("Body")
            .ok_or_else(|| ApiError::new(400, 21602, "Message body is required."))?;
        let (to_channel, to_number) = channel(to);
        let (from_channel, _) = channel(from);
        if !is_e164(to_number) {
            return Err(ApiError::new(
                400,
                21211,
                format!("Invalid 'To' Phone Number: {to}"),
            ));
        }
        if to_channel != from_channel {
            return Err(ApiError::new(
                400,
                21910,
                "Invalid From and To pair. From and To should be of the same channel",
            ));
        }
        if body.chars().count() > 1600 {
            return Err(ApiError::new(
                400,
                21617,
                "The concatenated message body exceeds the 1600 character limit.",
            ));
        }
        Ok(Self {
            to: to.to_owned(),
            from: from.to_owned(),
            body: body.to_owned(),
        })
    }
}

/// `whatsapp:+1…` → (`whatsapp`, `+1…`); a plain number is the `sms` channel.
fn channel(address: &str) -> (&str, &str) {
    match address.split_once(':') {
        Some((channel, rest)) => (channel, rest),
        None => ("sms", address),
    }
}

/// The message resource of a message just created (`status: queued`).
pub fn message_json(account_sid: &str, sid: &str, message: &NewMessage, now_us: i64) -> Value {
    let date = clock::rfc2822(now_us);
    let uri = format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json");
    json!({
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": message.body,
        "date_created": date,
        "date_sent": null,
        "date_updated": date,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": message.from,
        "messaging_service_sid": null,
        "num_media": "0",
        "num_segments": "1",
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {
            "media": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"),
        },
        "to": message.to,
        "uri": uri,
    })
}

/// The call progress events a status callback can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events {
    pub initiated: bool,
    pub ringing: bool,
    pub answered: bool,
    pub completed: bool,
}

/// A checked `POST …/Calls.json`.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub to: String,
    pub from: String,
    pub url: String,
    /// Seconds to let it ring before `no-answer` (Twilio: default 60, at most 600).
    pub timeout_secs: u32,
    pub status_callback: Option<String>,
    /// The events sent to `status_callback`: `completed` alone unless `StatusCallbackEvent` says.
    pub events: Events,
}

impl NewCall {
    pub fn from_form(form: &Form<'_>) -> Result<Self, ApiError> {
        let to = form
            .get("To")
            .ok_or_else(|| ApiError::new(400, 21201, "No 'To' number is specified"))?;
        let from = form
            .get("From")
            .ok_or_else(|| ApiError::new(400, 21213, "No 'From' number is specified"))?;
        let is_address = |a: &str| is_e164(a) || a.starts_with("client:") || a.starts_with("sip:");
        if !is_address(to) {
            return Err(ApiError::new(
                400,
                21211,
                format!("Invalid 'To' Phone Number: {to}"),
            ));
        }
        if !is_address(from) {
            return Err(ApiError::new(
                400,
                21212,
                format!("Invalid 'From' Phone Number: {from}"),
            ));
        }
        if form.get("Twiml").is_some() || form.get("ApplicationSid").is_some() {
            return Err(ApiError::new(
                400,
                21205,
                "This Twilio double follows a 'Url' only (no 'Twiml', no 'ApplicationSid')",
            ));
        }
        let url = form.get("Url").ok_or_else(|| {
            ApiError::new(
                400,
                21205,
                "Url parameter is required. Please provide a Url, ApplicationSid or Twiml",
            )
        })?;
        if !is_http_url(url) {
            return Err(ApiError::new(
                400,
                21205,
                format!("Url is not a valid URL: {url}"),
            ));
        }
        let timeout_secs = match form.get("Timeout") {
            None => 60,
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|t| *t > 0)
                .ok_or_else(|| ApiError::new(400, 21208, format!("Invalid Timeout: {text}")))?
                .min(600),
        };
        let status_callback = match form.get("StatusCallback") {
            None => None,
            Some(url) if is_http_url(url) => Some(url.to_owned()),
            Some(url) => {
                return Err(ApiError::new(
                    400,
                    21609,
                    format!("Invalid StatusCallback url: {url}"),
                ));
            }
        };
        let mut events = Events::default();
        // Helper libraries repeat the parameter; TwiML-style space-separated lists work too.
        for event in form.all("StatusCallbackEvent").flat_map(|v| {
            v.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|e| !e.is_empty())
        }) {
            match event {
                "initiated" => events.initiated = true,
                "ringing" => events.ringing = true,
                "answered" => events.answered = true,
                "completed" => events.completed = true,
                other => {
                    return Err(ApiError::new(
                        400,
                        21626,
                        format!("Invalid 'StatusCallbackEvent': {other}"),
                    ));
                }
            }
        }
        if events == Events::default() {
            events.completed = true;
        }
        Ok(Self {
            to: to.to_owned(),
            from: from.to_owned(),
            url: url.to_owned(),
            timeout_secs,
            status_callback,
            events,
        })
    }
}

fn is_http_url(url: &str) -> bool {
    url::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// The SIP code a final status callback carries (what the carrier said).
pub fn sip_response_code(status: CallStatus) -> Option<&'static str> {
    match status {
        CallStatus::Completed => Some("200"),
        CallStatus::Busy => Some("486"),
        CallStatus::NoAnswer | CallStatus::Canceled => Some("487"),
        CallStatus::Failed => Some("404"),
        _ => None,
    }
}

/// What the Call resource shows of a call at one moment.
pub struct CallView<'a> {
    pub account_sid: &'a str,
    pub sid: &'a str,
    pub to: &'a str,
    pub from: &'a str,
    pub status: CallStatus,
    pub created_us: i64,
    pub updated_us: i64,
    pub start_us: Option<i64>,
    pub end_us: Option<i64>,
    /// Seconds from answer to end, once ended.
    pub duration_secs: Option<u64>,
    pub queue_time_ms: u64,
}

pub fn call_json(call: &CallView<'_>) -> Value {
    let account_sid = call.account_sid;
    let sid = call.sid;
    let base = format!("/2010-04-01/Accounts/{account_sid}/Calls/{sid}");
    json!({
        "account_sid": account_sid,
        "annotation": null,
        "answered_by": null,
        "api_version": "2010-04-01",
        "caller_name": null,
        "date_created": clock::rfc2822(call.created_us),
        "date_updated": clock::rfc2822(call.updated_us),
        "direction": "outbound-api",
        "duration": call.duration_secs.map(|d| d.to_string()),
        "end_time": call.end_us.map(clock::rfc2822),
        "forwarded_from": null,
        "from": call.from,
        "from_formatted": call.from,
        "group_sid": null,
        "parent_call_sid": null,
        "phone_number_sid": null,
        "price": null,
        "price_unit": "USD",
        "queue_time": call.queue_time_ms.to_string(),
        "sid": sid,
        "start_time": call.start_us.map(clock::rfc2822),
        "status": call.status.as_str(),
        "subresource_uris": {
            "events": format!("{base}/Events.json"),
            "notifications": format!("{base}/Notifications.json"),
            "recordings": format!("{base}/Recordings.json"),
            "payments": format!("{base}/Payments.json"),
            "streams": format!("{base}/Streams.json"),
            "siprec": format!("{base}/Siprec.json"),
            "user_defined_messages": format!("{base}/UserDefinedMessages.json"),
            "user_defined_message_subscriptions": format!("{base}/UserDefinedMessageSubscriptions.json"),
        },
        "to": call.to,
        "to_formatted": call.to,
        "trunk_sid": null,
        "uri": format!("{base}.json"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn messages_are_checked_as_twilio_checks_them() {
        let ok = form(&[
            ("To", "whatsapp:+14155550100"),
            ("From", "whatsapp:+14155238886"),
            ("Body", "hi"),
        ]);
        assert!(NewMessage::from_form(&Form(&ok)).is_ok());
        for (pairs, code) in [
            (vec![("From", "+1415"), ("Body", "x")], 21604),
            (vec![("To", "+14155550100"), ("Body", "x")], 21603),
            (
                vec![("To", "+14155550100"), ("From", "+14155550101")],
                21602,
            ),
            (
                vec![
                    ("To", "whatsapp:555"),
                    ("From", "whatsapp:+1"),
                    ("Body", "x"),
                ],
                21211,
            ),
            (
                vec![
                    ("To", "+14155550100"),
                    ("From", "whatsapp:+14155238886"),
                    ("Body", "x"),
                ],
                21910,
            ),
        ] {
            let err = NewMessage::from_form(&Form(&form(&pairs))).unwrap_err();
            assert_eq!((err.status, err.code), (400, code), "{pairs:?}");
        }
    }

    #[test]
    fn calls_are_checked_and_their_events_read_either_way() {
        let base = [
            ("To", "+14155550100"),
            ("From", "+14155550101"),
            ("Url", "http://127.0.0.1:1/twilio/voice?outbound=1"),
        ];
        let call = NewCall::from_form(&Form(&form(&base))).unwrap();
        assert_eq!(call.timeout_secs, 60);
        assert_eq!(
            call.events,
            Events {
                completed: true,
                ..Events::default()
            }
        );
        let mut repeated = base.to_vec();
        repeated.extend([
            ("StatusCallback", "http://127.0.0.1:1/twilio/status"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "answered"),
            ("Timeout", "900"),
        ]);
        let call = NewCall::from_form(&Form(&form(&repeated))).unwrap();
        assert!(call.events.initiated && call.events.answered && !call.events.ringing);
        assert_eq!(call.timeout_secs, 600);
        let mut spaced = base.to_vec();
        spaced.push((
            "StatusCallbackEvent",
            "initiated ringing answered completed",
        ));
        let call = NewCall::from_form(&Form(&form(&spaced))).unwrap();
        assert!(call.events.initiated && call.events.ringing && call.events.completed);

        for (extra, code) in [
            (("StatusCallbackEvent", "hungup"), 21626),
            (("Timeout", "-1"), 21208),
            (("StatusCallback", "ftp://x"), 21609),
        ] {
            let mut pairs = base.to_vec();
            pairs.push(extra);
            let err = NewCall::from_form(&Form(&form(&pairs))).unwrap_err();
            assert_eq!(err.code, code, "{extra:?}");
        }
        let err = NewCall::from_form(&Form(&form(&base[1..]))).unwrap_err();
        assert_eq!(err.code, 21201);
        let err = NewCall::from_form(&Form(&form(&base[..2]))).unwrap_err();
        assert_eq!(err.code, 21205);
    }

    #[test]
    fn errors_look_like_twilio_errors() {
        assert_eq!(
            ApiError::rate_limited().json(),
            json!({
                "code": 20429,
                "message": "Too Many Requests",
                "more_info": "https://www.twilio.com/docs/errors/20429",
                "status": 429,
            })
        );
        assert!(is_e164("+14155550100"));
        assert!(!is_e164("14155550100") && !is_e164("+0123") && !is_e164("+1"));
    }
}
