//! The JSON messages of Twilio's bidirectional Media Streams (SPEC §5): inbound events and outbound frames.
//! `media` is the hot path (one per 20 ms per call): parsing borrows from the frame, building reuses a buffer.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use bytes::BytesMut;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use thiserror::Error;

use super::fast_media;

/// Longest unknown event name kept in [`ParseError::UnknownEvent`]; the rest is cut so a hostile
/// frame cannot make every log line or error as large as itself.
pub const MAX_REPORTED_EVENT_LEN: usize = 64;

/// One message from Twilio. Strings borrow from the frame text unless JSON escapes forced a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    Connected(Connected<'a>),
    Start(Start<'a>),
    Media(Media<'a>),
    Mark(Mark<'a>),
    Dtmf(Dtmf<'a>),
    Stop(Stop<'a>),
}

impl Inbound<'_> {
    /// The `event` name, for logs and metric labels.
    pub fn event(&self) -> &'static str {
        match self {
            Self::Connected(_) => "connected",
            Self::Start(_) => "start",
            Self::Media(_) => "media",
            Self::Mark(_) => "mark",
            Self::Dtmf(_) => "dtmf",
            Self::Stop(_) => "stop",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected<'a> {
    pub protocol: Option<Cow<'a, str>>,
    pub version: Option<Cow<'a, str>>,
}

/// Sent once, right after `connected`; the only message that names the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start<'a> {
    pub sequence_number: Option<u64>,
    /// `start.streamSid`, or the top-level `streamSid` if only that is present.
    pub stream_sid: Cow<'a, str>,
    pub call_sid: Cow<'a, str>,
    pub account_sid: Option<Cow<'a, str>>,
    pub tracks: Vec<Track>,
    pub media_format: MediaFormat<'a>,
    /// The `<Parameter>`s of the TwiML `<Stream>`. Non-string values are skipped.
    pub custom_parameters: BTreeMap<String, String>,
}

/// `start.mediaFormat`; for Twilio voice always `audio/x-mulaw`, 8000 Hz, 1 channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaFormat<'a> {
    pub encoding: Option<Cow<'a, str>>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u32>,
}

/// One chunk of audio, base64 in `payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media<'a> {
    pub sequence_number: Option<u64>,
    pub stream_sid: Option<Cow<'a, str>>,
    pub track: Option<Track>,
    pub chunk: Option<u64>,
    /// Milliseconds since the stream started.
    pub timestamp: Option<u64>,
    pub payload: Cow<'a, str>,
}

/// Twilio finished playing the audio sent before the `mark` of this name (or it was cleared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark<'a> {
    pub sequence_number: Option<u64>,
    pub stream_sid: Option<Cow<'a, str>>,
    pub name: Cow<'a, str>,
}

/// A key the caller pressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtmf<'a> {
    pub sequence_number: Option<u64>,
    pub stream_sid: Option<Cow<'a, str>>,
    pub track: Option<Track>,
    pub digit: Cow<'a, str>,
}

/// The stream ended (the call hung up or the TwiML moved on). Its body is optional here: a stop
/// is a stop even if Twilio leaves out who it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop<'a> {
    pub sequence_number: Option<u64>,
    pub stream_sid: Option<Cow<'a, str>>,
    pub account_sid: Option<Cow<'a, str>>,
    pub call_sid: Option<Cow<'a, str>>,
}

/// Which side of the call audio or a digit came from. `media` says `inbound`; `dtmf` says
/// `inbound_track`; both read as `Inbound`. A value Twilio adds later reads as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Track {
    #[serde(rename = "inbound", alias = "inbound_track")]
    Inbound,
    #[serde(rename = "outbound", alias = "outbound_track")]
    Outbound,
    #[serde(other)]
    Other,
}

#[derive(Debug, Error)]
pub enum ParseError {
    /// Not JSON, not an object, or a field of the wrong type.
    #[error("frame is not a Media Streams message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Well-formed JSON lacking a part this event cannot do without.
    #[error("`{event}` message has no `{field}`")]
    MissingField {
        event: &'static str,
        field: &'static str,
    },
    /// A message with an `event` this protocol version does not define (at most
    /// [`MAX_REPORTED_EVENT_LEN`] bytes of it).
    #[error("unknown Media Streams event {0:?}")]
    UnknownEvent(String),
}

