//! The voice webhook and the `<Connect action>` request as Twilio sends them (signed form POSTs on
//! fresh connections), and what their answers mean: a stream to open, a refusal, a hang-up.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::error::SimError;
use super::target::Target;

/// Twilio gives a webhook 15 s; a loopback server that needs more is broken.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// TwiML answers are a few hundred bytes; more than this is not a webhook answer.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The form fields of one simulated call.
pub struct CallIds<'a> {
    pub call_sid: &'a str,
    pub account_sid: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// `inbound`, or `outbound-api` for a call placed through the REST API (the REST double's).
    pub direction: &'a str,
}

impl<'a> CallIds<'a> {
    /// The form Twilio posts about this call (webhook, wait, after-stream, status callback), with
    /// its `CallStatus` at that moment.
    fn form(&self, status: &'a str) -> [(&'static str, &'a str); 7] {
        [
            ("CallSid", self.call_sid),
            ("AccountSid", self.account_sid),
            ("From", self.from),
            ("To", self.to),
            ("CallStatus", status),
            ("Direction", self.direction),
            ("ApiVersion", "2010-04-01"),
        ]
    }

    /// A simulated inbound call from the simulator's caller to its number.
    pub fn inbound(call_sid: &'a str, account_sid: &'a str) -> Self {
        Self {
            call_sid,
            account_sid,
            from: "+15005550006",
            to: "+15005550001",
            direction: "inbound",
        }
    }

    /// The `CallStatus` of the voice webhook: an inbound call is still `ringing` when Twilio asks
    /// for its TwiML; a call placed through the API is asked for it once answered.
    fn status_at_webhook(&self) -> &'static str {
        if self.direction == "inbound" {
            "ringing"
        } else {
            "in-progress"
        }
    }
}

/// How the server answered the voice webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `<Connect><Stream url=…>`: the URL exactly as the TwiML wrote it, entities decoded.
    Connect(String),
    /// Over the limit: which reject mode said so.
    Rejected(RejectMode),
    /// The hold of the waiting room (docs/reference.md#waiting-room): the caller waits in line and
    /// comes back to `/twilio/wait`.
    Wait(Hold),
}

/// What a hold TwiML tells Twilio: where to come back, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The `<Redirect>` (else the `<Gather action>`): `/twilio/wait`, as the TwiML wrote it.
    pub wait_url: String,
    /// How long Twilio plays the hold before it comes back: the `<Say>` spoken, the `<Pause>` or
    /// `<Play>`, then the `<Gather>`'s wait for a key.
    pub lasts: Duration,
}

/// Words Twilio's `<Say>` speaks per second (the server's estimate of a hold's length uses the same).
const SPOKEN_WORDS_PER_SEC: f64 = 2.5;
/// A `<Play>`ed file's length is unknown to the simulator: a hold with music counts this long.
const PLAY_ASSUMED: Duration = Duration::from_secs(5);
/// Twilio's defaults: `<Pause length>` 1 s, `<Gather timeout>` 5 s.
const PAUSE_DEFAULT_SECS: f64 = 1.0;
const GATHER_TIMEOUT_DEFAULT_SECS: f64 = 5.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectMode {
    /// HTTP 503 (`REJECT_MODE=503`).
    Unavailable,
    /// `<Say>` then `<Redirect>` or `<Hangup>` (`REJECT_MODE=twiml`).
    Twiml,
    /// `<Reject reason="busy"/>` (`REJECT_MODE=busy`).
    Busy,
}

impl RejectMode {
    pub fn label(self) -> &'static str {
        match self {
            Self::Unavailable => "http_503",
            Self::Twiml => "twiml",
            Self::Busy => "busy",
        }
    }
}

/// A `<Connect><Stream>` answer in full: what a continuation needs to be followed like Twilio does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connect {
    /// The `<Stream url>`, entities decoded.
    pub stream_url: String,
    /// The `<Connect action>`, if the answer named one (docs/reference.md#after-stream).
    pub action_url: Option<String>,
    /// The `<Parameter>`s, which the stream's `start` carries as `customParameters`.
    pub parameters: Vec<(String, String)>,
}

/// What the `<Connect action>` request answered (docs/reference.md#after-stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStream {
    /// A new stream for the same call.
    Continue(Connect),
    /// `<Say>` (then `<Redirect>` or `<Hangup/>`): the fallback.
    Fallback,
    /// `<Hangup/>` alone.
    Hangup,
}

