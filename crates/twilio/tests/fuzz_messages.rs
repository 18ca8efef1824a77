//! Property tests of the Media Streams parsers: no input panics them, the fast path and serde agree
//! on every frame, and generated frames of every spelling read back as what was generated.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;
use twilio::messages::{self, Inbound, Media, Track, fast, inbound};
use twilio::payload;

/// The contract between the three entry points, for any text at all: none panics; whatever the
/// fast path reads, serde reads alike; and the public `parse` answers exactly as serde does.
/// `media` with its `base64` checked against its payload and then cleared, for comparing with a
/// `MediaFrame::expected`, which cannot know whether the payload was escaped.
fn parsed_as_expected(media: Media<'_>) -> Media<'_> {
    let checked = match &media.payload {
        std::borrow::Cow::Borrowed(text) => payload::Base64::new(text),
        std::borrow::Cow::Owned(_) => None,
    };
    assert_eq!(media.base64, checked, "{media:?}");
    Media {
        base64: None,
        ..media
    }
}

fn check_agreement(text: &str) {
    let serde = inbound::parse(text);
    if let Some(fast) = fast::parse(text) {
        match &serde {
            Ok(Inbound::Media(slow)) => assert_eq!(&fast, slow, "{text:?}"),
            other => panic!("fast path read {fast:?}, serde said {other:?}: {text:?}"),
        }
    }
    assert_eq!(
        format!("{:?}", messages::parse(text)),
        format!("{serde:?}"),
        "{text:?}"
    );
}

/// A tiny deterministic generator for the choices made while writing one frame (spacing, escapes,
/// field order), so one proptest value describes one exact text.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn space(&mut self, out: &mut String) {
        if self.one_in(3) {
            for _ in 0..self.next() % 3 {
                out.push([' ', '\t', '\n', '\r'][(self.next() % 4) as usize]);
            }
        }
    }

    /// `text` as a JSON string literal; sometimes with escapes a JSON encoder need not write.
    fn string(&mut self, text: &str, out: &mut String) {
        if !self.one_in(12) {
            out.push_str(&serde_json::to_string(text).unwrap());
            return;
        }
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' if self.one_in(2) => out.push_str("\\/"),
                c if (c as u32) < 0x20 || self.one_in(5) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

/// A counter as Twilio spells it (a decimal string) or as a number; strings may hold anything.
#[derive(Debug, Clone)]
enum Counter {
    Number(u64),
    Text(String),
}

impl Counter {
    fn value(&self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Text(text) => text.parse().ok(),
        }
    }
}

fn counter() -> impl Strategy<Value = Counter> {
    prop_oneof![
        3 => any::<u64>().prop_map(Counter::Number),
        3 => (0u64..100_000).prop_map(Counter::Number),
        6 => any::<u64>().prop_map(|n| Counter::Text(n.to_string())),
        2 => "[0-9+ -]{0,21}".prop_map(Counter::Text),
        1 => any::<String>().prop_map(Counter::Text),
    ]
}

/// Mostly text as Twilio writes it, sometimes any string at all (quotes, controls, any script).
fn text(plain: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![4 => plain, 1 => any::<String>()]
}

/// A field nobody reads; its name never collides with a known one.
#[derive(Debug, Clone)]
enum Extra {
    Text(String),
    Number(u64),
    Raw(&'static str),
}

fn extra() -> impl Strategy<Value = (String, Extra)> {
    let value = prop_oneof![
        3 => text("[a-zA-Z0-9 ._:/+=-]{0,12}").prop_map(Extra::Text),
        2 => any::<u64>().prop_map(Extra::Number),
        1 => prop::sample::select(vec![
            "null", "true", "false", "-3", "1.5", "2e10", "[]", "[1,\"a\",{}]", "{}",
            "{\"event\":\"stop\",\"media\":{}}", "\"\"",
        ])
        .prop_map(Extra::Raw),
    ];
    ("x[A-Za-z0-9_]{0,8}", value)
}

#[derive(Debug, Clone)]
struct MediaFrame {
    sequence_number: Option<Counter>,
    stream_sid: Option<String>,
    track: Option<String>,
    chunk: Option<Counter>,
    timestamp: Option<Counter>,
    payload: String,
    extras: Vec<(String, Extra)>,
    media_extras: Vec<(String, Extra)>,
    choices: u64,
}

impl MediaFrame {
    fn expected(&self) -> Media<'static> {
        let track = self.track.as_deref().map(|t| match t {
            "inbound" | "inbound_track" => Track::Inbound,
            "outbound" | "outbound_track" => Track::Outbound,
            _ => Track::Other,
        });
        Media {
            sequence_number: self.sequence_number.as_ref().and_then(Counter::value),
            stream_sid: self.stream_sid.clone().map(Into::into),
            track,
            chunk: self.chunk.as_ref().and_then(Counter::value),
            timestamp: self.timestamp.as_ref().and_then(Counter::value),
            payload: self.payload.clone().into(),
            // Compared apart: it depends on the payload's spelling (see `parsed_as_expected`).
            base64: None,
        }
    }