impl ParseError {
    /// Label for the dropped-message counter: `malformed` or `unknown_event`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::MissingField { .. } => "malformed",
            Self::UnknownEvent(_) => "unknown_event",
        }
    }
}

/// Parses one text frame. Fields this crate does not use are skipped unread. A `media` frame as
/// Twilio sends it is parsed without allocating; only a string with JSON escapes (copied to
/// unescape it) or an unknown field holding an object or array (serde_json keeps a nesting stack
/// while skipping it) costs an allocation.
pub fn parse(text: &str) -> Result<Inbound<'_>, ParseError> {
    // Fifty `media` frames a second per call: a plain one is read by a one-pass scanner (a fifth
    // of serde's instructions); everything else, and every error, by serde below.
    if let Some(media) = fast_media::parse(text) {
        return Ok(Inbound::Media(media));
    }
    parse_full(text)
}

/// The full parser: any message, any valid JSON spelling, every error.
pub(crate) fn parse_full(text: &str) -> Result<Inbound<'_>, ParseError> {
    // One flat pass over the frame: an internally tagged enum would buffer the whole object first.
    let wire: Wire<'_> = serde_json::from_str(text)?;
    let Wire {
        event,
        sequence_number,
        stream_sid,
        protocol,
        version,
        start,
        media,
        mark,
        dtmf,
        stop,
    } = wire;
    let missing = |event, field| ParseError::MissingField { event, field };
    match &*event {
        "media" => {
            let media = media.ok_or(missing("media", "media"))?;
            Ok(Inbound::Media(Media {
                sequence_number,
                stream_sid,
                track: media.track,
                chunk: media.chunk,
                timestamp: media.timestamp,
                payload: media.payload,
            }))
        }
        "start" => {
            let start = start.ok_or(missing("start", "start"))?;
            Ok(Inbound::Start(Start {
                sequence_number,
                stream_sid: start
                    .stream_sid
                    .or(stream_sid)
                    .ok_or(missing("start", "start.streamSid"))?,
                call_sid: start.call_sid.ok_or(missing("start", "start.callSid"))?,
                account_sid: start.account_sid,
                tracks: start.tracks,
                media_format: start
                    .media_format
                    .map(|f| MediaFormat {
                        encoding: f.encoding,
                        sample_rate: f.sample_rate.and_then(|v| u32::try_from(v).ok()),
                        channels: f.channels.and_then(|v| u32::try_from(v).ok()),
                    })
                    .unwrap_or_default(),
                custom_parameters: start.custom_parameters,
            }))
        }
        "mark" => Ok(Inbound::Mark(Mark {
            sequence_number,
            stream_sid,
            name: mark.ok_or(missing("mark", "mark"))?.name,
        })),
        "dtmf" => {
            let dtmf = dtmf.ok_or(missing("dtmf", "dtmf"))?;
            Ok(Inbound::Dtmf(Dtmf {
                sequence_number,
                stream_sid,
                track: dtmf.track,
                digit: dtmf.digit,
            }))
        }
        "stop" => {
            let stop = stop.unwrap_or_default();
            Ok(Inbound::Stop(Stop {
                sequence_number,
                stream_sid,
                account_sid: stop.account_sid,
                call_sid: stop.call_sid,
            }))
        }
        "connected" => Ok(Inbound::Connected(Connected { protocol, version })),
        other => Err(ParseError::UnknownEvent(truncated(other).to_owned())),
    }
}