pub async fn post_voice(target: &Target, call: &CallIds<'_>) -> Result<Answer, SimError> {
    Ok(request_voice(target, call).await?.0)
}

/// The voice webhook's answer, and the whole `<Connect>` when it connects.
pub async fn request_voice(
    target: &Target,
    call: &CallIds<'_>,
) -> Result<(Answer, Option<Connect>), SimError> {
    request_voice_at(target, &target.voice_url(), call).await
}

/// [`request_voice`] at `url` (absolute, signed as written): the `Url` a REST request named.
pub async fn request_voice_at(
    target: &Target,
    url: &str,
    call: &CallIds<'_>,
) -> Result<(Answer, Option<Connect>), SimError> {
    let params = call.form(call.status_at_webhook());
    let (status, body) = timeout(WEBHOOK_TIMEOUT, post(target, url, &params))
        .await
        .map_err(|_| SimError::Timeout("webhook"))??;
    let answer = classify(status, &body)?;
    let connect = matches!(answer, Answer::Connect(_))
        .then(|| connect_of(&body))
        .flatten();
    Ok((answer, connect))
}

/// Twilio's request of the `<Connect action>` URL once a stream closed with the call still up.
pub async fn post_action(
    target: &Target,
    action_url: &str,
    call: &CallIds<'_>,
) -> Result<AfterStream, SimError> {
    let params = call.form("in-progress");
    let (status, body) = timeout(WEBHOOK_TIMEOUT, post(target, action_url, &params))
        .await
        .map_err(|_| SimError::Timeout("after_stream"))??;
    classify_after_stream(status, &body)
}

/// What a visit to `/twilio/wait` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visit {
    /// `<Connect><Stream>`: admitted from the line.
    Admitted(Connect),
    /// Another hold: still in line.
    Hold(Hold),
    /// `<Say>` then a hang-up or a redirect elsewhere (or any refusal): sent to the overflow.
    Overflow,
    /// `<Hangup/>` alone: the line no longer knows the caller (gone, ended, or back too late).
    Dropped,
}

/// Twilio's request of `/twilio/wait` (the hold's `<Redirect>`) for a caller in line: the same
/// form as the voice webhook, the call answered (`in-progress`).
pub async fn post_wait(
    target: &Target,
    wait_url: &str,
    call: &CallIds<'_>,
) -> Result<Visit, SimError> {
    let params = call.form("in-progress");
    let (status, body) = timeout(WEBHOOK_TIMEOUT, post(target, wait_url, &params))
        .await
        .map_err(|_| SimError::Timeout("wait"))??;
    classify_visit(status, &body)
}

fn classify_visit(status: u16, body: &str) -> Result<Visit, SimError> {
    Ok(match classify(status, body)? {
        Answer::Connect(url) => Visit::Admitted(connect_of(body).unwrap_or(Connect {
            stream_url: url,
            ..Connect::default()
        })),
        Answer::Wait(hold) => Visit::Hold(hold),
        Answer::Rejected(_) if body.contains("<Hangup") && !body.contains("<Say") => Visit::Dropped,
        Answer::Rejected(_) => Visit::Overflow,
    })
}

/// The final status callback of a call that ended on Twilio's side (the caller hung up):
/// `CallStatus` `status` to `/twilio/status`. The status code of the answer.
pub async fn post_status(
    target: &Target,
    call: &CallIds<'_>,
    status: &str,
) -> Result<u16, SimError> {
    let params = call.form(status);
    let (code, _) = timeout(WEBHOOK_TIMEOUT, post(target, &target.status_url(), &params))
        .await
        .map_err(|_| SimError::Timeout("status_callback"))??;
    Ok(code)
}

fn classify_after_stream(status: u16, body: &str) -> Result<AfterStream, SimError> {
    if status != 200 {
        return Err(SimError::WebhookStatus(status));
    }
    if let Some(connect) = connect_of(body) {
        return Ok(AfterStream::Continue(connect));
    }
    if body.contains("<Say") || body.contains("<Redirect") {
        return Ok(AfterStream::Fallback);
    }
    if body.contains("<Hangup") {
        return Ok(AfterStream::Hangup);
    }
    Err(SimError::BadTwiml)
}

