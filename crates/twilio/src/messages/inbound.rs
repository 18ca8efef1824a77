//! Every inbound Media Streams event as a typed message, read by serde: any valid JSON spelling,
//! every error. Rare events all come here; so does a `media` frame the fast path cannot decide.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::payload::Base64;

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
    pub media_format: MediaFormat,
    /// The `<Parameter>`s of the TwiML `<Stream>`. Non-string values are skipped.
    pub custom_parameters: BTreeMap<String, String>,
}

/// `start.mediaFormat`; for Twilio voice always `audio/x-mulaw`, 8000 Hz, 1 channel. A field
/// missing or unreadable is empty (`""`, 0). Serialised in Twilio's own field names, as the call's
/// state keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
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
    /// `payload` as base64 and the audio bytes it decodes to ([`Base64::new`]), when it is valid
    /// base64 borrowed from the frame; `None` for anything else, an escaped payload included
    /// (copied, so not borrowable here: [`Media::checked_base64`] checks it). A plain frame's payload is
    /// checked in the pass that finds its end, so the stream does not read it again.
    pub base64: Option<(Base64<'a>, usize)>,
}

impl Media<'_> {
    /// The payload as checked base64 and the audio bytes it decodes to: the parse's own check
    /// where it made one, else checked now (an escaped payload); `None` if it is not base64.
    pub fn checked_base64(&self) -> Option<(Base64<'_>, usize)> {
        self.base64.or_else(|| Base64::new(&self.payload))
    }
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

/// The full parser: any message, any valid JSON spelling, every error. Strings borrow from `text`
/// unless they hold escapes; [`super::parse`] puts the fast path for plain `media` frames first.
pub fn parse(text: &str) -> Result<Inbound<'_>, ParseError> {
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
    let sequence_number = counter(sequence_number);
    let stream_sid = cow(stream_sid);
    let missing = |event, field| ParseError::MissingField { event, field };
    match &*event {
        "media" => {
            let media = media.ok_or(missing("media", "media"))?;
            let base64 = match media.payload {
                Cow::Borrowed(text) => Base64::new(text),
                Cow::Owned(_) => None,
            };
            Ok(Inbound::Media(Media {
                base64,
                sequence_number,
                stream_sid,
                track: media.track,
                chunk: counter(media.chunk),
                timestamp: counter(media.timestamp),
                payload: media.payload,
            }))
        }
        "start" => {
            let start = start.ok_or(missing("start", "start"))?;
            Ok(Inbound::Start(Start {
                sequence_number,
                stream_sid: cow(start.stream_sid)
                    .or(stream_sid)
                    .ok_or(missing("start", "start.streamSid"))?,
                call_sid: cow(start.call_sid).ok_or(missing("start", "start.callSid"))?,
                account_sid: cow(start.account_sid),
                tracks: start.tracks,
                media_format: start
                    .media_format
                    .map(|f| MediaFormat {
                        encoding: cow(f.encoding).map(Cow::into_owned).unwrap_or_default(),
                        sample_rate: counter(f.sample_rate)
                            .and_then(|v| u32::try_from(v).ok())
                            .unwrap_or_default(),
                        channels: counter(f.channels)
                            .and_then(|v| u32::try_from(v).ok())
                            .unwrap_or_default(),
                    })
                    .unwrap_or_default(),
                custom_parameters: string_parameters(start.custom_parameters),
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
                account_sid: cow(stop.account_sid),
                call_sid: cow(stop.call_sid),
            }))
        }
        "connected" => Ok(Inbound::Connected(Connected {
            protocol: cow(protocol),
            version: cow(version),
        })),
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

/// Every field of every inbound event, so one pass reads any of them; the event picks what counts.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    sequence_number: Counter<'a>,
    #[serde(default, borrow)]
    stream_sid: Option<Text<'a>>,
    #[serde(default, borrow)]
    protocol: Option<Text<'a>>,
    #[serde(default, borrow)]
    version: Option<Text<'a>>,
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
    #[serde(default, borrow)]
    stream_sid: Option<Text<'a>>,
    #[serde(default, borrow)]
    account_sid: Option<Text<'a>>,
    #[serde(default, borrow)]
    call_sid: Option<Text<'a>>,
    #[serde(default)]
    tracks: Vec<Track>,
    #[serde(default, borrow)]
    media_format: Option<WireMediaFormat<'a>>,
    #[serde(default)]
    custom_parameters: Option<BTreeMap<String, Parameter>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMediaFormat<'a> {
    #[serde(default, borrow)]
    encoding: Option<Text<'a>>,
    #[serde(default, borrow)]
    sample_rate: Counter<'a>,
    #[serde(default, borrow)]
    channels: Counter<'a>,
}

#[derive(Deserialize)]
struct WireMedia<'a> {
    #[serde(default)]
    track: Option<Track>,
    #[serde(default, borrow)]
    chunk: Counter<'a>,
    #[serde(default, borrow)]
    timestamp: Counter<'a>,
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
    #[serde(default, borrow)]
    account_sid: Option<Text<'a>>,
    #[serde(default, borrow)]
    call_sid: Option<Text<'a>>,
}

/// A string that borrows from the frame: serde's own `Option<Cow<str>>` always copies, while a
/// `Cow` field marked `borrow` inside a newtype borrows whenever the string has no escapes.
#[derive(Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

fn cow(value: Option<Text<'_>>) -> Option<Cow<'_, str>> {
    value.map(|Text(text)| text)
}

/// A counter Twilio sends as a decimal string, kept as its raw JSON text (borrowed, not copied).
type Counter<'a> = Option<&'a RawValue>;

/// Reads a counter leniently: a decimal string or a number; anything else (negative, fractional,
/// too large, another type, `null`, absent) is no value rather than a failed frame. The raw text
/// is valid JSON already, so a number's text is its digits and a string's is quoted.
fn counter(raw: Counter<'_>) -> Option<u64> {
    let raw = raw?.get();
    match raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        // Only a string with escapes needs unescaping (and a copy).
        Some(text) if text.contains('\\') => serde_json::from_str::<String>(raw).ok()?.parse().ok(),
        Some(text) => text.parse().ok(),
        // A float's or a negative number's text never parses as u64.
        None => raw.parse().ok(),
    }
}

/// A `customParameters` value: strings are kept; any other value is skipped, so one odd
/// parameter cannot make the `start` (and with it the call) fail.
#[derive(Deserialize)]
#[serde(untagged)]
enum Parameter {
    Text(String),
    Other(IgnoredAny),
}

fn string_parameters(map: Option<BTreeMap<String, Parameter>>) -> BTreeMap<String, String> {
    map.unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| match value {
            Parameter::Text(value) => Some((name, value)),
            Parameter::Other(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both entry points read every test frame alike: serde alone, and the public one that tries
    /// the fast path first. The public one's answer is returned.
    fn parse(text: &str) -> Result<Inbound<'_>, ParseError> {
        let public = crate::messages::parse(text);
        assert_eq!(
            format!("{public:?}"),
            format!("{:?}", super::parse(text)),
            "{text}"
        );
        public
    }

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
                encoding: "audio/x-mulaw".into(),
                sample_rate: 8000,
                channels: 1
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
        assert_eq!(start.media_format.sample_rate, 8000);
        assert_eq!(start.media_format.channels, 0);
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
                base64: Base64::new(PAYLOAD),
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
                base64: Base64::new(""),
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
}
