//! The hot path of `messages::parse`: a `media` message as Twilio sends it, read in one pass over
//! the bytes. Anything outside a plain subset goes back to serde (`inbound`), so results never differ.

use std::borrow::Cow;

use super::inbound::{Media, Track};
use crate::payload::{self, Base64};

/// Reads `text` as a `media` message if it is plain: one object of string or unsigned-integer
/// values plus the nested `media` object, no escapes, no literals, no duplicate known field.
/// `None` means "not decided here": escapes, arrays, nesting, `null`, negative or fractional
/// numbers, another event, a malformed byte. The full parser then gives the answer, so an input
/// this accepts is exactly one that parser reads as the same `Media`.
pub fn parse(text: &str) -> Option<Media<'_>> {
    let mut s = Scanner { text, at: 0 };
    s.expect(b'{')?;
    let mut is_media = false;
    let mut sequence_number = None;
    let mut stream_sid = None;
    let mut media = None;
    loop {
        match s.key()? {
            Key::Event => {
                if is_media || !s.media_event()? {
                    return None;
                }
                is_media = true;
            }
            Key::SequenceNumber => once(&mut sequence_number, s.counter()?)?,
            Key::StreamSid => once(&mut stream_sid, Cow::Borrowed(s.string()?))?,
            Key::Media => once(&mut media, s.media()?)?,
            // Known fields of other events: their types are the full parser's business.
            Key::Other("protocol" | "version" | "start" | "mark" | "dtmf" | "stop") => return None,
            _ => s.scalar()?,
        }
        match s.token()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    if !s.at_end() || !is_media {
        return None;
    }
    let media = media?;
    let (payload, base64) = media.payload?;
    Some(Media {
        base64,
        sequence_number: sequence_number.flatten(),
        stream_sid,
        track: media.track,
        chunk: media.chunk.flatten(),
        timestamp: media.timestamp.flatten(),
        payload: Cow::Borrowed(payload),
    })
}

#[derive(Default)]
struct Inner<'a> {
    track: Option<Track>,
    chunk: Option<Option<u64>>,
    timestamp: Option<Option<u64>>,
    payload: Option<(&'a str, Option<(Base64<'a>, usize)>)>,
}

/// Sets a field seen for the first time; a second sighting is a duplicate, which the full
/// parser rejects.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// A field name: one of those a `media` message has, or another.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key<'a> {
    Event,
    SequenceNumber,
    StreamSid,
    Media,
    Track,
    Chunk,
    Timestamp,
    Payload,
    Other(&'a str),
}

impl<'a> Key<'a> {
    fn of(name: &'a str) -> Self {
        match name {
            "event" => Key::Event,
            "sequenceNumber" => Key::SequenceNumber,
            "streamSid" => Key::StreamSid,
            "media" => Key::Media,
            "track" => Key::Track,
            "chunk" => Key::Chunk,
            "timestamp" => Key::Timestamp,
            "payload" => Key::Payload,
            other => Key::Other(other),
        }
    }
}

/// Fixed text of up to `N` × 16 bytes (one word by default), compared with the text that follows
/// as masked 128-bit words: a load, an AND and a compare each, where `starts_with` calls `bcmp`.
/// The scanner's names and values use one word; the template (`layout`) Twilio's longer runs.
pub(super) struct Literal<const N: usize = 1> {
    text: &'static [u8],
    words: [(u128, u128); N],
}

impl<const N: usize> Literal<N> {
    pub(super) const fn new(text: &'static [u8]) -> Self {
        assert!(text.len() <= N * 16 && text.len() > (N - 1) * 16);
        let mut words = [(0u128, 0u128); N];
        let mut i = 0;
        while i < text.len() {
            let (word, mask) = &mut words[i / 16];
            *word |= (text[i] as u128) << (8 * (i % 16));
            *mask |= 0xff << (8 * (i % 16));
            i += 1;
        }
        Self { text, words }
    }

