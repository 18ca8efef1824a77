//! The TwiML documents Twilio's requests are answered with (connect a stream, continue, fall back,
//! hang up, reject) and the URLs they name. Every value is XML-escaped here, caller text included.

use thiserror::Error;
use url::Url;

const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Path of the Media Stream WebSocket (docs/reference.md#endpoints).
pub const STREAM_PATH: &str = "/twilio/stream";

/// Path Twilio requests through `<Connect action>` once a stream has closed
/// (docs/reference.md#endpoints, #after-stream).
pub const AFTER_STREAM_PATH: &str = "/twilio/after-stream";

/// Path a waiting call comes back to (docs/reference.md#waiting-room).
pub const WAIT_PATH: &str = "/twilio/wait";

/// The `<Parameter>`s of a `<Stream>`, which reach the stream's `start` as `customParameters`
/// (docs/reference.md#media-stream, #after-stream), under the names voice-agent frameworks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamParameters<'a> {
    /// `CallSid`: always sent, so a stream names its call even where `start.callSid` is not read.
    pub call_sid: &'a str,
    /// `from_number`: the webhook's `From`; `None` or empty leaves the parameter out.
    pub from_number: Option<&'a str>,
    /// `to_number`: the webhook's `To`; `None` or empty leaves the parameter out.
    pub to_number: Option<&'a str>,
    /// `resumed`: which continuation of the call this stream is (1, 2, …); `None` for the first.
    pub resumed: Option<u32>,
}

impl<'a> StreamParameters<'a> {
    /// The first stream of a call, with no caller numbers.
    pub fn new(call_sid: &'a str) -> Self {
        Self {
            call_sid,
            from_number: None,
            to_number: None,
            resumed: None,
        }
    }
}

/// `<Connect action="…"><Stream url="…">` with [`StreamParameters`]: the voice webhook's answer,
/// and the answer that continues a call whose stream was lost (docs/reference.md#after-stream).
/// Twilio requests `action_url` when the stream closes while the call is still up.
pub fn connect(action_url: &str, stream_url: &str, parameters: &StreamParameters<'_>) -> String {
    connect_with(action_url, stream_url, parameters, None, &[])
}