    fn render(&self) -> String {
        let mut c = Choices(self.choices | 1);
        let mut media = Vec::new();
        if let Some(track) = &self.track {
            media.push(("track".to_owned(), Value::Text(track.clone())));
        }
        if let Some(chunk) = &self.chunk {
            media.push(("chunk".to_owned(), Value::counter(chunk)));
        }
        if let Some(ts) = &self.timestamp {
            media.push(("timestamp".to_owned(), Value::counter(ts)));
        }
        media.push(("payload".to_owned(), Value::Text(self.payload.clone())));
        media.extend(self.media_extras.iter().map(Value::extra));
        let mut top = vec![
            ("event".to_owned(), Value::Text("media".to_owned())),
            ("media".to_owned(), Value::Object(media)),
        ];
        if let Some(seq) = &self.sequence_number {
            top.push(("sequenceNumber".to_owned(), Value::counter(seq)));
        }
        if let Some(sid) = &self.stream_sid {
            top.push(("streamSid".to_owned(), Value::Text(sid.clone())));
        }
        top.extend(self.extras.iter().map(Value::extra));
        let mut out = String::new();
        c.space(&mut out);
        Value::Object(top).write(&mut c, &mut out);
        c.space(&mut out);
        out
    }
}

enum Value {
    Text(String),
    Raw(String),
    Object(Vec<(String, Value)>),
}

impl Value {
    fn counter(counter: &Counter) -> Self {
        match counter {
            Counter::Number(n) => Self::Raw(n.to_string()),
            Counter::Text(t) => Self::Text(t.clone()),
        }
    }

    fn extra((name, extra): &(String, Extra)) -> (String, Self) {
        let value = match extra {
            Extra::Text(t) => Self::Text(t.clone()),
            Extra::Number(n) => Self::Raw(n.to_string()),
            Extra::Raw(r) => Self::Raw((*r).to_owned()),
        };
        (name.clone(), value)
    }

    fn write(self, c: &mut Choices, out: &mut String) {
        match self {
            Self::Text(text) => c.string(&text, out),
            Self::Raw(raw) => out.push_str(&raw),
            Self::Object(mut fields) => {
                c.shuffle(&mut fields);
                out.push('{');
                for (i, (name, value)) in fields.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    c.space(out);
                    c.string(&name, out);
                    c.space(out);
                    out.push(':');
                    c.space(out);
                    value.write(c, out);
                    c.space(out);
                }
                out.push('}');
            }
        }
    }
}

fn media_frame() -> impl Strategy<Value = MediaFrame> {
    let track = prop_oneof![
        prop::sample::select(vec![
            "inbound",
            "outbound",
            "inbound_track",
            "outbound_track"
        ])
        .prop_map(str::to_owned),
        text("[a-z_]{0,14}"),
    ];
    let payload = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..200).prop_map(|audio| BASE64.encode(audio)),
        1 => any::<String>(),
    ];
    (
        (
            prop::option::of(counter()),
            prop::option::of(text("MZ[0-9a-f]{32}")),
            prop::option::of(track),
        ),
        (
            prop::option::of(counter()),
            prop::option::of(counter()),
            payload,
        ),
        prop::collection::vec(extra(), 0..3),
        prop::collection::vec(extra(), 0..3),
        any::<u64>(),
    )
        .prop_map(
            |(
                (sequence_number, stream_sid, track),
                (chunk, timestamp, payload),
                extras,
                media_extras,
                choices,
            )| MediaFrame {
                sequence_number,
                stream_sid,
                track,
                chunk,
                timestamp,
                payload,
                extras,
                media_extras,
                choices,
            },
        )
}