    pub(super) const fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether `bytes` starts with this text.
    #[inline]
    pub(super) fn is_prefix_of(&self, bytes: &[u8]) -> bool {
        let mut next = bytes.chunks_exact(16);
        for &(word, mask) in &self.words {
            match next.next() {
                Some(chunk) => {
                    let Ok(chunk) = <[u8; 16]>::try_from(chunk) else {
                        return false;
                    };
                    if u128::from_le_bytes(chunk) & mask != word {
                        return false;
                    }
                }
                // Fewer than sixteen bytes left: near the end of the text, byte by byte.
                None => return bytes.starts_with(self.text),
            }
        }
        true
    }
}

const EVENT_KEY: Literal = Literal::new(b"event\":");
const MEDIA_KEY: Literal = Literal::new(b"media\":");
const CHUNK_KEY: Literal = Literal::new(b"chunk\":");
const PAYLOAD_KEY: Literal = Literal::new(b"payload\":");
const SEQUENCE_NUMBER_KEY: Literal = Literal::new(b"sequenceNumber\":");
const STREAM_SID_KEY: Literal = Literal::new(b"streamSid\":");
const TRACK_KEY: Literal = Literal::new(b"track\":");
const TIMESTAMP_KEY: Literal = Literal::new(b"timestamp\":");
const MEDIA_VALUE: Literal = Literal::new(b"\"media\"");
const INBOUND_VALUE: Literal = Literal::new(b"\"inbound\"");

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, consumed.
    fn token(&mut self) -> Option<u8> {
        self.skip_ws();
        let byte = *self.bytes().get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes().get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.token()? == byte).then_some(())
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.at == self.text.len()
    }

    /// Whether the unread text starts with `literal`; if so it is consumed.
    fn literal(&mut self, literal: &Literal) -> bool {
        let found = literal.is_prefix_of(&self.bytes()[self.at..]);
        if found {
            self.at += literal.len();
        }
        found
    }

    /// A field name and its colon. The names of a `media` message are compared as `name":`
    /// straight after the quote, a few word compares instead of a scan for the string's end and a
    /// match on the text; any other name or spelling (`"name" :`) is read as a string.
    fn key(&mut self) -> Option<Key<'a>> {
        self.expect(b'"')?;
        // The first byte (and the second where two names share one) picks the one candidate.
        let rest = &self.bytes()[self.at..];
        let candidate = match rest.first() {
            Some(b'e') => Some((&EVENT_KEY, Key::Event)),
            Some(b'm') => Some((&MEDIA_KEY, Key::Media)),
            Some(b'c') => Some((&CHUNK_KEY, Key::Chunk)),
            Some(b'p') => Some((&PAYLOAD_KEY, Key::Payload)),
            Some(b's') if rest.get(1) == Some(&b'e') => {
                Some((&SEQUENCE_NUMBER_KEY, Key::SequenceNumber))
            }
            Some(b's') => Some((&STREAM_SID_KEY, Key::StreamSid)),
            Some(b't') if rest.get(1) == Some(&b'r') => Some((&TRACK_KEY, Key::Track)),
            Some(b't') => Some((&TIMESTAMP_KEY, Key::Timestamp)),
            _ => None,
        };
        if let Some((literal, key)) = candidate
            && self.literal(literal)
        {
            return Some(key);
        }
        let name = self.string_rest()?;
        self.expect(b':')?;
        Some(Key::of(name))
    }

    /// The value of `event`: whether it is `"media"`, compared as a literal when spelled plainly.
    fn media_event(&mut self) -> Option<bool> {
        self.skip_ws();
        if self.literal(&MEDIA_VALUE) {
            return Some(true);
        }
        Some(self.string()? == "media")
    }

    /// A string with no escapes and no control characters, borrowed from the text.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        self.string_rest()
    }

    /// [`Scanner::string`] after its opening quote.
    fn string_rest(&mut self) -> Option<&'a str> {
        let start = self.at;
        let rest = &self.bytes()[start..];
        // What reaches here on Twilio's frames is the SID, letters and digits: the base64
        // alphabet's run (sixteen at a time) ends at its quote, and holds no quote, backslash or
        // control character before it. Any other string is scanned again by `first_special`.
        let run = payload::alphabet_run(rest);
        let len = if rest.get(run) == Some(&b'"') {
            run
        } else {
            first_special(rest)?
        };
        // A backslash or a control character sends the whole message to the full parser.
        if rest[len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // Both ends sit next to an ASCII quote, so they are character boundaries.
        Some(&self.text[start..start + len])
    }

    /// A plain JSON unsigned integer; `None` for anything the full grammar would read otherwise.
    fn integer(&mut self) -> Option<u64> {
        self.skip_ws();
        let start = self.at;
        let bytes = self.bytes();
        while bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        let leading_zero = digits.len() > 1 && digits.starts_with('0');
        let fraction = matches!(bytes.get(self.at), Some(b'.' | b'e' | b'E'));
        if digits.is_empty() || leading_zero || fraction {
            return None;
        }
        // Too large for u64: the full parser reads it as a float.
        decimal(digits)
    }

    /// A counter (`sequenceNumber`, `chunk`, `timestamp`) read leniently, as the full parser does:
    /// a decimal string that is not a u64 becomes `Some(None)`.
    fn counter(&mut self) -> Option<Option<u64>> {
        match self.peek()? {
            b'"' => {
                // Twilio's counters are short quoted digit strings: read as the digits go by,
                // with no scan for the string's end first. Anything else is read as a string.
                if let Some(value) = self.quoted_digits() {
                    return Some(Some(value));
                }
                Some(decimal(self.string()?))
            }
            b'0'..=b'9' => Some(Some(self.integer()?)),
            _ => None,
        }
    }

    /// `"digits"` (1 to 19 ASCII digits, so they fit in a u64) and its value, consumed; `None`,
    /// with nothing consumed, for any other string. `decimal` reads the same digits alike.
    fn quoted_digits(&mut self) -> Option<u64> {
        let digits = self.bytes().get(self.at + 1..)?;
        let (value, len) = leading_digits(digits)?;
        if digits.get(len) != Some(&b'"') {
            return None;
        }
        self.at += len + 2;
        Some(value)
    }

    /// Skips the value of a field nobody reads, if it is a string or an unsigned integer.
    fn scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'0'..=b'9' => self.integer().map(drop),
            _ => None,
        }
    }

    fn media(&mut self) -> Option<Inner<'a>> {
        self.expect(b'{')?;
        let mut inner = Inner::default();
        let mut track = None;
        loop {
            match self.key()? {
                Key::Track => once(&mut track, self.track()?)?,
                Key::Chunk => once(&mut inner.chunk, self.counter()?)?,
                Key::Timestamp => once(&mut inner.timestamp, self.counter()?)?,
                Key::Payload => once(&mut inner.payload, self.payload()?)?,
                _ => self.scalar()?,
            }
            match self.token()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        inner.track = track;
        Some(inner)
    }

    /// The value of `payload`, checked as base64 in the pass that finds its end: a run of the
    /// alphabet, up to two `=`, then the closing quote. Any other string (not base64, or with an
    /// escape) is read by [`Scanner::string`] and checked by [`Base64::new`], as serde's is.
    fn payload(&mut self) -> Option<(&'a str, Option<(Base64<'a>, usize)>)> {
        self.expect(b'"')?;
        let start = self.at;
        let rest = &self.bytes()[start..];
        let (data, pads) = payload::padded_run(rest);
        if rest.get(data + pads) == Some(&b'"') {
            self.at = start + data + pads + 1;
            // ASCII on both sides: character boundaries.
            let text = &self.text[start..start + data + pads];
            return Some((text, Base64::of_run(text, data, pads)));
        }
        let text = self.string_rest()?;
        Some((text, Base64::new(text)))
    }

    /// The value of `track`; Twilio's own `"inbound"` compared as a literal.
    fn track(&mut self) -> Option<Track> {
        self.skip_ws();
        if self.literal(&INBOUND_VALUE) {
            return Some(Track::Inbound);
        }
        Some(track_of(self.string()?))
    }
}