/// Posts `params` to `url` (signed over it as given), connected to the target whatever its host:
/// the status and body of the answer. Unbounded in time: callers wrap it in their own timeout.
pub async fn post(
    target: &Target,
    url: &str,
    params: &[(&str, &str)],
) -> Result<(u16, String), SimError> {
    let path = url::Url::parse(url)
        .map(|u| match u.query() {
            Some(query) => format!("{}?{query}", u.path()),
            None => u.path().to_owned(),
        })
        .map_err(|_| SimError::BadStreamUrl(url.to_owned(), "not an absolute URL".into()))?;
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: TwilioProxy/1.1 (prosaas-calls-sim)\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n",
        target.authority,
        body.len()
    );
    if let Some(sig) = target.sign(url, params) {
        request.push_str(&format!("X-Twilio-Signature: {sig}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);

    let mut stream = target.connect().await?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(SimError::io("webhook"))?;
    // A TLS session may still hold the request's records after the write.
    stream.flush().await.map_err(SimError::io("webhook"))?;
    let mut response = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS server that closes without close_notify once it answered: the end of the
            // answer, as a plain close is.
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {
                0
            }
            Err(err) => return Err(SimError::io("webhook")(err)),
        };
        if n == 0 {
            break;
        }
        if response.len() + n > MAX_RESPONSE_BYTES {
            return Err(SimError::BadHttp("response too large"));
        }
        response.extend_from_slice(&chunk[..n]);
    }
    parse_response(&response)
}