fn truncated(text: &str) -> &str {
    let mut end = text.len().min(MAX_REPORTED_EVENT_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Where an outbound message is built: a `String`, or the `BytesMut` the stream loop reuses so
/// that handing a frame to the socket allocates nothing.
pub trait TextBuf {
    fn clear(&mut self);
    fn reserve(&mut self, additional: usize);
    fn push_str(&mut self, text: &str);
}

impl TextBuf for String {
    fn clear(&mut self) {
        String::clear(self);
    }

    fn reserve(&mut self, additional: usize) {
        String::reserve(self, additional);
    }

    fn push_str(&mut self, text: &str) {
        String::push_str(self, text);
    }
}

impl TextBuf for BytesMut {
    fn clear(&mut self) {
        BytesMut::clear(self);
    }

    fn reserve(&mut self, additional: usize) {
        BytesMut::reserve(self, additional);
    }

    fn push_str(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

/// Replaces `buf` with `{"event":"media","streamSid":…,"media":{"payload":…}}`: audio for the caller.
/// Once `buf` has grown to a frame's size, building further frames allocates nothing.
pub fn media(buf: &mut impl TextBuf, stream_sid: &str, payload_b64: &str) {
    buf.clear();
    buf.reserve(60 + stream_sid.len() + payload_b64.len());
    buf.push_str(r#"{"event":"media","streamSid":"#);
    push_json_str(buf, stream_sid);
    buf.push_str(r#","media":{"payload":"#);
    push_json_str(buf, payload_b64);
    buf.push_str("}}");
}

/// Replaces `buf` with `{"event":"mark","streamSid":…,"mark":{"name":…}}`: Twilio echoes the mark
/// back once the audio sent before it has played.
pub fn mark(buf: &mut impl TextBuf, stream_sid: &str, name: &str) {
    buf.clear();
    buf.reserve(60 + stream_sid.len() + name.len());
    buf.push_str(r#"{"event":"mark","streamSid":"#);
    push_json_str(buf, stream_sid);
    buf.push_str(r#","mark":{"name":"#);
    push_json_str(buf, name);
    buf.push_str("}}");
}

/// Replaces `buf` with `{"event":"clear","streamSid":…}`: drop the audio Twilio has buffered and
/// answer all pending marks.
pub fn clear(buf: &mut impl TextBuf, stream_sid: &str) {
    buf.clear();
    buf.reserve(40 + stream_sid.len());
    buf.push_str(r#"{"event":"clear","streamSid":"#);
    push_json_str(buf, stream_sid);
    buf.push_str("}");
}

/// Appends `text` as a JSON string literal, escaped exactly as `serde_json` escapes it.
fn push_json_str(out: &mut impl TextBuf, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\"");
    // Payloads (base64) and SIDs never need escaping: one word-at-a-time scan says so, and the
    // text is copied whole instead of byte by byte.
    if fast_media::first_special(text.as_bytes()).is_none() {
        out.push_str(text);
        out.push_str("\"");
        return;
    }
    let mut clean_from = 0;
    // Every byte that needs escaping is ASCII, so each `i` below is a char boundary.
    for (i, byte) in text.bytes().enumerate() {
        let short = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[clean_from..i]);
        if short.is_empty() {
            let escape = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ];
            // Six ASCII bytes: always UTF-8.
            out.push_str(std::str::from_utf8(&escape).unwrap_or_default());
        } else {
            out.push_str(short);
        }
        clean_from = i + 1;
    }
    out.push_str(&text[clean_from..]);
    out.push_str("\"");
}

/// Every field of every inbound event, so one pass reads any of them; the event picks what counts.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, deserialize_with = "lenient_u64")]
    sequence_number: Option<u64>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    protocol: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    start: Option<WireStart<'a>>,
    #[serde(default, borrow)]
    media: Option<WireMedia<'a>>,
    #[serde(default, borrow)]
    mark: Option<WireMark<'a>>,
    #[serde(default, borrow)]
    dtmf: Option<WireDtmf<'a>>,
    #[serde(default, borrow)]
    stop: Option<WireStop<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStart<'a> {
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    account_sid: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    call_sid: Option<Cow<'a, str>>,
    #[serde(default)]
    tracks: Vec<Track>,
    #[serde(default, borrow)]
    media_format: Option<WireMediaFormat<'a>>,
    #[serde(default, deserialize_with = "string_map")]
    custom_parameters: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMediaFormat<'a> {
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    encoding: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient_u64")]
    sample_rate: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    channels: Option<u64>,
}

#[derive(Deserialize)]
struct WireMedia<'a> {
    #[serde(default)]
    track: Option<Track>,
    #[serde(default, deserialize_with = "lenient_u64")]
    chunk: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    timestamp: Option<u64>,
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct WireMark<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct WireDtmf<'a> {
    #[serde(default)]
    track: Option<Track>,
    #[serde(borrow)]
    digit: Cow<'a, str>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStop<'a> {
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    account_sid: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    call_sid: Option<Cow<'a, str>>,
}

/// A counter Twilio sends as a decimal string; a number is taken too, and anything else
/// (negative, fractional, not a number, wrong type) becomes `None` rather than failing the frame.
fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    deserializer.deserialize_any(LenientU64)
}

struct LenientU64;

impl<'de> Visitor<'de> for LenientU64 {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer as a number or a string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).ok())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.parse().ok())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// `Option<Cow<str>>` that borrows: serde's own impl always copies the string into `Owned`.
fn opt_cow<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    deserializer.deserialize_option(OptCow)
}

struct OptCow;

impl<'de> Visitor<'de> for OptCow {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(CowStr).map(Some)
    }
}