/// Edits that turn a frame into a near miss: the inputs most likely to find a disagreement.
#[derive(Debug, Clone)]
enum Edit {
    Delete {
        at: usize,
        len: usize,
    },
    Insert {
        at: usize,
        text: &'static str,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// Before the first digit at or after `at`: where a number's spelling is decided.
    BeforeDigit {
        at: usize,
        text: &'static str,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let tokens = vec![
        "\"",
        "\\",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "null",
        "-1",
        "1e5",
        "0",
        "01",
        "\"event\":\"media\",",
        "\"media\":{\"payload\":\"AA==\"},",
        "\"start\":{},",
        "\"streamSid\":\"MZ1\",",
        "\"payload\":\"\",",
        "\"chunk\":7,",
        "\u{0}",
        "\u{1f}",
        "é",
        "\\u0041",
        "\\/",
        "\"x\":[1],",
        "\"track\":null,",
    ];
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), prop::sample::select(tokens))
            .prop_map(|(at, text)| Edit::Insert { at, text }),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Duplicate { at, len }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
        (
            any::<usize>(),
            prop::sample::select(vec!["0", "-", ".", "e", "E", "+", "\"", " ", "x"])
        )
            .prop_map(|(at, text)| Edit::BeforeDigit { at, text }),
    ]
}

/// The nearest character boundary at or below `at % (len + 1)`.
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, edit: &Edit) {
    match *edit {
        Edit::Delete { at, len } => {
            let from = boundary(text, at);
            let to = boundary(text, (from + len).min(text.len()));
            text.replace_range(from..to.max(from), "");
        }
        Edit::Insert { at, text: token } => {
            let at = boundary(text, at);
            text.insert_str(at, token);
        }
        Edit::Duplicate { at, len } => {
            let from = boundary(text, at);
            let to = boundary(text, (from + len).min(text.len())).max(from);
            let copy = text[from..to].to_owned();
            text.insert_str(to, &copy);
        }
        Edit::Truncate { at } => {
            let at = boundary(text, at);
            text.truncate(at);
        }
        Edit::BeforeDigit { at, text: token } => {
            let from = boundary(text, at);
            if let Some(i) = text[from..].find(|c: char| c.is_ascii_digit()) {
                text.insert_str(from + i, token);
            }
        }
    }
}

/// JSON-like token soup: deeper into both parsers than random bytes get.
fn soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\"event\"",
        "\"media\"",
        "\"start\"",
        "\"stop\"",
        "\"mark\"",
        "\"dtmf\"",
        "\"connected\"",
        "\"payload\"",
        "\"track\"",
        "\"chunk\"",
        "\"timestamp\"",
        "\"sequenceNumber\"",
        "\"streamSid\"",
        "\"inbound\"",
        "\"AA==\"",
        "\"1\"",
        "1",
        "-1",
        "1.5",
        "null",
        "true",
        "\"\\u0065\"",
        "\"a\\\"b\"",
        "\"name\"",
        "\"digit\"",
        "\"callSid\"",
        "\"customParameters\"",
        "\"mediaFormat\"",
        "\"tracks\"",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