/// Status code and body of a complete HTTP/1.1 response (fixed length, chunked, or until close).
fn parse_response(raw: &[u8]) -> Result<(u16, String), SimError> {
    let head_end = find(raw, b"\r\n\r\n").ok_or(SimError::BadHttp("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| SimError::BadHttp("headers"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(status_code)
        .ok_or(SimError::BadHttp("status line"))?;
    let chunked = lines.any(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("transfer-encoding:") && lower.contains("chunked")
    });
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, SimError> {
    let mut body = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").ok_or(SimError::BadHttp("chunk size"))?;
        let size_text =
            std::str::from_utf8(&raw[..line_end]).map_err(|_| SimError::BadHttp("chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| SimError::BadHttp("chunk size"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = raw.get(..size).ok_or(SimError::BadHttp("short chunk"))?;
        body.extend_from_slice(chunk);
        raw = raw
            .get(size + 2..)
            .ok_or(SimError::BadHttp("short chunk"))?;
    }
}

fn classify(status: u16, body: &str) -> Result<Answer, SimError> {
    match status {
        200 => {}
        503 => return Ok(Answer::Rejected(RejectMode::Unavailable)),
        other => return Err(SimError::WebhookStatus(other)),
    }
    if let Some(url) = stream_url_of(body) {
        return Ok(Answer::Connect(url));
    }
    if let Some(hold) = hold_of(body) {
        return Ok(Answer::Wait(hold));
    }
    if body.contains("<Reject") {
        return Ok(Answer::Rejected(RejectMode::Busy));
    }
    if body.contains("<Say") || body.contains("<Hangup") || body.contains("<Redirect") {
        return Ok(Answer::Rejected(RejectMode::Twiml));
    }
    Err(SimError::BadTwiml)
}

/// The waiting room's hold: a `<Gather action>`, or a `<Redirect>` to `/twilio/wait` (an overflow
/// may redirect too, but elsewhere: `REJECT_REDIRECT_URL`).
pub fn hold_of(twiml: &str) -> Option<Hold> {
    let redirect = element_text(twiml, "Redirect");
    let to_wait = |url: &str| {
        url::Url::parse(url).is_ok_and(|u| u.path().ends_with(twilio::twiml::WAIT_PATH))
    };
    let gather = attribute_of(twiml, "<Gather", "action");
    let wait_url = match (redirect, gather) {
        (Some(url), _) if to_wait(&url) => url,
        (_, Some(action)) => action,
        _ => return None,
    };
    let seconds = |element: &str, name: &str, default: f64| {
        twiml.contains(element).then(|| {
            attribute_of(twiml, element, name)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .unwrap_or(default)
        })
    };
    let spoken = element_text(twiml, "Say").map_or(0.0, |text| {
        text.split_whitespace().count() as f64 / SPOKEN_WORDS_PER_SEC
    });
    let pause = seconds("<Pause", "length", PAUSE_DEFAULT_SECS).unwrap_or(0.0);
    let play = if twiml.contains("<Play") {
        PLAY_ASSUMED.as_secs_f64()
    } else {
        0.0
    };
    let gather = seconds("<Gather", "timeout", GATHER_TIMEOUT_DEFAULT_SECS).unwrap_or(0.0);
    // A hold that plays nothing would bring the caller straight back: at least a second.
    let lasts = Duration::from_secs_f64((spoken + pause + play + gather).max(1.0));
    Some(Hold { wait_url, lasts })
}

/// The text inside the first `<name>…</name>`, XML entities decoded.
fn element_text(twiml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}");
    let start = twiml.find(&open)?;
    let after = &twiml[start + open.len()..];
    // `<Say>` or `<Say voice=…>`, not `<SayMore>`.
    if !after.starts_with(['>', ' ']) {
        return None;
    }
    let tag_end = after.find('>')?;
    if after[..tag_end].ends_with('/') {
        return None;
    }
    let body = &after[tag_end + 1..];
    let end = body.find(&format!("</{name}>"))?;
    Some(unescape_xml(body[..end].trim()))
}

/// The `url` attribute of the first `<Stream>`, XML entities decoded.
pub fn stream_url_of(twiml: &str) -> Option<String> {
    attribute_of(twiml, "<Stream", "url")
}

/// The whole `<Connect>`: stream URL, action URL and `<Parameter>`s.
pub fn connect_of(twiml: &str) -> Option<Connect> {
    let stream_url = stream_url_of(twiml)?;
    let action_url = attribute_of(twiml, "<Connect", "action");
    let mut parameters = Vec::new();
    let mut rest = twiml;
    while let Some(at) = rest.find("<Parameter") {
        rest = &rest[at..];
        if let (Some(name), Some(value)) = (
            attribute_of(rest, "<Parameter", "name"),
            attribute_of(rest, "<Parameter", "value"),
        ) {
            parameters.push((name, value));
        }
        rest = &rest["<Parameter".len()..];
    }
    Some(Connect {
        stream_url,
        action_url,
        parameters,
    })
}

/// Attribute `name` of the first `element` tag (`<Stream`), XML entities decoded.
fn attribute_of(twiml: &str, element: &str, name: &str) -> Option<String> {
    let start = twiml.find(element)?;
    let tag = &twiml[start..start + twiml[start..].find('>')?];
    let key = format!(" {name}=");
    let attr = tag.find(&key)? + key.len();
    let quote = tag[attr..]
        .chars()
        .next()
        .filter(|c| *c == '"' || *c == '\'')?;
    let value = &tag[attr + 1..];
    let value = &value[..value.find(quote)?];
    Some(unescape_xml(value))
}

fn unescape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "lt" => Some('<'),
            "gt" => Some('>'),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The code of an `HTTP/1.1 NNN …` status line.
pub(super) fn status_code(line: &str) -> Option<u16> {
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use twilio::twiml;

    #[test]
    fn reads_the_stream_url_back_from_our_twiml() {
        let url = "wss://calls.example.com/twilio/stream?a=1&b=\"2\"";
        let xml = twiml::connect_stream(url, &[("CallSid", "CA1")]);
        assert_eq!(stream_url_of(&xml).as_deref(), Some(url));
        assert_eq!(
            classify(200, &xml).unwrap(),
            Answer::Connect(url.to_owned())
        );
    }

    #[test]
    fn reads_the_whole_connect_and_the_after_stream_answers() {
        let parameters = twiml::StreamParameters {
            call_sid: "CA1",
            from_number: Some("+1&2"),
            to_number: None,
            resumed: Some(2),
        };
        let xml = twiml::connect(
            "http://h/twilio/after-stream",
            "ws://h/twilio/stream",
            &parameters,
        );
        let connect = connect_of(&xml).unwrap();
        assert_eq!(connect.stream_url, "ws://h/twilio/stream");
        assert_eq!(
            connect.action_url.as_deref(),
            Some("http://h/twilio/after-stream")
        );
        assert_eq!(
            connect.parameters,
            [
                ("CallSid".to_owned(), "CA1".to_owned()),
                ("from_number".to_owned(), "+1&2".to_owned()),
                ("resumed".to_owned(), "2".to_owned()),
            ]
        );
        assert_eq!(
            classify_after_stream(200, &xml).unwrap(),
            AfterStream::Continue(connect)
        );
        assert_eq!(
            classify_after_stream(200, &twiml::fallback("sorry", None)).unwrap(),
            AfterStream::Fallback
        );
        assert_eq!(
            classify_after_stream(200, &twiml::hangup()).unwrap(),
            AfterStream::Hangup
        );
        assert!(classify_after_stream(403, "").is_err());
    }

    #[test]
    fn classifies_every_reject_mode() {
        assert_eq!(
            classify(503, "busy").unwrap(),
            Answer::Rejected(RejectMode::Unavailable)
        );
        assert_eq!(
            classify(200, &twiml::say_then("busy", None)).unwrap(),
            Answer::Rejected(RejectMode::Twiml)
        );
        assert_eq!(
            classify(200, &twiml::reject_busy()).unwrap(),
            Answer::Rejected(RejectMode::Busy)
        );
        assert!(matches!(
            classify(403, ""),
            Err(SimError::WebhookStatus(403))
        ));
        assert!(matches!(
            classify(200, "<Response/>"),
            Err(SimError::BadTwiml)
        ));
    }

    #[test]
    fn reads_the_waiting_rooms_hold_and_tells_it_from_the_overflow() {
        let wait = "http://calls.example.com/twilio/wait?a=1&b=2";
        let silent = twiml::hold(&twiml::Hold {
            wait_url: wait,
            say: None,
            music_url: None,
            pause_secs: 4,
        });
        let hold = hold_of(&silent).unwrap();
        assert_eq!(hold.wait_url, wait);
        // 4 s of pause, then the gather's 1 s.
        assert_eq!(hold.lasts, Duration::from_secs(5));
        assert_eq!(classify(200, &silent).unwrap(), Answer::Wait(hold));
        // Said (5 words at 2.5 a second) then 2 s of pause and the gather.
        let said = twiml::hold(&twiml::Hold {
            wait_url: wait,
            say: Some("You are number 3 now."),
            music_url: None,
            pause_secs: 2,
        });
        assert_eq!(hold_of(&said).unwrap().lasts, Duration::from_secs(5));
        let music = twiml::hold(&twiml::Hold {
            wait_url: wait,
            say: None,
            music_url: Some("https://cdn.example.com/hold.mp3"),
            pause_secs: 4,
        });
        assert_eq!(
            hold_of(&music).unwrap().lasts,
            PLAY_ASSUMED + Duration::from_secs(1)
        );
        // The overflow: spoken, then a hang-up or a redirect that is not the line.
        for overflow in [
            twiml::fallback("Sorry, all lines are busy.", None),
            twiml::fallback("Sorry.", Some("https://example.com/voicemail")),
        ] {
            assert_eq!(hold_of(&overflow), None, "{overflow}");
            assert_eq!(
                classify(200, &overflow).unwrap(),
                Answer::Rejected(RejectMode::Twiml)
            );
        }
        assert_eq!(
            classify_visit(200, &said).unwrap(),
            Visit::Hold(hold_of(&said).unwrap())
        );
        assert_eq!(
            classify_visit(200, &twiml::fallback("Sorry.", None)).unwrap(),
            Visit::Overflow
        );
        assert_eq!(
            classify_visit(200, &twiml::hangup()).unwrap(),
            Visit::Dropped
        );
        let connect = twiml::connect_stream("ws://h/twilio/stream", &[("CallSid", "CA1")]);
        assert!(matches!(
            classify_visit(200, &connect).unwrap(),
            Visit::Admitted(c) if c.stream_url == "ws://h/twilio/stream"
        ));
        // A bare redirect back to the line is a hold too.
        let bare = format!(r#"<Response><Redirect method="POST">{wait}</Redirect></Response>"#)
            .replace('&', "&amp;");
        assert_eq!(
            hold_of(&bare),
            Some(Hold {
                wait_url: wait.to_owned(),
                lasts: Duration::from_secs(1)
            })
        );
    }

    #[test]
    fn parses_fixed_and_chunked_responses() {
        let fixed = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(fixed).unwrap(), (200, "hello".into()));
        let chunked =
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (503, "abcde".into()));
        assert!(parse_response(b"garbage").is_err());
    }
}