struct CowStr;

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// `customParameters`: string values kept, others skipped, `null` read as empty, so one odd
/// parameter cannot make the `start` (and with it the call) fail.
fn string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    deserializer.deserialize_option(StringMap)
}

struct StringMap;

impl<'de> Visitor<'de> for StringMap {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of strings or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            if let MaybeString(Some(value)) = map.next_value()? {
                out.insert(name, value);
            }
        }
        Ok(out)
    }
}

/// A string, or `None` for any other JSON value (which is skipped unread).
struct MaybeString(Option<String>);

impl<'de> Deserialize<'de> for MaybeString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(MaybeStringVisitor)
            .map(MaybeString)
    }
}

struct MaybeStringVisitor;

impl<'de> Visitor<'de> for MaybeStringVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";
    const CALL: &str = "CA0123456789abcdef0123456789abcdef";
    const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
    /// 20 ms of μ-law silence is 160 bytes of 0xff; this is a shorter real-looking chunk.
    const PAYLOAD: &str = "fn5+fn5+fn5+/v7+/v7+/v7+/v7+fn5+fn5+fn5+fv7+/v7+";

    fn media_of(text: &str) -> Media<'_> {
        match parse(text) {
            Ok(Inbound::Media(m)) => m,
            other => panic!("expected media, got {other:?}"),
        }
    }

    #[test]
    fn connected() {
        let msg = parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap();
        assert_eq!(msg.event(), "connected");
        assert_eq!(
            msg,
            Inbound::Connected(Connected {
                protocol: Some("Call".into()),
                version: Some("1.0.0".into())
            })
        );
        assert_eq!(
            parse(r#"{"event":"connected"}"#).unwrap(),
            Inbound::Connected(Connected {
                protocol: None,
                version: None
            })
        );
    }

    #[test]
    fn start_as_twilio_sends_it() {
        let text = format!(
            r#"{{
  "event": "start",
  "sequenceNumber": "1",
  "start": {{
    "accountSid": "{ACCOUNT}",
    "streamSid": "{STREAM}",
    "callSid": "{CALL}",
    "tracks": [ "inbound" ],
    "mediaFormat": {{ "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 }},
    "customParameters": {{ "FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob" }}
  }},
  "streamSid": "{STREAM}"
}}"#
        );
        let Inbound::Start(start) = parse(&text).unwrap() else {
            panic!("not a start")
        };
        assert_eq!(start.sequence_number, Some(1));
        assert_eq!(start.stream_sid, STREAM);
        assert_eq!(start.call_sid, CALL);
        assert_eq!(start.account_sid.as_deref(), Some(ACCOUNT));
        assert!(matches!(start.call_sid, Cow::Borrowed(_)));
        assert_eq!(start.tracks, vec![Track::Inbound]);
        assert_eq!(
            start.media_format,
            MediaFormat {
                encoding: Some("audio/x-mulaw".into()),
                sample_rate: Some(8000),
                channels: Some(1)
            }
        );
        assert_eq!(start.custom_parameters.len(), 3);
        assert_eq!(start.custom_parameters["RemoteParty"], "Bob");
    }

    #[test]
    fn start_tolerates_variations() {
        // Numbers as strings, both tracks, an unknown track, odd parameter values, the stream SID
        // only at the top level, no account, unknown fields.
        let text = format!(
            r#"{{"event":"start","sequenceNumber":1,"streamSid":"{STREAM}","start":{{
                "callSid":"{CALL}","tracks":["inbound","outbound","mixed"],
                "mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":"8000","channels":"x"}},
                "customParameters":{{"a":"1","n":2,"o":{{"k":[1]}},"z":null,"e":""}},
                "futureField":{{"x":[1,2,3]}}}}}}"#
        );
        let Inbound::Start(start) = parse(&text).unwrap() else {
            panic!("not a start")
        };
        assert_eq!(start.sequence_number, Some(1));
        assert_eq!(start.stream_sid, STREAM);
        assert_eq!(start.account_sid, None);
        assert_eq!(
            start.tracks,
            vec![Track::Inbound, Track::Outbound, Track::Other]
        );
        assert_eq!(start.media_format.sample_rate, Some(8000));
        assert_eq!(start.media_format.channels, None);
        let params: Vec<_> = start.custom_parameters.iter().collect();
        assert_eq!(
            params,
            [
                (&"a".to_owned(), &"1".to_owned()),
                (&"e".into(), &"".into())
            ]
        );

        let minimal = format!(
            r#"{{"event":"start","start":{{"streamSid":"{STREAM}","callSid":"{CALL}","customParameters":null}}}}"#
        );
        let Inbound::Start(start) = parse(&minimal).unwrap() else {
            panic!("not a start")
        };
        assert_eq!(start.sequence_number, None);
        assert!(start.tracks.is_empty());
        assert_eq!(start.media_format, MediaFormat::default());
        assert!(start.custom_parameters.is_empty());
    }

    #[test]
    fn start_without_its_identities_is_refused() {
        let no_call = format!(r#"{{"event":"start","start":{{"streamSid":"{STREAM}"}}}}"#);
        assert!(matches!(
            parse(&no_call),
            Err(ParseError::MissingField {
                event: "start",
                field: "start.callSid"
            })
        ));
        let no_stream = format!(r#"{{"event":"start","start":{{"callSid":"{CALL}"}}}}"#);
        assert!(matches!(
            parse(&no_stream),
            Err(ParseError::MissingField {
                event: "start",
                field: "start.streamSid"
            })
        ));
        let no_body = format!(r#"{{"event":"start","streamSid":"{STREAM}"}}"#);
        let err = parse(&no_body).unwrap_err();
        assert!(matches!(
            err,
            ParseError::MissingField {
                event: "start",
                field: "start"
            }
        ));
        assert_eq!(err.reason(), "malformed");
    }

    #[test]
    fn media_as_twilio_sends_it() {
        let text = format!(
            r#"{{"event":"media","sequenceNumber":"3","media":{{"track":"inbound","chunk":"1","timestamp":"5","payload":"{PAYLOAD}"}},"streamSid":"{STREAM}"}}"#
        );
        let media = media_of(&text);
        assert_eq!(
            media,
            Media {
                sequence_number: Some(3),
                stream_sid: Some(STREAM.into()),
                track: Some(Track::Inbound),
                chunk: Some(1),
                timestamp: Some(5),
                payload: PAYLOAD.into(),
            }
        );
        // The hot path borrows every string from the frame.
        assert!(matches!(media.payload, Cow::Borrowed(_)));
        assert!(matches!(media.stream_sid, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn media_counters_are_read_leniently() {
        let frame = |seq: &str, chunk: &str, ts: &str| {
            format!(
                r#"{{"event":"media","sequenceNumber":{seq},"streamSid":"{STREAM}","media":{{"track":"outbound","chunk":{chunk},"timestamp":{ts},"payload":"AA=="}}}}"#
            )
        };
        let cases = [
            (("42", "7", "140"), (Some(42), Some(7), Some(140))),
            (
                ("\"42\"", "\"7\"", "\"140\""),
                (Some(42), Some(7), Some(140)),
            ),
            (
                ("\"18446744073709551615\"", "0", "\"0\""),
                (Some(u64::MAX), Some(0), Some(0)),
            ),
            (("\"abc\"", "-1", "1.5"), (None, None, None)),
            (("null", "\"\"", "\" 5\""), (None, None, None)),
            (("true", "[1,2]", "{\"n\":1}"), (None, None, None)),
            (
                ("\"18446744073709551616\"", "1e3", "\"-3\""),
                (None, None, None),
            ),
        ];
        for ((seq, chunk, ts), expected) in cases {
            let text = frame(seq, chunk, ts);
            let media = media_of(&text);
            assert_eq!(
                (media.sequence_number, media.chunk, media.timestamp),
                expected,
                "{text}"
            );
            assert_eq!(media.track, Some(Track::Outbound));
        }
    }

    #[test]
    fn media_optional_fields_may_be_missing() {
        let media = media_of(r#"{"event":"media","media":{"payload":""}}"#);
        assert_eq!(
            media,
            Media {
                sequence_number: None,
                stream_sid: None,
                track: None,
                chunk: None,
                timestamp: None,
                payload: "".into(),
            }
        );
    }

    #[test]
    fn escaped_strings_are_unescaped_into_owned_copies() {
        let media = media_of(
            r#"{"event":"media","streamSid":"MZ\u0031","media":{"payload":"ab\/cd+ef=="}}"#,
        );
        assert_eq!(media.payload, "ab/cd+ef==");
        assert!(matches!(media.payload, Cow::Owned(_)));
        assert_eq!(media.stream_sid.as_deref(), Some("MZ1"));
        // The event name itself may be escaped.
        assert!(matches!(
            parse(r#"{"\u0065vent":"\u006dedia","media":{"payload":"AA=="}}"#),
            Ok(Inbound::Media(_))
        ));
    }

    #[test]
    fn media_without_payload_is_malformed() {
        let err = parse(r#"{"event":"media","media":{"track":"inbound"}}"#).unwrap_err();
        assert!(matches!(err, ParseError::Malformed(_)), "{err:?}");
        assert_eq!(err.reason(), "malformed");
        let err = parse(r#"{"event":"media","media":{"payload":12}}"#).unwrap_err();
        assert!(matches!(err, ParseError::Malformed(_)), "{err:?}");
        assert!(matches!(
            parse(r#"{"event":"media","streamSid":"MZ1"}"#),
            Err(ParseError::MissingField {
                event: "media",
                field: "media"
            })
        ));
    }

    #[test]
    fn mark_dtmf_stop() {
        let mark = format!(
            r#"{{"event":"mark","sequenceNumber":"4","streamSid":"{STREAM}","mark":{{"name":"my label"}}}}"#
        );
        assert_eq!(
            parse(&mark).unwrap(),
            Inbound::Mark(Mark {
                sequence_number: Some(4),
                stream_sid: Some(STREAM.into()),
                name: "my label".into()
            })
        );

        let dtmf = format!(
            r#"{{"event":"dtmf","streamSid":"{STREAM}","sequenceNumber":"5","dtmf":{{"track":"inbound_track","digit":"1"}}}}"#
        );
        assert_eq!(
            parse(&dtmf).unwrap(),
            Inbound::Dtmf(Dtmf {
                sequence_number: Some(5),
                stream_sid: Some(STREAM.into()),
                track: Some(Track::Inbound),
                digit: "1".into()
            })
        );

        let stop = format!(
            r#"{{"event":"stop","sequenceNumber":"5","streamSid":"{STREAM}","stop":{{"accountSid":"{ACCOUNT}","callSid":"{CALL}"}}}}"#
        );
        assert_eq!(
            parse(&stop).unwrap(),
            Inbound::Stop(Stop {
                sequence_number: Some(5),
                stream_sid: Some(STREAM.into()),
                account_sid: Some(ACCOUNT.into()),
                call_sid: Some(CALL.into())
            })
        );
        assert_eq!(
            parse(r#"{"event":"stop"}"#).unwrap(),
            Inbound::Stop(Stop {
                sequence_number: None,
                stream_sid: None,
                account_sid: None,
                call_sid: None
            })
        );

        assert!(matches!(
            parse(r#"{"event":"mark","mark":{}}"#),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse(r#"{"event":"dtmf"}"#),
            Err(ParseError::MissingField {
                event: "dtmf",
                field: "dtmf"
            })
        ));
    }

    #[test]
    fn unknown_events_are_their_own_error() {
        let err = parse(r#"{"event":"closed","streamSid":"MZ1","closed":{"why":1}}"#).unwrap_err();
        assert!(
            matches!(&err, ParseError::UnknownEvent(e) if e == "closed"),
            "{err:?}"
        );
        assert_eq!(err.reason(), "unknown_event");
        // Case matters, as in Twilio's protocol.
        assert!(matches!(
            parse(r#"{"event":"Media","media":{"payload":""}}"#),
            Err(ParseError::UnknownEvent(e)) if e == "Media"
        ));
        // A huge name is cut, on a character boundary.
        let long = format!(r#"{{"event":"{}"}}"#, "é".repeat(1000));
        let Err(ParseError::UnknownEvent(name)) = parse(&long) else {
            panic!("expected unknown event")
        };
        assert_eq!(name, "é".repeat(MAX_REPORTED_EVENT_LEN / 2));
    }

    #[test]
    fn non_messages_are_malformed() {
        for text in [
            "",
            "   ",
            "hello",
            "{",
            "[]",
            "null",
            "42",
            "\"media\"",
            r#"{"event":5}"#,
            r#"{"event":null}"#,
            r#"{"no":"event"}"#,
            r#"{"event":"stop"} trailing"#,
            r#"{"event":"stop","event":"media"}"#,
            r#"{"event":"media","media":{"payload":"AA==","track":7}}"#,
            r#"{"event":"start","start":{"callSid":"CA1","streamSid":"MZ1","tracks":"inbound"}}"#,
            "{\"event\":\"media\",\"media\":{\"payload\":\"\u{0}\"}}",
        ] {
            let err = parse(text).unwrap_err();
            assert!(matches!(err, ParseError::Malformed(_)), "{text:?}: {err:?}");
            assert_eq!(err.reason(), "malformed");
        }
    }

    #[test]
    fn outbound_media_mark_clear() {
        let mut buf = String::from("left over from the previous frame");
        media(&mut buf, STREAM, PAYLOAD);
        assert_eq!(
            buf,
            format!(
                r#"{{"event":"media","streamSid":"{STREAM}","media":{{"payload":"{PAYLOAD}"}}}}"#
            )
        );
        let echoed: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(echoed["media"]["payload"], PAYLOAD);

        mark(&mut buf, STREAM, "utterance-7");
        assert_eq!(
            buf,
            format!(r#"{{"event":"mark","streamSid":"{STREAM}","mark":{{"name":"utterance-7"}}}}"#)
        );
        clear(&mut buf, STREAM);
        assert_eq!(
            buf,
            format!(r#"{{"event":"clear","streamSid":"{STREAM}"}}"#)
        );
    }

    #[test]
    fn outbound_strings_are_escaped_like_serde_json() {
        let mut samples: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(String::from)
            .collect();
        samples.extend(
            [
                "",
                "plain",
                r#"quote " backslash \ slash /"#,
                "new\nline\r\ttab\u{8}\u{c}\u{0}\u{1f}\u{7f}",
                "ü 電話 🚀 \u{2028}\u{2029}",
                r#"</script><"#,
            ]
            .map(String::from),
        );
        let mut buf = String::new();
        for s in &samples {
            buf.clear();
            push_json_str(&mut buf, s);
            assert_eq!(buf, serde_json::to_string(s).unwrap(), "{s:?}");
        }

        // Round trip through the real parser, with names that need escaping.
        let name = "mark \"1\"\n\\";
        mark(&mut buf, "MZ\u{1}", name);
        let value: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(value["event"], "mark");
        assert_eq!(value["streamSid"], "MZ\u{1}");
        assert_eq!(value["mark"]["name"], name);
        let Ok(Inbound::Mark(parsed)) = parse(&buf) else {
            panic!("own mark frame does not parse: {buf}")
        };
        assert_eq!(parsed.name, name);
    }
}