/// The agreement properties mean something only if generated frames often take the fast path.
#[test]
fn generated_frames_often_take_the_fast_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = media_frame();
    let (mut plain, mut edited) = (0, 0);
    for _ in 0..1000 {
        let frame = strategy.new_tree(&mut runner).unwrap().current();
        let mut text = frame.render();
        plain += usize::from(fast::parse(&text).is_some());
        let edit = edit().new_tree(&mut runner).unwrap().current();
        apply(&mut text, &edit);
        edited += usize::from(fast::parse(&text).is_some());
    }
    assert!(
        plain >= 200,
        "{plain} of 1000 generated frames took the fast path"
    );
    assert!(
        edited >= 50,
        "{edited} of 1000 edited frames took the fast path"
    );
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic_and_parsers_agree(text in any::<String>()) {
        check_agreement(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_parsers_agree(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_agreement(&String::from_utf8_lossy(&bytes));
        // The payload check reads bytes, not text: it must agree with the real decoder.
        prop_assert_eq!(
            payload::decoded_len(&bytes),
            BASE64.decode(&bytes).ok().map(|audio| audio.len())
        );
    }

    #[test]
    fn token_soup_never_panics_and_parsers_agree(text in soup()) {
        check_agreement(&text);
    }

    #[test]
    fn generated_media_frames_read_back_exactly(frame in media_frame()) {
        let text = frame.render();
        let expected = frame.expected();
        match inbound::parse(&text) {
            Ok(Inbound::Media(media)) => prop_assert_eq!(parsed_as_expected(media), expected.clone(), "{}", text),
            other => prop_assert!(false, "serde read {:?} from {}", other, text),
        }
        if let Some(fast) = fast::parse(&text) {
            prop_assert_eq!(parsed_as_expected(fast), expected, "{}", text);
        }
        check_agreement(&text);
    }

    #[test]
    fn mutated_media_frames_never_panic_and_parsers_agree(
        frame in media_frame(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut text = frame.render();
        for edit in &edits {
            apply(&mut text, edit);
        }
        check_agreement(&text);
    }

    #[test]
    fn plain_twilio_frames_take_the_fast_path(
        audio in prop::collection::vec(any::<u8>(), 0..400),
        seq in any::<u64>(),
        chunk in any::<u64>(),
        ts in any::<u64>(),
    ) {
        let payload = BASE64.encode(&audio);
        let text = format!(
            r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{ts}","payload":"{payload}"}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}}"#
        );
        let fast = fast::parse(&text);
        prop_assert!(fast.is_some(), "{}", text);
        check_agreement(&text);
    }

    #[test]
    fn start_mark_dtmf_stop_read_back(
        call_sid in any::<String>(),
        stream_sid in any::<String>(),
        params in prop::collection::btree_map(any::<String>(), any::<String>(), 0..5),
        name in any::<String>(),
        digit in any::<String>(),
        seq in any::<u64>(),
    ) {
        let start = serde_json::json!({
            "event": "start", "sequenceNumber": seq.to_string(), "streamSid": stream_sid,
            "start": {"callSid": call_sid, "streamSid": stream_sid, "tracks": ["inbound"],
                      "customParameters": params,
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        }).to_string();
        match messages::parse(&start) {
            Ok(Inbound::Start(s)) => {
                prop_assert_eq!(s.sequence_number, Some(seq));
                prop_assert_eq!(&s.call_sid, &call_sid);
                prop_assert_eq!(&s.stream_sid, &stream_sid);
                prop_assert_eq!(&s.custom_parameters, &params);
                prop_assert_eq!(s.media_format.sample_rate, 8000);
            }
            other => prop_assert!(false, "{:?} from {}", other, start),
        }
        let mark = serde_json::json!({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}).to_string();
        prop_assert!(matches!(messages::parse(&mark), Ok(Inbound::Mark(m)) if m.name == name));
        let dtmf = serde_json::json!({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": digit}}).to_string();
        prop_assert!(matches!(messages::parse(&dtmf), Ok(Inbound::Dtmf(d)) if d.digit == digit && d.track == Some(Track::Inbound)));
        let stop = serde_json::json!({"event": "stop", "stop": {"callSid": call_sid}}).to_string();
        prop_assert!(matches!(messages::parse(&stop), Ok(Inbound::Stop(s)) if s.call_sid.as_deref() == Some(&*call_sid)));
        // Non-string parameter values are skipped, never fatal.
        let odd = serde_json::json!({"event": "start", "start": {"callSid": "CA1", "streamSid": "MZ1",
            "customParameters": {"n": 1, "o": {"k": [params]}, "s": name}}}).to_string();
        match messages::parse(&odd) {
            Ok(Inbound::Start(s)) => prop_assert_eq!(s.custom_parameters, BTreeMap::from([("s".to_owned(), name.clone())])),
            other => prop_assert!(false, "{:?} from {}", other, odd),
        }
    }

    #[test]
    fn built_frames_parse_back(stream_sid in any::<String>(), payload in any::<String>(), name in any::<String>()) {
        let mut text = String::new();
        let mut bytes = bytes::BytesMut::new();
        messages::media(&mut text, &stream_sid, &payload);
        messages::media(&mut bytes, &stream_sid, &payload);
        prop_assert_eq!(text.as_bytes(), &bytes[..]);
        match messages::parse(&text) {
            Ok(Inbound::Media(m)) => {
                prop_assert_eq!(m.payload, payload.as_str());
                prop_assert_eq!(m.stream_sid.as_deref(), Some(stream_sid.as_str()));
            }
            other => prop_assert!(false, "{:?} from {}", other, text),
        }
        messages::mark(&mut text, &stream_sid, &name);
        prop_assert!(matches!(messages::parse(&text), Ok(Inbound::Mark(m)) if m.name == name));
        messages::clear(&mut text, &stream_sid);
        let clear: serde_json::Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&clear["event"], "clear");
        prop_assert_eq!(&clear["streamSid"], stream_sid.as_str());
    }
}