/// [`connect`] with the stream's `token` parameter where there is one ([`crate::stream_token`],
/// docs/reference.md#stream-token: the token of this call's stream `parameters.resumed`, 0 for the
/// first), then `extra` `<Parameter>`s after the call's own (an outbound call's `parameters`,
/// docs/reference.md#outbound; their names are kept off the call's own).
pub fn connect_with(
    action_url: &str,
    stream_url: &str,
    parameters: &StreamParameters<'_>,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let StreamParameters {
        call_sid,
        from_number,
        to_number,
        resumed,
    } = *parameters;
    let resumed = resumed.map(|n| n.to_string());
    let parameters = [
        ("CallSid", Some(call_sid)),
        ("from_number", from_number.filter(|v| !v.is_empty())),
        ("to_number", to_number.filter(|v| !v.is_empty())),
        ("resumed", resumed.as_deref()),
        (crate::stream_token::PARAMETER, token),
    ];
    let mut xml = String::with_capacity(
        192 + action_url.len() + stream_url.len() + call_sid.len() + 48 * parameters.len(),
    );
    xml.push_str(DECLARATION);
    xml.push_str(r#"<Response><Connect action=""#);
    push_escaped(&mut xml, action_url);
    xml.push_str(r#""><Stream url=""#);
    push_escaped(&mut xml, stream_url);
    xml.push_str(r#"">"#);
    for (name, value) in parameters {
        if let Some(value) = value {
            push_parameter(&mut xml, name, value);
        }
    }
    for (name, value) in extra {
        push_parameter(&mut xml, name, value);
    }
    xml.push_str("</Stream></Connect></Response>");
    xml
}

/// `<Connect><Stream>` without an action: a bidirectional media stream to `stream_url`, handing
/// each of `parameters` to the stream's `start` message as `customParameters`. See [`connect`]
/// for the docs/reference.md#after-stream form.
pub fn connect_stream(stream_url: &str, parameters: &[(&str, &str)]) -> String {
    let mut xml = String::with_capacity(128 + stream_url.len() + 48 * parameters.len());
    xml.push_str(DECLARATION);
    xml.push_str(r#"<Response><Connect><Stream url=""#);
    push_escaped(&mut xml, stream_url);
    xml.push_str(r#"">"#);
    for (name, value) in parameters {
        push_parameter(&mut xml, name, value);
    }
    xml.push_str("</Stream></Connect></Response>");
    xml
}

fn push_parameter(xml: &mut String, name: &str, value: &str) {
    xml.push_str(r#"<Parameter name=""#);
    push_escaped(xml, name);
    xml.push_str(r#"" value=""#);
    push_escaped(xml, value);
    xml.push_str(r#""/>"#);
}

/// The fallback (docs/reference.md#after-stream, `/twilio/fallback`, the `twiml` reject mode):
/// `<Say>` the message, then `<Redirect>` (POST) to `redirect_url` if there is one, else
/// `<Hangup/>`.
pub fn fallback(message: &str, redirect_url: Option<&str>) -> String {
    say_then(message, redirect_url)
}

/// `<Hangup/>`: end the call (docs/reference.md#after-stream, a stream that ended with its call or
/// for bad input).
pub fn hangup() -> String {
    format!("{DECLARATION}<Response><Hangup/></Response>")
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

/// How fast `<Say>` speaks, for sizing a hold: about 150 words a minute.
pub const SPOKEN_WORDS_PER_SEC: f64 = 2.5;
/// The hold's `<Gather timeout>`: how long Twilio waits for a key after the hold's audio.
pub const HOLD_GATHER_TIMEOUT_SECS: u64 = 1;

/// About how long `<Say>` takes to speak `text`, in seconds.
pub fn spoken_secs(text: &str) -> f64 {
    text.split_whitespace().count() as f64 / SPOKEN_WORDS_PER_SEC
}

/// The `<Pause>` that makes a hold last about `poll_secs` after `spoken` seconds of speech (at
/// least one second), and how long the whole hold then lasts (speech, pause and the gather's
/// timeout): at least `poll_secs`, longer where the speech alone is longer.
pub fn hold_timing(poll_secs: u64, spoken: f64) -> (u64, f64) {
    let gather = HOLD_GATHER_TIMEOUT_SECS as f64;
    let pause = (poll_secs as f64 - gather - spoken).round().max(1.0) as u64;
    (pause, spoken + pause as f64 + gather)
}

/// What keeps a caller in the waiting room's line (docs/reference.md#waiting-room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold<'a> {
    /// `/twilio/wait`'s URL: the `<Gather action>` and the `<Redirect>`.
    pub wait_url: &'a str,
    /// Said first (the caller's position), if anything.
    pub say: Option<&'a str>,
    /// `<Play>`ed (hold music), else `<Pause length="pause_secs">`.
    pub music_url: Option<&'a str>,
    pub pause_secs: u64,
}

/// `<Gather numDigits="1" action="{wait}" timeout="1">` around `<Say>` and `<Play>`/`<Pause>`,
/// then `<Redirect method="POST">{wait}`: the caller hears the hold and comes back, with `Digits`
/// if they pressed a key.
pub fn hold(hold: &Hold<'_>) -> String {
    let mut xml = String::with_capacity(
        256 + 2 * hold.wait_url.len()
            + hold.say.map_or(0, str::len)
            + hold.music_url.map_or(0, str::len),
    );
    xml.push_str(DECLARATION);
    xml.push_str(r#"<Response><Gather numDigits="1" timeout=""#);
    xml.push_str(&HOLD_GATHER_TIMEOUT_SECS.to_string());
    xml.push_str(r#"" method="POST" action=""#);
    push_escaped(&mut xml, hold.wait_url);
    xml.push_str(r#"">"#);
    if let Some(say) = hold.say {
        xml.push_str("<Say>");
        push_escaped(&mut xml, say);
        xml.push_str("</Say>");
    }
    match hold.music_url {
        Some(url) => {
            xml.push_str("<Play>");
            push_escaped(&mut xml, url);
            xml.push_str("</Play>");
        }
        None => {
            xml.push_str(r#"<Pause length=""#);
            xml.push_str(&hold.pause_secs.max(1).to_string());
            xml.push_str(r#""/>"#);
        }
    }
    xml.push_str(r#"</Gather><Redirect method="POST">"#);
    push_escaped(&mut xml, hold.wait_url);
    xml.push_str("</Redirect></Response>");
    xml
}

/// The three URLs our TwiML names for a service reachable at `public_base`, built once: a
/// webhook that built them would parse the base twice and format three strings every time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrls {
    /// [`stream_url`].
    pub stream: String,
    /// [`after_stream_url`].
    pub after_stream: String,
    /// [`wait_url`].
    pub wait: String,
}

impl PublicUrls {
    /// # Errors
    ///
    /// `public_base` is not a usable base (see [`stream_url`]).
    pub fn new(public_base: &str) -> Result<Self, StreamUrlError> {
        Ok(Self {
            stream: stream_url(public_base)?,
            after_stream: after_stream_url(public_base)?,
            wait: wait_url(public_base)?,
        })
    }
}

/// `/twilio/wait`'s URL for a service reachable at `public_base`, built like
/// [`after_stream_url`]: Twilio signs its requests over it as the TwiML gave it.
pub fn wait_url(public_base: &str) -> Result<String, StreamUrlError> {
    let (https, authority_and_prefix) = normalised_base(public_base)?;
    let scheme = if https { "https" } else { "http" };
    Ok(format!("{scheme}://{authority_and_prefix}{WAIT_PATH}"))
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
    let (https, authority_and_prefix) = normalised_base(public_base)?;
    let scheme = if https { "wss" } else { "ws" };
    Ok(format!("{scheme}://{authority_and_prefix}{STREAM_PATH}"))
}

/// The `<Connect action>` URL for a service reachable at `public_base`: built like
/// [`stream_url`], keeping `https`/`http`, then [`AFTER_STREAM_PATH`]. Twilio signs its request
/// over this URL as the TwiML gave it.
pub fn after_stream_url(public_base: &str) -> Result<String, StreamUrlError> {
    let (https, authority_and_prefix) = normalised_base(public_base)?;
    let scheme = if https { "https" } else { "http" };
    Ok(format!(
        "{scheme}://{authority_and_prefix}{AFTER_STREAM_PATH}"
    ))
}

/// Whether `public_base` is https, and its normalised host, port and path prefix
/// (`calls.example.com:8443/prefix`, no trailing slash).
fn normalised_base(public_base: &str) -> Result<(bool, String), StreamUrlError> {
    let base = Url::parse(public_base.trim())
        .map_err(|e| StreamUrlError::Invalid(public_base.to_owned(), e))?;
    let https = match base.scheme() {
        "https" => true,
        "http" => false,
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
    Ok((https, format!("{host}{port}{prefix}")))
}

/// Appends `text` escaped for both XML text and double- or single-quoted attribute values.
///
/// Tab, CR and LF become character references so attribute-value normalisation cannot turn them
/// into spaces; characters XML 1.0 forbids even as references (other C0 controls, U+FFFE, U+FFFF)
/// are dropped, since no escaping could make a document containing them well-formed.
fn push_escaped(out: &mut String, text: &str) {
    // Nearly everything escaped here (URLs, SIDs, numbers, tokens) needs nothing: one pass over
    // the bytes, with no branch to vectorise badly, says so before the per-character walk.
    if !text
        .bytes()
        .fold(false, |any, byte| any | may_need_escaping(byte))
    {
        out.push_str(text);
        return;
    }
    push_escaped_by_char(out, text);
}

fn push_escaped_by_char(out: &mut String, text: &str) {
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

/// Whether `byte` may start something [`push_escaped`] changes: one of `&<>"'`, a C0 control,
/// or 0xEF, the first byte of U+FFFE and U+FFFF (and of other characters, which then pass
/// through the walk unchanged). `|`, not `||`: no branches.
fn may_need_escaping(byte: u8) -> bool {
    (byte == b'&')
        | (byte == b'<')
        | (byte == b'>')
        | (byte == b'"')
        | (byte == b'\'')
        | (byte < 0x20)
        | (byte == 0xEF)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    #[test]
    fn extra_parameters_follow_the_calls_own_escaped() {
        let xml = connect_with(
            "https://a/twilio/after-stream",
            "wss://a/twilio/stream",
            &StreamParameters::new("CA1"),
            None,
            &[("appointment", "42 & <b>")],
        );
        assert!(
            xml.ends_with(
                r#"<Parameter name="CallSid" value="CA1"/><Parameter name="appointment" value="42 &amp; &lt;b&gt;"/></Stream></Connect></Response>"#
            ),
            "{xml}"
        );
        assert_eq!(
            connect("x", "y", &StreamParameters::new("CA1")),
            connect_with("x", "y", &StreamParameters::new("CA1"), None, &[])
        );
    }

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
    fn hold_gathers_one_digit_around_the_message_then_comes_back() {
        let url = wait_url("https://calls.example.com/").unwrap();
        assert_eq!(url, "https://calls.example.com/twilio/wait");
        let silent = hold(&Hold {
            wait_url: &url,
            say: Some("You are number 2 & counting"),
            music_url: None,
            pause_secs: 3,
        });
        assert_eq!(
            silent,
            format!(
                "{DECL}<Response><Gather numDigits=\"1\" timeout=\"1\" method=\"POST\" \
                 action=\"{url}\"><Say>You are number 2 &amp; counting</Say><Pause length=\"3\"/>\
                 </Gather><Redirect method=\"POST\">{url}</Redirect></Response>"
            )
        );
        let music = hold(&Hold {
            wait_url: &url,
            say: None,
            music_url: Some("https://cdn.example.com/hold.mp3"),
            pause_secs: 0,
        });
        assert!(music.contains("<Play>https://cdn.example.com/hold.mp3</Play></Gather>"));
        assert!(!music.contains("<Say>"));
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
    fn connect_with_action_names_every_parameter_in_order() {
        let parameters = StreamParameters {
            call_sid: "CA123",
            from_number: Some("+1 (415) <555> & \"o'k\""),
            to_number: Some("+18005551212"),
            resumed: Some(2),
        };
        assert_eq!(
            connect(
                "https://h/p/twilio/after-stream?a=1&b=2",
                "wss://h/p/twilio/stream",
                &parameters
            ),
            format!(
                "{DECL}<Response><Connect action=\"https://h/p/twilio/after-stream?a=1&amp;b=2\">\
                 <Stream url=\"wss://h/p/twilio/stream\">\
                 <Parameter name=\"CallSid\" value=\"CA123\"/>\
                 <Parameter name=\"from_number\" value=\"+1 (415) &lt;555&gt; &amp; &quot;o&apos;k&quot;\"/>\
                 <Parameter name=\"to_number\" value=\"+18005551212\"/>\
                 <Parameter name=\"resumed\" value=\"2\"/>\
                 </Stream></Connect></Response>"
            )
        );
    }

    #[test]
    fn connect_with_carries_the_stream_token_last() {
        let xml = connect_with(
            "https://h/twilio/after-stream?stream=1",
            "wss://h/twilio/stream",
            &StreamParameters {
                resumed: Some(1),
                ..StreamParameters::new("CA1")
            },
            Some("tok-en_1"),
            &[],
        );
        assert!(
            xml.ends_with(
                "<Parameter name=\"resumed\" value=\"1\"/>\
                 <Parameter name=\"token\" value=\"tok-en_1\"/></Stream></Connect></Response>"
            ),
            "{xml}"
        );
    }

    #[test]
    fn connect_leaves_out_what_the_webhook_did_not_give() {
        let first = StreamParameters::new("CA1");
        assert_eq!(
            connect(
                "https://h/twilio/after-stream",
                "wss://h/twilio/stream",
                &first
            ),
            format!(
                "{DECL}<Response><Connect action=\"https://h/twilio/after-stream\">\
                 <Stream url=\"wss://h/twilio/stream\">\
                 <Parameter name=\"CallSid\" value=\"CA1\"/>\
                 </Stream></Connect></Response>"
            )
        );
        let empty_from = StreamParameters {
            from_number: Some(""),
            to_number: Some("+1\t2"),
            ..first
        };
        assert_eq!(
            connect("a", "b", &empty_from),
            format!(
                "{DECL}<Response><Connect action=\"a\"><Stream url=\"b\">\
                 <Parameter name=\"CallSid\" value=\"CA1\"/>\
                 <Parameter name=\"to_number\" value=\"+1&#9;2\"/>\
                 </Stream></Connect></Response>"
            )
        );
    }

    #[test]
    fn fallback_and_hangup_documents() {
        assert_eq!(
            fallback("Sorry & <goodbye>", None),
            format!("{DECL}<Response><Say>Sorry &amp; &lt;goodbye&gt;</Say><Hangup/></Response>")
        );
        assert_eq!(
            fallback("One moment.", Some("https://wa.example/x?to=1&y=\"2\"")),
            format!(
                "{DECL}<Response><Say>One moment.</Say>\
                 <Redirect method=\"POST\">https://wa.example/x?to=1&amp;y=&quot;2&quot;</Redirect>\
                 </Response>"
            )
        );
        assert_eq!(hangup(), format!("{DECL}<Response><Hangup/></Response>"));
    }

    #[test]
    fn after_stream_url_from_public_base() {
        for (base, expected) in [
            (
                "https://calls.example.com",
                "https://calls.example.com/twilio/after-stream",
            ),
            (
                "HTTPS://Calls.Example.COM:443/",
                "https://calls.example.com/twilio/after-stream",
            ),
            (
                "https://calls.example.com:8443/p/",
                "https://calls.example.com:8443/p/twilio/after-stream",
            ),
            (
                "http://127.0.0.1:8080/prefix",
                "http://127.0.0.1:8080/prefix/twilio/after-stream",
            ),
            ("http://[::1]:80", "http://[::1]/twilio/after-stream"),
        ] {
            assert_eq!(after_stream_url(base).as_deref(), Ok(expected), "{base}");
        }
        assert_eq!(
            after_stream_url("wss://h"),
            Err(StreamUrlError::UnsupportedScheme("wss".into()))
        );
        assert_eq!(
            after_stream_url("https://h/?x=1"),
            Err(StreamUrlError::QueryOrFragment)
        );
        assert_eq!(
            after_stream_url("https://u@h/"),
            Err(StreamUrlError::Credentials)
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

    /// The byte pre-check never changes the result: every ASCII byte and the characters around
    /// the forbidden U+FFFE / U+FFFF, alone and inside plain text, escape as the walk escapes them.
    #[test]
    fn the_fast_path_escapes_as_the_walk_does() {
        let mut chars: Vec<char> = (0u8..0x80).map(char::from).collect();
        chars.extend([
            '\u{e9}',
            '\u{20ac}',
            '\u{fffd}',
            '\u{fffe}',
            '\u{ffff}',
            '\u{1f600}',
        ]);
        for c in chars {
            for text in [
                c.to_string(),
                format!("wss://calls.example.com/{c}/twilio?x={c}"),
            ] {
                let (mut fast, mut walked) = (String::new(), String::new());
                push_escaped(&mut fast, &text);
                push_escaped_by_char(&mut walked, &text);
                assert_eq!(fast, walked, "{text:?}");
            }
        }
    }
}
