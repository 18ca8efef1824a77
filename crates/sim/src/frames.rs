//! The Media Streams messages a simulated call sends. `media` is built once per call as a ready,
//! masked WebSocket frame; every 20 ms only its counters and echo tag are patched in place.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;

use super::ws::{self, opcode};

/// 20 ms of 8 kHz mu-law.
pub const AUDIO_BYTES: usize = 160;
/// Audio bytes that carry the echo tag: the chunk number (big-endian u32) then two 0xff bytes.
/// Six bytes are exactly eight base64 characters, so the tag never shares a character with the
/// rest of the audio and can be rewritten on its own.
const TAG_BYTES: usize = 6;
const TAG_CHARS: usize = 8;
/// The rest of the audio is digital silence (0xff in mu-law).
const SILENCE: u8 = 0xff;

/// The `media` message of one call, ready to write.
pub struct MediaFrame {
    /// The message text, unmasked.
    json: Vec<u8>,
    /// Header, mask and masked text: what goes on the wire.
    wire: Vec<u8>,
    header_len: usize,
    mask: [u8; 4],
    stream_sid: String,
    /// `sequenceNumber`, `chunk`, `timestamp`: where their digits sit in `json`, and how many.
    fields: [(usize, usize); 3],
    tag_at: usize,
}

impl MediaFrame {
    pub fn new(stream_sid: &str, mask: [u8; 4]) -> Self {
        let mut frame = Self {
            json: Vec::with_capacity(400),
            wire: Vec::with_capacity(420),
            header_len: 0,
            mask,
            stream_sid: stream_sid.to_owned(),
            fields: [(0, 0); 3],
            tag_at: 0,
        };
        frame.rebuild([1, 1, 0], 1);
        frame
    }

    /// The wire bytes of the message with `sequence` carrying audio chunk `chunk` (from 1).
    /// Only a change in a counter's digit count rebuilds the message; otherwise the digits and
    /// the tag are overwritten and re-masked where they are.
    pub fn frame(&mut self, sequence: u64, chunk: u32) -> &[u8] {
        let timestamp = u64::from(chunk.saturating_sub(1)) * 20;
        let values = [sequence, u64::from(chunk), timestamp];
        let same_widths = self
            .fields
            .iter()
            .zip(values)
            .all(|(&(_, width), value)| width == digits(value));
        if !same_widths {
            self.rebuild(values, chunk);
            return &self.wire;
        }
        let fields = self.fields;
        for (&(at, width), value) in fields.iter().zip(values) {
            write_decimal(&mut self.json[at..at + width], value);
            self.remask(at, width);
        }
        write_tag(&mut self.json[self.tag_at..self.tag_at + TAG_CHARS], chunk);
        self.remask(self.tag_at, TAG_CHARS);
        &self.wire
    }

    fn remask(&mut self, at: usize, len: usize) {
        let start = self.header_len + at;
        self.wire[start..start + len].copy_from_slice(&self.json[at..at + len]);
        ws::apply_mask(&mut self.wire[start..start + len], self.mask, at);
    }

