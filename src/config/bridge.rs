//! `MEDIA_HANDLER=bridge` settings (docs/reference.md#bridge): the agent's URL template and
//! handshake headers. Parsed whole at start-up, so a bad template or header stops the replica
//! before any call.

use std::fmt::Write as _;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use url::Url;

use super::Secret;

pub const DEFAULT_BRIDGE_CONNECT_TIMEOUT_SECS: u64 = 5;

/// Headers the WebSocket client writes itself; a second copy would break the handshake.
const HANDSHAKE_HEADERS: [&str; 5] = [
    "host",
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// `BRIDGE_URL`.
    pub url: BridgeUrl,
    /// `BRIDGE_HEADERS`, names lower-cased; the values are secrets (an `Authorization` token).
    pub headers: Vec<(HeaderName, Secret<HeaderValue>)>,
    /// `BRIDGE_CONNECT_TIMEOUT_SECS`.
    pub connect_timeout: Duration,
}

/// A call's value that `BRIDGE_URL` may hold as `{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    CallSid,
    AccountSid,
    From,
    To,
    Tenant,
}

impl Placeholder {
    pub const ALL: [Self; 5] = [
        Self::CallSid,
        Self::AccountSid,
        Self::From,
        Self::To,
        Self::Tenant,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::CallSid => "call_sid",
            Self::AccountSid => "account_sid",
            Self::From => "from",
            Self::To => "to",
            Self::Tenant => "tenant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Slot(Placeholder),
}

/// `BRIDGE_URL`: a `ws://`/`wss://` URL with optional placeholders, checked at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeUrl {
    template: String,
    segments: Vec<Segment>,
}

impl BridgeUrl {
    /// Parses the template; the reason on error names the bad placeholder or the URL's problem.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err("a '}' without its '{'".to_owned());
            }
            let close = rest[open..].find('}').ok_or("a '{' without its '}'")? + open;
            let name = &rest[open + 1..close];
            let slot = Placeholder::ALL
                .into_iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown placeholder {{{name}}}; known: {}",
                        Placeholder::ALL
                            .map(|p| format!("{{{}}}", p.name()))
                            .join(" ")
                    )
                })?;
            if open > 0 {
                segments.push(Segment::Text(rest[..open].to_owned()));
            }
            segments.push(Segment::Slot(slot));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        let parsed = Self {
            template: raw.to_owned(),
            segments,
        };
        // Any value a call may bring must give a usable URL: try one.
        let sample = Url::parse(&parsed.render(|_| "x"))
            .map_err(|err| format!("not a valid URL ({err})"))?;
        if !matches!(sample.scheme(), "ws" | "wss") || sample.host_str().is_none_or(str::is_empty) {
            return Err("expected a ws:// or wss:// URL".to_owned());
        }
        Ok(parsed)
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The URL for one call: each placeholder replaced by its value, percent-encoded (empty
    /// where the call has none).
    pub fn render<'a>(&self, value: impl Fn(Placeholder) -> &'a str) -> String {
        let mut url = String::with_capacity(self.template.len() + 32);
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => url.push_str(text),
                Segment::Slot(slot) => percent_encode(value(*slot), &mut url),
            }
        }
        url
    }
}

/// Everything but RFC 3986's unreserved characters is encoded, so a value cannot end a path
/// segment, open a query or change the host.
fn percent_encode(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// `BRIDGE_HEADERS`: a JSON object of string values. The reason on error names at most a header
/// name, never a value or a piece of the JSON.
pub fn parse_headers(raw: &str) -> Result<Vec<(HeaderName, Secret<HeaderValue>)>, String> {
    // Parsed as a Value first: serde's typed errors would quote the offending value.
    let json: serde_json::Value = serde_json::from_str(raw).map_err(|err| {
        format!(
            "not valid JSON (line {}, column {})",
            err.line(),
            err.column()
        )
    })?;
    let serde_json::Value::Object(map) = json else {
        return Err(r#"expected a JSON object, e.g. {"Authorization":"Bearer …"}"#.to_owned());
    };
    let mut headers: Vec<(HeaderName, Secret<HeaderValue>)> = Vec::with_capacity(map.len());
    for (name, value) in map {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name"))?;
        if HANDSHAKE_HEADERS.contains(&header.as_str()) {
            return Err(format!("{name:?} is set by the WebSocket handshake itself"));
        }
        if headers.iter().any(|(seen, _)| *seen == header) {
            return Err(format!("{name:?} is given twice"));
        }
        let serde_json::Value::String(value) = value else {
            return Err(format!("the value of {name:?} is not a string"));
        };
        let value = HeaderValue::from_str(&value).map_err(|_| {
            format!("the value of {name:?} is not a valid header value (control characters?)")
        })?;
        headers.push((header, Secret::new(value)));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_encoded() {
        let url =
            BridgeUrl::parse("wss://agent.example.com/{tenant}/ws?call={call_sid}&from={from}")
                .unwrap();
        let rendered = url.render(|p| match p {
            Placeholder::CallSid => "CA123",
            Placeholder::From => "+1 500/555&x=1",
            Placeholder::Tenant => "",
            _ => "unused",
        });
        assert_eq!(
            rendered,
            "wss://agent.example.com//ws?call=CA123&from=%2B1%20500%2F555%26x%3D1"
        );
        let plain = BridgeUrl::parse("ws://127.0.0.1:9000/media").unwrap();
        assert_eq!(plain.render(|_| "x"), "ws://127.0.0.1:9000/media");
        assert_eq!(plain.template(), "ws://127.0.0.1:9000/media");
        let every = BridgeUrl::parse(
            "wss://{tenant}.agents.example.com/{call_sid}/{account_sid}/{from}/{to}",
        )
        .unwrap();
        assert_eq!(
            every.render(Placeholder::name),
            "wss://tenant.agents.example.com/call_sid/account_sid/from/to"
        );
    }

    #[test]
    fn bad_templates_say_why() {
        for (raw, why) in [
            ("wss://a/{callsid}", "unknown placeholder {callsid}"),
            ("wss://a/{call_sid", "without its '}'"),
            ("wss://a/call_sid}", "without its '{'"),
            ("https://a/x", "ws:// or wss://"),
            ("not a url", "not a valid URL"),
        ] {
            let reason = BridgeUrl::parse(raw).expect_err(raw);
            assert!(reason.contains(why), "{raw}: {reason}");
        }
    }

    #[test]
    fn headers_parse_into_names_and_secret_values() {
        let headers =
            parse_headers(r#"{"Authorization":"Bearer s3cret","X-Tenant":"acme"}"#).unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["authorization", "x-tenant"]);
        assert_eq!(headers[0].1.expose(), "Bearer s3cret");
        assert!(!format!("{headers:?}").contains("s3cret"));
        assert!(parse_headers("{}").unwrap().is_empty());
    }

    #[test]
    fn bad_headers_never_echo_a_value() {
        for raw in [
            r#"{"Authorization":"Bearer s3cret""#,
            r#"["Bearer s3cret"]"#,
            r#""Bearer s3cret""#,
            r#"{"Authorization":1234567}"#,
            r#"{"Authorization":"Bearer s3cret\nX: y"}"#,
            r#"{"Bad Name":"Bearer s3cret"}"#,
            r#"{"Host":"s3cret"}"#,
            r#"{"X-A":"s3cret","x-a":"s3cret"}"#,
            "Bearer s3cret",
        ] {
            let reason = parse_headers(raw).expect_err(raw);
            assert!(
                !reason.contains("s3cret") && !reason.contains("1234567"),
                "{raw}: {reason}"
            );
        }
    }
}
