//! The voice webhook as Twilio sends it (a signed form POST on a fresh connection), and what its
//! answer means: a stream to open, a refusal in one of the reject modes, or a failure.

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
}

/// How the server answered the voice webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `<Connect><Stream url=…>`: the URL exactly as the TwiML wrote it, entities decoded.
    Connect(String),
    /// Over the limit: which reject mode said so.
    Rejected(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// HTTP 503 (`REJECT_MODE=503`).
    Unavailable,
    /// `<Say>` then `<Redirect>` or `<Hangup>` (`REJECT_MODE=twiml`).
    Twiml,
    /// `<Reject reason="busy"/>` (`REJECT_MODE=busy`).
    Busy,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Self::Unavailable => "http_503",
            Self::Twiml => "twiml",
            Self::Busy => "busy",
        }
    }
}

pub async fn post_voice(target: &Target, call: &CallIds<'_>) -> Result<Answer, SimError> {
    timeout(WEBHOOK_TIMEOUT, exchange(target, call))
        .await
        .map_err(|_| SimError::Timeout("webhook"))?
}

async fn exchange(target: &Target, call: &CallIds<'_>) -> Result<Answer, SimError> {
    let params = [
        ("CallSid", call.call_sid),
        ("AccountSid", call.account_sid),
        ("From", call.from),
        ("To", call.to),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("ApiVersion", "2010-04-01"),
    ];
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut request = format!(
        "POST /twilio/voice HTTP/1.1\r\nHost: {}\r\nUser-Agent: TwilioProxy/1.1 (prosaas-calls-sim)\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n",
        target.authority,
        body.len()
    );
    if let Some(sig) = target.sign(&target.voice_url(), &params) {
        request.push_str(&format!("X-Twilio-Signature: {sig}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);

    let mut stream = target.connect().await?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(SimError::io("webhook"))?;
    let mut response = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(SimError::io("webhook"))?;
        if n == 0 {
            break;
        }
        if response.len() + n > MAX_RESPONSE_BYTES {
            return Err(SimError::BadHttp("response too large"));
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let (status, body) = parse_response(&response)?;
    classify(status, &body)
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
        503 => return Ok(Answer::Rejected(Refusal::Unavailable)),
        other => return Err(SimError::WebhookStatus(other)),
    }
    if let Some(url) = stream_url_of(body) {
        return Ok(Answer::Connect(url));
    }
    if body.contains("<Reject") {
        return Ok(Answer::Rejected(Refusal::Busy));
    }
    if body.contains("<Say") || body.contains("<Hangup") || body.contains("<Redirect") {
        return Ok(Answer::Rejected(Refusal::Twiml));
    }
    Err(SimError::BadTwiml)
}

/// The `url` attribute of the first `<Stream>`, XML entities decoded.
pub fn stream_url_of(twiml: &str) -> Option<String> {
    let start = twiml.find("<Stream")?;
    let tag = &twiml[start..start + twiml[start..].find('>')?];
    let attr = tag.find("url=")? + 4;
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
    fn classifies_every_reject_mode() {
        assert_eq!(
            classify(503, "busy").unwrap(),
            Answer::Rejected(Refusal::Unavailable)
        );
        assert_eq!(
            classify(200, &twiml::say_then("busy", None)).unwrap(),
            Answer::Rejected(Refusal::Twiml)
        );
        assert_eq!(
            classify(200, &twiml::reject_busy()).unwrap(),
            Answer::Rejected(Refusal::Busy)
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
    fn parses_fixed_and_chunked_responses() {
        let fixed = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(fixed).unwrap(), (200, "hello".into()));
        let chunked =
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (503, "abcde".into()));
        assert!(parse_response(b"garbage").is_err());
    }
}