    fn rebuild(&mut self, [sequence, chunk_number, timestamp]: [u64; 3], chunk: u32) {
        let json = &mut self.json;
        json.clear();
        let field = |json: &mut Vec<u8>, before: &str, value: u64| {
            json.extend_from_slice(before.as_bytes());
            let at = json.len();
            let width = digits(value);
            json.resize(at + width, b'0');
            write_decimal(&mut json[at..], value);
            (at, width)
        };
        let seq = field(json, r#"{"event":"media","sequenceNumber":""#, sequence);
        let chunk_field = field(
            json,
            r#"","media":{"track":"inbound","chunk":""#,
            chunk_number,
        );
        let ts = field(json, r#"","timestamp":""#, timestamp);
        json.extend_from_slice(br#"","payload":""#);
        self.tag_at = json.len();
        json.resize(self.tag_at + TAG_CHARS, b'A');
        write_tag(&mut json[self.tag_at..], chunk);
        json.extend_from_slice(BASE64.encode([SILENCE; AUDIO_BYTES - TAG_BYTES]).as_bytes());
        json.extend_from_slice(br#""},"streamSid":""#);
        json.extend_from_slice(self.stream_sid.as_bytes());
        json.extend_from_slice(br#""}"#);
        self.fields = [seq, chunk_field, ts];
        self.wire.clear();
        ws::encode_frame(&mut self.wire, opcode::TEXT, &self.json, self.mask);
        self.header_len = self.wire.len() - self.json.len();
    }
}

/// The chunk number an echoed payload carries, if it is one of ours.
pub fn tag_of(payload_b64: &[u8]) -> Option<u32> {
    let mut audio = [0u8; 9];
    let n = BASE64
        .decode_slice(payload_b64.get(..TAG_CHARS)?, &mut audio)
        .ok()?;
    (n == TAG_BYTES && audio[4] == SILENCE && audio[5] == SILENCE)
        .then(|| u32::from_be_bytes([audio[0], audio[1], audio[2], audio[3]]))
}

fn write_tag(out: &mut [u8], chunk: u32) {
    let mut audio = [SILENCE; TAG_BYTES];
    audio[..4].copy_from_slice(&chunk.to_be_bytes());
    // Six bytes always encode to exactly eight characters.
    let _ = BASE64.encode_slice(audio, out);
}

fn digits(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 10 {
        value /= 10;
        n += 1;
    }
    n
}

/// Writes `value` right-aligned into `out`, which is exactly `digits(value)` long.
fn write_decimal(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// A one-off control message as a masked frame (these are rare, so they are simply built).
pub fn text_frame(text: &str, mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 14);
    ws::encode_frame(&mut out, opcode::TEXT, text.as_bytes(), mask);
    out
}

pub fn connected() -> String {
    json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string()
}

pub struct StartIds<'a> {
    pub call_sid: &'a str,
    pub stream_sid: &'a str,
    pub account_sid: &'a str,
}

/// Twilio's `start`: `customParameters` are the TwiML's `<Parameter>`s as given (`CallSid`,
/// `from_number`, `to_number`, `resumed`, …), or just the call SID for a stream opened without a
/// webhook.
pub fn start(ids: &StartIds<'_>, parameters: &[(String, String)]) -> String {
    let parameters: serde_json::Map<String, serde_json::Value> = if parameters.is_empty() {
        std::iter::once(("CallSid".to_owned(), ids.call_sid.into())).collect()
    } else {
        parameters
            .iter()
            .map(|(name, value)| (name.clone(), value.as_str().into()))
            .collect()
    };
    json!({
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ids.account_sid,
            "streamSid": ids.stream_sid,
            "callSid": ids.call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": parameters
        },
        "streamSid": ids.stream_sid
    })
    .to_string()
}

pub fn dtmf(sequence: u64, stream_sid: &str, digit: &str) -> String {
    json!({"event": "dtmf", "streamSid": stream_sid, "sequenceNumber": sequence.to_string(),
           "dtmf": {"track": "inbound_track", "digit": digit}})
    .to_string()
}

pub fn mark(sequence: u64, stream_sid: &str, name: &str) -> String {
    json!({"event": "mark", "sequenceNumber": sequence.to_string(), "streamSid": stream_sid,
           "mark": {"name": name}})
    .to_string()
}

pub fn stop(sequence: u64, ids: &StartIds<'_>) -> String {
    json!({"event": "stop", "sequenceNumber": sequence.to_string(), "streamSid": ids.stream_sid,
           "stop": {"accountSid": ids.account_sid, "callSid": ids.call_sid}})
    .to_string()
}

/// A close frame with `code` and no reason.
pub fn close(code: u16, mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    ws::encode_frame(&mut out, opcode::CLOSE, &code.to_be_bytes(), mask);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use twilio::messages::{self, Inbound};

    fn unmask(wire: &[u8]) -> String {
        let header = match wire[1] & 0x7f {
            126 => 8,
            127 => 14,
            _ => 6,
        };
        let mask: [u8; 4] = wire[header - 4..header].try_into().unwrap();
        let mut body = wire[header..].to_vec();
        ws::apply_mask(&mut body, mask, 0);
        String::from_utf8(body).unwrap()
    }

    #[test]
    fn patched_frames_equal_freshly_built_ones_and_parse_as_twilio_media() {
        let sid = "MZ0123456789abcdef0123456789abcdef";
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut patched = MediaFrame::new(sid, mask);
        for (sequence, chunk) in [
            (2u64, 1u32),
            (3, 2),
            (11, 10),
            (12, 11),
            (999, 998),
            (1001, 1000),
            (100_002, 100_001),
        ] {
            let wire = patched.frame(sequence, chunk).to_vec();
            let mut fresh = MediaFrame::new(sid, mask);
            fresh.rebuild(
                [sequence, u64::from(chunk), u64::from(chunk - 1) * 20],
                chunk,
            );
            assert_eq!(wire, fresh.wire, "seq {sequence}");
            let text = unmask(&wire);
            let Ok(Inbound::Media(media)) = messages::parse(&text) else {
                panic!("not media: {text}")
            };
            assert_eq!(media.sequence_number, Some(sequence));
            assert_eq!(media.chunk, Some(u64::from(chunk)));
            assert_eq!(media.timestamp, Some(u64::from(chunk - 1) * 20));
            assert_eq!(media.stream_sid.as_deref(), Some(sid));
            let audio = BASE64.decode(media.payload.as_bytes()).unwrap();
            assert_eq!(audio.len(), AUDIO_BYTES);
            assert_eq!(tag_of(media.payload.as_bytes()), Some(chunk));
        }
    }

    #[test]
    fn tags_are_recognised_only_when_ours() {
        assert_eq!(tag_of(b"AAAAAf//"), Some(1));
        assert_eq!(tag_of(b"AAAAAQAA"), None);
        assert_eq!(tag_of(b"short"), None);
        assert_eq!(tag_of(b"!!!!!!!!"), None);
    }
}