/// Where the first `"`, `\\` or control character is. Most strings are short (keys, `media`,
/// counters): the word scan finds their end in the first sixteen bytes. Past those the question
/// is only "any in here?", sixteen bytes at a time, a fold without an early exit that LLVM turns
/// into a few vector compares (the payload is most of a frame); the word scan then says where.
pub(crate) fn first_special(bytes: &[u8]) -> Option<usize> {
    let (head, rest) = bytes.split_at(bytes.len().min(16));
    if let Some(i) = first_special_in_words(head) {
        return Some(i);
    }
    let mut blocks = rest.chunks_exact(16);
    let mut at = head.len();
    for block in &mut blocks {
        if block.iter().fold(false, |any, &b| any | is_special(b)) {
            return first_special_in_words(block).map(|i| at + i);
        }
        at += 16;
    }
    first_special_in_words(blocks.remainder()).map(|i| at + i)
}

fn is_special(byte: u8) -> bool {
    // `|`, not `||`: no branches, so the fold above vectorises.
    (byte == b'"') | (byte == b'\\') | (byte < 0x20)
}

/// The same answer eight bytes at a time: per word, a byte that is zero after XOR with the quote
/// or the backslash, or one below 0x20, sets its high bit. Borrows can only mark bytes above a
/// real match, so the lowest marked byte is the first one.
fn first_special_in_words(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut words {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let marked = (zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGHS;
        if marked != 0 {
            return Some(at + marked.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| is_special(b))
        .map(|i| at + i)
}

/// The 1 to 19 ASCII digits `bytes` starts with (always a u64): their value and how many. `None`
/// for no digit, or for a twentieth: whether that still fits is `decimal`'s to decide.
pub(super) fn leading_digits(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (len, &byte) in bytes.iter().enumerate() {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return (len > 0).then_some((value, len));
        }
        if len == 19 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    (!bytes.is_empty()).then_some((value, bytes.len()))
}

/// `text.parse::<u64>().ok()`, without the sign and radix handling for the short, plain digit
/// strings Twilio sends; anything else (a sign, 20 digits, not a number) goes to `parse` itself.
fn decimal(text: &str) -> Option<u64> {
    // Nineteen digits always fit in a u64.
    if text.is_empty() || text.len() > 19 {
        return text.parse().ok();
    }
    let mut value = 0u64;
    for &byte in text.as_bytes() {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return text.parse().ok();
        }
        value = value * 10 + u64::from(digit);
    }
    Some(value)
}

fn track_of(name: &str) -> Track {
    match name {
        "inbound" | "inbound_track" => Track::Inbound,
        "outbound" | "outbound_track" => Track::Outbound,
        _ => Track::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = "/v7+fn5+fn5+/v7+";

    fn twilio_frame() -> String {
        format!(
            r#"{{"event":"media","sequenceNumber":"4","media":{{"track":"inbound","chunk":"2","timestamp":"5","payload":"{PAYLOAD}"}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}}"#
        )
    }

    /// Whatever the fast path decides must be what the full parser says.
    fn agrees(text: &str) -> bool {
        crate::messages::agrees_with_serde(text, parse(text))
    }

    #[test]
    fn twilio_frames_take_the_fast_path() {
        assert!(agrees(&twilio_frame()));
        assert!(agrees(r#"{"event":"media","media":{"payload":""}}"#));
        assert!(agrees(
            " {\n \"media\" : { \"payload\" : \"AA==\" , \"chunk\" : 7 } ,\t\"event\":\"media\" }\r\n"
        ));
    }

    #[test]
    fn every_variant_agrees_with_the_full_parser() {
        let counters = [
            "\"42\"",
            "42",
            "0",
            "\"abc\"",
            "\"\"",
            "\"-1\"",
            "-1",
            "1.5",
            "1e3",
            "01",
            "\"01\"",
            "\"+5\"",
            "null",
            "true",
            "18446744073709551616",
            "\"18446744073709551615\"",
            "[1]",
            "{}",
            "\" 5\"",
        ];
        let tracks = [
            "\"inbound\"",
            "\"inbound_track\"",
            "\"outbound_track\"",
            "\"mixed\"",
            "7",
            "null",
        ];
        let payloads = [
            "\"AA==\"",
            "\"\"",
            r#""ab\/cd""#,
            "\"a\u{1}\"",
            "12",
            "null",
        ];
        let extras = [
            "",
            r#","future":"x""#,
            r#","future":7"#,
            r#","obj":{"a":1}"#,
            r#","arr":[1]"#,
            r#","nul":null"#,
            r#","neg":-3"#,
            r#","event":"media""#,
            r#","streamSid":"MZ2""#,
            r#","start":{}"#,
            r#","x":"1","x":"2""#,
        ];
        let mut accepted = 0;
        let mut total = 0;
        for counter in counters {
            for track in tracks {
                for payload in payloads {
                    for extra in extras {
                        let text = format!(
                            r#"{{"event":"media","sequenceNumber":{counter},"streamSid":"MZ1","media":{{"track":{track},"chunk":{counter},"timestamp":{counter},"payload":{payload}{extra}}}{extra}}}"#
                        );
                        total += 1;
                        accepted += usize::from(agrees(&text));
                    }
                }
            }
        }
        // Most of the matrix is deliberately odd and falls back; the plain spellings must not.
        assert!(
            accepted >= 300,
            "only {accepted} of {total} took the fast path"
        );
        for text in [
            r#"{"event":"stop","media":{"payload":"AA=="}}"#,
            r#"{"event":"Media","media":{"payload":"AA=="}}"#,
            r#"{"event":"media"}"#,
            r#"{"event":"media","media":{"track":"inbound"}}"#,
            r#"{"event":"media","media":{"payload":"AA==","payload":"AA=="}}"#,
            r#"{"event":"media","media":{"payload":"AA=="},"media":{"payload":"AA=="}}"#,
            r#"{"event":"media","media":{"payload":"AA=="}} x"#,
            r#"{"event":"media","media":{"payload":"AA=="},}"#,
            r#"{"event":"media""media":{"payload":"AA=="}}"#,
            r#"{"event":"media","media":{"payload":"AA=="}"#,
            "{}",
            "",
        ] {
            assert!(parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn counters_read_as_str_parse_reads_them() {
        let mut samples = vec![
            String::new(),
            "0".into(),
            "0004".into(),
            "00000000000000000000000000001".into(),
            "+5".into(),
            "-5".into(),
            "+".into(),
            "5x".into(),
            "x5".into(),
            " 5".into(),
            "1234567890123456789".into(),
            "9999999999999999999".into(),
            "18446744073709551615".into(),
            "18446744073709551616".into(),
            "99999999999999999999".into(),
            "123456789012345678901".into(),
            "١٢".into(),
        ];
        for digits in 1..=21 {
            samples.push("9".repeat(digits));
            samples.push(format!("1{}", "0".repeat(digits - 1)));
        }
        for text in &samples {
            assert_eq!(decimal(text), text.parse().ok(), "{text:?}");
            // The same counter through both parsers, quoted and bare.
            for counter in [format!("\"{text}\""), text.clone()] {
                agrees(&format!(
                    r#"{{"event":"media","sequenceNumber":{counter},"media":{{"chunk":{counter},"timestamp":{counter},"payload":"AA=="}}}}"#
                ));
            }
        }
    }

    #[test]
    fn finds_the_first_special_byte_in_long_strings() {
        // A frame's payload is 216 characters: every position across many 16-byte blocks.
        for len in [47, 48, 49, 215, 216, 217] {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x0a, 0x1f] {
                    let mut bytes = vec![b'+'; len];
                    bytes[at] = special;
                    assert_eq!(first_special(&bytes), Some(at), "{len} {at} {special}");
                    // A later special byte never hides the first.
                    bytes[len - 1] = b'"';
                    assert_eq!(first_special(&bytes), Some(at), "{len} {at} {special}");
                }
            }
            assert_eq!(first_special(&vec![b'/'; len]), None);
            assert_eq!(first_special(&vec![0x20; len]), None);
            assert_eq!(first_special(&vec![0x7f; len]), None);
            assert_eq!(first_special(&vec![0x80; len]), None);
        }
    }

    #[test]
    fn finds_the_first_special_byte_in_any_position() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                    }
                    assert_eq!(first_special(&bytes), Some(at), "{len} {at} {special}");
                }
            }
            assert_eq!(first_special(&vec![0xc3; len]), None);
            assert_eq!(first_special(&vec![b' '; len]), None);
        }
    }

    /// The names and values compared as literals: every near miss (a prefix, a longer name, a
    /// changed byte, whitespace around the colon) is read as the full parser reads it.
    #[test]
    fn literal_names_and_values_agree_on_near_misses() {
        let frame = twilio_frame();
        let mut variants = Vec::new();
        for literal in [
            "\"event\":",
            "\"sequenceNumber\":",
            "\"media\":",
            "\"track\":",
            "\"chunk\":",
            "\"timestamp\":",
            "\"payload\":",
            "\"streamSid\":",
            "\"media\"",
            "\"inbound\"",
            "\"4\"",
            "\"2\"",
            "\"5\"",
        ] {
            let at = frame.find(literal).unwrap();
            let (before, after) = (&frame[..at], &frame[at + literal.len()..]);
            let inner = &literal[1..literal.rfind('"').unwrap()];
            let tail = &literal[literal.rfind('"').unwrap() + 1..];
            let mut spellings = vec![
                format!("\"{inner}\" {tail}"),
                format!(" \"{inner}\"{tail}"),
                format!("\"{inner}x\"{tail}"),
                format!("\"{inner}\\u0041\"{tail}"),
                format!("\"\"{tail}"),
            ];
            for cut in 0..inner.len() {
                spellings.push(format!("\"{}\"{tail}", &inner[..cut]));
                spellings.push(format!("\"{}\"{tail}", &inner[cut..]));
                let mut changed = inner.as_bytes().to_vec();
                for byte in [b'A', b'0', b'_', b'"', b'\\'] {
                    changed[cut] = byte;
                    spellings.push(format!("\"{}\"{tail}", String::from_utf8_lossy(&changed)));
                }
            }
            variants.extend(spellings.iter().map(|s| format!("{before}{s}{after}")));
        }
        // Quoted counters of every length around the u64 limit, each digit and a leading zero.
        for digits in 1..=21 {
            for lead in ["1", "9", "0"] {
                let counter = format!("\"{lead}{}\"", "9".repeat(digits - 1));
                variants.push(frame.replacen("\"4\"", &counter, 1));
                variants.push(frame.replacen("\"5\"", &counter, 1));
            }
        }
        let accepted = variants.iter().filter(|text| agrees(text)).count();
        assert!(
            accepted > variants.len() / 4,
            "{accepted} of {}",
            variants.len()
        );
    }

    /// Every ASCII byte at every position of Twilio's frame: the literal comparisons and the
    /// digit reader see every kind of wrong byte where they look.
    #[test]
    fn every_ascii_byte_at_every_position_agrees() {
        let frame = twilio_frame();
        for at in 0..frame.len() {
            for byte in 0..0x80u8 {
                let mut text = frame.clone().into_bytes();
                text[at] = byte;
                agrees(std::str::from_utf8(&text).unwrap());
            }
        }
    }

    /// A frame's full 216-character payload with every ASCII byte at every position: the
    /// alphabet run and its padding end wherever the payload stops being base64.
    #[test]
    fn every_ascii_byte_in_a_full_payload_agrees() {
        use base64::Engine;
        let audio: Vec<u8> = (0..160u32).map(|i| (i * 73 + 5) as u8).collect();
        let full = base64::engine::general_purpose::STANDARD.encode(&audio);
        let frame = twilio_frame().replacen(PAYLOAD, &full, 1);
        let start = frame.find(&full).unwrap();
        assert!(parse(&frame).unwrap().base64.is_some());
        for at in start..start + full.len() + 1 {
            for byte in 0..0x80u8 {
                let mut text = frame.clone().into_bytes();
                text[at] = byte;
                agrees(std::str::from_utf8(&text).unwrap());
            }
        }
        // Padding of every length in place of the payload's tail.
        for cut in 0..8 {
            for pads in 0..4 {
                let payload = format!("{}{}", &full[..full.len() - cut], "=".repeat(pads));
                agrees(&frame.replacen(&full, &payload, 1));
            }
        }
    }

    #[test]
    fn every_single_byte_corruption_agrees() {
        let frame = twilio_frame();
        for at in 0..frame.len() {
            for replacement in ['"', '\\', ',', ':', '{', '}', ' ', 'x', '0', '\u{1}', 'é'] {
                let mut text = String::with_capacity(frame.len() + 2);
                text.push_str(&frame[..at]);
                text.push(replacement);
                text.push_str(&frame[at + 1..]);
                agrees(&text);
            }
            agrees(&frame[..at]);
        }
    }
}
