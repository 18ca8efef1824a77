//! The TwiML documents the voice webhook answers with, and the media-stream URL they point Twilio at.
//! Every value is XML-escaped here, so callers may pass caller-controlled text such as `From`.

use thiserror::Error;
use url::Url;

const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Path of the Media Stream WebSocket (SPEC §3).
pub const STREAM_PATH: &str = "/twilio/stream";

/// `<Connect><Stream>`: a bidirectional media stream to `stream_url`, handing each of `parameters`
/// to the stream's `start` message as `customParameters`.
pub fn connect_stream(stream_url: &str, parameters: &[(&str, &str)]) -> String {
    let mut xml = String::with_capacity(128 + stream_url.len() + 48 * parameters.len());
    xml.push_str(DECLARATION);
    xml.push_str(r#"<Response><Connect><Stream url=""#);
    push_escaped(&mut xml, stream_url);
    xml.push_str(r#"">"#);
    for (name, value) in parameters {
        xml.push_str(r#"<Parameter name=""#);
        push_escaped(&mut xml, name);
        xml.push_str(r#"" value=""#);
        push_escaped(&mut xml, value);
        xml.push_str(r#""/>"#);
    }
    xml.push_str("</Stream></Connect></Response>");
    xml
}

/// `<Say>` the message, then either `<Redirect>` (POST) to `redirect_url` or `<Hangup/>`.
pub fn say_then(message: &str, redirect_url: Option<&str>) -> String {
    let mut xml = String::with_capacity(128 + message.len() + redirect_url.map_or(0, str::len));
    xml.push_str(DECLARATION);
    xml.push_str("<Response><Say>");
    push_escaped(&mut xml, message);
    xml.push_str("</Say>");
    match redirect_url {
        Some(url) => {
            xml.push_str(r#"<Redirect method="POST">"#);
            push_escaped(&mut xml, url);
            xml.push_str("</Redirect>");
        }
        None => xml.push_str("<Hangup/>"),
    }
    xml.push_str("</Response>");
    xml
}

/// `<Reject reason="busy"/>`: the caller hears a busy signal and the call is never answered or billed.
pub fn reject_busy() -> String {
    format!(r#"{DECLARATION}<Response><Reject reason="busy"/></Response>"#)
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamUrlError {
    #[error("public base URL {0:?} is not a valid absolute URL: {1}")]
    Invalid(String, url::ParseError),
    #[error("public base URL must be http or https, not {0:?}")]
    UnsupportedScheme(String),
    #[error("public base URL must not carry a query string or fragment")]
    QueryOrFragment,
    #[error("public base URL must not carry a user name or password")]
    Credentials,
}

/// The Media Stream URL for a service reachable at `public_base` (`https://calls.example.com`,
/// `http://127.0.0.1:8080/prefix/`): the same host and path prefix, `wss` for `https` and `ws` for
/// `http`, then [`STREAM_PATH`].
///
/// The result is normalised (lower-case scheme and host, no default port, path percent-encoded).
/// Twilio signs the handshake over the URL exactly as the TwiML gave it, so the webhook and the
/// handshake check should both use this function's output for the same base.
pub fn stream_url(public_base: &str) -> Result<String, StreamUrlError> {
    let base = Url::parse(public_base.trim())
        .map_err(|e| StreamUrlError::Invalid(public_base.to_owned(), e))?;
    let ws_scheme = match base.scheme() {
        "https" => "wss",
        "http" => "ws",
        other => return Err(StreamUrlError::UnsupportedScheme(other.to_owned())),
    };
    if base.query().is_some() || base.fragment().is_some() {
        return Err(StreamUrlError::QueryOrFragment);
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(StreamUrlError::Credentials);
    }
    // http(s) URLs always have a host, so `Url` has already rejected a missing one.
    let host = base.host_str().unwrap_or_default();
    let port = base.port().map(|p| format!(":{p}")).unwrap_or_default();
    let prefix = base.path().trim_end_matches('/');
    Ok(format!("{ws_scheme}://{host}{port}{prefix}{STREAM_PATH}"))
}

/// Appends `text` escaped for both XML text and double- or single-quoted attribute values.
///
/// Tab, CR and LF become character references so attribute-value normalisation cannot turn them
/// into spaces; characters XML 1.0 forbids even as references (other C0 controls, U+FFFE, U+FFFF)
/// are dropped, since no escaping could make a document containing them well-formed.
fn push_escaped(out: &mut String, text: &str) {
    let mut clean_from = 0;
    for (i, c) in text.char_indices() {
        let replacement = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&apos;",
            '\t' => "&#9;",
            '\n' => "&#10;",
            '\r' => "&#13;",
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => "",
            _ => continue,
        };
        out.push_str(&text[clean_from..i]);
        out.push_str(replacement);
        clean_from = i + c.len_utf8();
    }
    out.push_str(&text[clean_from..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        push_escaped(&mut out, text);
        out
    }

    #[test]
    fn escapes_the_five_xml_specials() {
        assert_eq!(escaped(r#""<&>'"#), "&quot;&lt;&amp;&gt;&apos;");
        assert_eq!(escaped("a&amp;b"), "a&amp;amp;b");
        assert_eq!(
            escaped("plain +1 (415) ü 電話 🚀"),
            "plain +1 (415) ü 電話 🚀"
        );
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn whitespace_is_kept_and_forbidden_characters_dropped() {
        assert_eq!(escaped("a\tb\nc\rd"), "a&#9;b&#10;c&#13;d");
        assert_eq!(
            escaped("a\u{0}b\u{1b}c\u{7f}d\u{fffe}e\u{ffff}"),
            "abc\u{7f}de"
        );
    }

    #[test]
    fn connect_stream_document() {
        assert_eq!(
            connect_stream("wss://calls.example.com/twilio/stream", &[]),
            format!(
                "{DECL}<Response><Connect><Stream url=\"wss://calls.example.com/twilio/stream\">\
                 </Stream></Connect></Response>"
            )
        );
        assert_eq!(
            connect_stream(
                "wss://h/twilio/stream?a=1&b=2",
                &[("CallSid", "CA123"), ("From", r#"x"<&>'y"#)]
            ),
            format!(
                "{DECL}<Response><Connect><Stream url=\"wss://h/twilio/stream?a=1&amp;b=2\">\
                 <Parameter name=\"CallSid\" value=\"CA123\"/>\
                 <Parameter name=\"From\" value=\"x&quot;&lt;&amp;&gt;&apos;y\"/>\
                 </Stream></Connect></Response>"
            )
        );
    }

    #[test]
    fn say_then_redirect_or_hangup() {
        assert_eq!(
            say_then("All lines are busy. <Try> \"later\" & 'soon'.", None),
            format!(
                "{DECL}<Response><Say>All lines are busy. &lt;Try&gt; &quot;later&quot; \
                 &amp; &apos;soon&apos;.</Say><Hangup/></Response>"
            )
        );
        assert_eq!(
            say_then("Please hold.", Some("https://h/twilio/voice?retry=1&x=2")),
            format!(
                "{DECL}<Response><Say>Please hold.</Say>\
                 <Redirect method=\"POST\">https://h/twilio/voice?retry=1&amp;x=2</Redirect>\
                 </Response>"
            )
        );
    }

    #[test]
    fn reject_busy_document() {
        assert_eq!(
            reject_busy(),
            format!("{DECL}<Response><Reject reason=\"busy\"/></Response>")
        );
    }

    #[test]
    fn stream_url_from_public_base() {
        for (base, expected) in [
            (
                "https://calls.example.com",
                "wss://calls.example.com/twilio/stream",
            ),
            (
                "https://calls.example.com/",
                "wss://calls.example.com/twilio/stream",
            ),
            (
                "https://calls.example.com:443/",
                "wss://calls.example.com/twilio/stream",
            ),
            (
                "https://calls.example.com:8443",
                "wss://calls.example.com:8443/twilio/stream",
            ),
            (
                "HTTPS://Calls.Example.COM",
                "wss://calls.example.com/twilio/stream",
            ),
            (
                "http://127.0.0.1:8080/prefix/",
                "ws://127.0.0.1:8080/prefix/twilio/stream",
            ),
            (
                "http://127.0.0.1:8080/prefix",
                "ws://127.0.0.1:8080/prefix/twilio/stream",
            ),
            (
                "http://localhost:80/a/b//",
                "ws://localhost/a/b/twilio/stream",
            ),
            ("http://[::1]:8080", "ws://[::1]:8080/twilio/stream"),
            (
                " https://calls.example.com\n",
                "wss://calls.example.com/twilio/stream",
            ),
        ] {
            assert_eq!(stream_url(base).as_deref(), Ok(expected), "{base}");
        }
    }

    #[test]
    fn stream_url_rejects_unusable_bases() {
        assert!(matches!(stream_url(""), Err(StreamUrlError::Invalid(..))));
        assert!(matches!(
            stream_url("calls.example.com"),
            Err(StreamUrlError::Invalid(..))
        ));
        assert!(matches!(
            stream_url("https://"),
            Err(StreamUrlError::Invalid(..))
        ));
        assert_eq!(
            stream_url("wss://calls.example.com"),
            Err(StreamUrlError::UnsupportedScheme("wss".into()))
        );
        assert_eq!(
            stream_url("ftp://calls.example.com"),
            Err(StreamUrlError::UnsupportedScheme("ftp".into()))
        );
        assert_eq!(
            stream_url("https://h/?x=1"),
            Err(StreamUrlError::QueryOrFragment)
        );
        assert_eq!(
            stream_url("https://h/#top"),
            Err(StreamUrlError::QueryOrFragment)
        );
        assert_eq!(
            stream_url("https://u:p@h/"),
            Err(StreamUrlError::Credentials)
        );
    }
}
