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
    /// Where the path begins: everything before (scheme, user, host, port) is the operator's text.
    path_start: usize,
    /// `ws://` to a host other than loopback: what the handshake carries crosses a network in
    /// the clear.
    plain_remote: bool,
}

/// A caller's value that would make a whole path segment `.` or `..`: a server or proxy on the
/// way resolves it, and the URL's path would change shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the value of {{{}}} would be a dot path segment", .0.name())]
pub struct DotSegment(pub Placeholder);

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
        // The scheme, user, host and port are the operator's alone: a caller's value there would
        // choose where the call (and BRIDGE_HEADERS' credentials) go.
        let path_start = raw.find("://").map_or(0, |scheme_end| {
            let authority = scheme_end + 3;
            raw[authority..]
                .find(['/', '?', '#'])
                .map_or(raw.len(), |end| authority + end)
        });
        // Every '{' opens a known placeholder by now.
        if let Some(open) = raw[..path_start].find('{') {
            let first = raw[open + 1..].split('}').next().unwrap_or_default();
            return Err(format!(
                "placeholder {{{first}}} in the scheme, host or port: a caller's value would choose \
                 where the call goes; placeholders belong in the path or the query"
            ));
        }
        let mut parsed = Self {
            template: raw.to_owned(),
            segments,
            path_start,
            plain_remote: false,
        };
        // Any value a call may bring must give a usable URL: try one.
        let sample = Url::parse(&parsed.render_unchecked(|_| "x"))
            .map_err(|err| format!("not a valid URL ({err})"))?;
        if !matches!(sample.scheme(), "ws" | "wss") || sample.host_str().is_none_or(str::is_empty) {
            return Err("expected a ws:// or wss:// URL".to_owned());
        }
        parsed.plain_remote = sample.scheme() == "ws"
            && match sample.host() {
                Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
                Some(url::Host::Domain(name)) => name != "localhost",
                None => true,
            };
        Ok(parsed)
    }

    /// `ws://` to a host other than loopback (`127.0.0.0/8`, `::1`, `localhost`).
    pub fn is_plain_remote(&self) -> bool {
        self.plain_remote
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The URL for one call: each placeholder replaced by its value, percent-encoded as one path
    /// segment or query value (empty where the call has none), so no value changes the URL's
    /// shape. A value that would make a whole path segment a dot segment (`..`) is refused.
    ///
    /// # Errors
    ///
    /// [`DotSegment`] naming the placeholder.
    pub fn render<'a>(&self, value: impl Fn(Placeholder) -> &'a str) -> Result<String, DotSegment> {
        let url = self.render_unchecked(value);
        // Values hold no '/', '?' or '#' once encoded, so the rendered path's segments are the
        // template's, one for one.
        let path_end = url[self.path_start..]
            .find(['?', '#'])
            .map_or(url.len(), |end| self.path_start + end);
        let template_path_end = self.template[self.path_start..]
            .find(['?', '#'])
            .map_or(self.template.len(), |end| self.path_start + end);
        let rendered = url[self.path_start..path_end].split('/');
        let templated = self.template[self.path_start..template_path_end].split('/');
        for (segment, template) in rendered.zip(templated) {
            if is_dot_segment(segment)
                && let Some(slot) = Placeholder::ALL
                    .into_iter()
                    .find(|p| template.contains(&format!("{{{}}}", p.name())))
            {
                return Err(DotSegment(slot));
            }
        }
        Ok(url)
    }

    fn render_unchecked<'a>(&self, value: impl Fn(Placeholder) -> &'a str) -> String {
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

/// `.` or `..`, also as the WHATWG URL parser (and proxies that decode first) read `%2e`.
fn is_dot_segment(segment: &str) -> bool {
    matches!(
        segment.to_ascii_lowercase().as_str(),
        "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e"
    )
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
            rendered.unwrap(),
            "wss://agent.example.com//ws?call=CA123&from=%2B1%20500%2F555%26x%3D1"
        );
        let plain = BridgeUrl::parse("ws://127.0.0.1:9000/media").unwrap();
        assert_eq!(plain.render(|_| "x").unwrap(), "ws://127.0.0.1:9000/media");
        assert_eq!(plain.template(), "ws://127.0.0.1:9000/media");
        let every = BridgeUrl::parse(
            "wss://agents.example.com/{tenant}/{call_sid}/{account_sid}/{from}/{to}",
        )
        .unwrap();
        assert_eq!(
            every.render(Placeholder::name).unwrap(),
            "wss://agents.example.com/tenant/call_sid/account_sid/from/to"
        );
    }

    #[test]
    fn no_value_changes_the_paths_shape() {
        let url =
            BridgeUrl::parse("ws://agent:9000/calls/{from}/media?to={to}&call={call_sid}").unwrap();
        let render = |from: &str, to: &str| {
            url.render(|p| match p {
                Placeholder::From => from,
                Placeholder::To => to,
                _ => "CA1",
            })
        };
        // Each value stays one segment, or one query value: no new segment, query or fragment.
        for (value, encoded) in [
            ("../../admin", "..%2F..%2Fadmin"),
            ("a/b", "a%2Fb"),
            ("%2F..%2F", "%252F..%252F"),
            ("x?admin=1", "x%3Fadmin%3D1"),
            ("x#frag", "x%23frag"),
            ("..\\..\\admin", "..%5C..%5Cadmin"),
            ("x;type=a", "x%3Btype%3Da"),
        ] {
            assert_eq!(
                render(value, value).unwrap(),
                format!("ws://agent:9000/calls/{encoded}/media?to={encoded}&call=CA1"),
                "{value}"
            );
        }
        // A whole segment of dots would be resolved on the way (`/calls/../media` is `/media`).
        for dots in [".", "..", ".%2e", "%2E%2e"] {
            assert_eq!(
                render(dots, "x"),
                if dots.contains('%') {
                    // Encoded again, '%' is no dot: `.%252e` is a plain segment.
                    Ok(format!(
                        "ws://agent:9000/calls/{}/media?to=x&call=CA1",
                        dots.replace('%', "%25")
                    ))
                } else {
                    Err(DotSegment(Placeholder::From))
                },
                "{dots}"
            );
        }
        // In the query dots are just text; two halves of one segment count together.
        assert!(render("x", "..").is_ok());
        let halves = BridgeUrl::parse("ws://agent/{from}{to}/media").unwrap();
        let dots = halves.render(|_| ".");
        assert_eq!(dots, Err(DotSegment(Placeholder::From)));
        // The operator's own dots are left alone.
        let own = BridgeUrl::parse("ws://agent/a/../{call_sid}").unwrap();
        assert_eq!(own.render(|_| "CA1").unwrap(), "ws://agent/a/../CA1");
    }

    #[test]
    fn bad_templates_say_why() {
        for (raw, why) in [
            ("wss://a/{callsid}", "unknown placeholder {callsid}"),
            ("wss://a/{call_sid", "without its '}'"),
            ("wss://a/call_sid}", "without its '{'"),
            ("https://a/x", "ws:// or wss://"),
            (
                "wss://{tenant}.a/x",
                "placeholder {tenant} in the scheme, host or port",
            ),
            (
                "ws://a:{to}/x",
                "placeholder {to} in the scheme, host or port",
            ),
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
