//! Outbound Media Streams frames (`media`, `mark`, `clear`), written straight into a buffer the
//! stream loop reuses: once it has grown to a frame's size, building one allocates nothing.

use bytes::BytesMut;

use crate::payload::Base64;

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
/// Once `buf` has grown to a frame's size, building further frames allocates nothing. A stream
/// that sends many frames builds its [`MediaHead`] once and uses [`media_after`].
pub fn media(buf: &mut impl TextBuf, stream_sid: &str, payload_b64: &str) {
    buf.clear();
    buf.reserve(60 + stream_sid.len() + payload_b64.len());
    push_media_head(buf, stream_sid);
    push_media_tail(buf, payload_b64);
}

/// What a call's `media` frames share: `{"event":"media","streamSid":…,"media":{"payload":"`,
/// with the SID escaped once per call instead of scanned on every frame.
pub struct MediaHead(String);

impl MediaHead {
    pub fn new(stream_sid: &str) -> Self {
        let mut head = String::with_capacity(50 + stream_sid.len());
        push_media_head(&mut head, stream_sid);
        Self(head)
    }
}

/// Replaces `buf` with the same frame as [`media`] for the call `head` was built for.
pub fn media_after(buf: &mut impl TextBuf, head: &MediaHead, payload_b64: &str) {
    buf.clear();
    buf.reserve(head.0.len() + payload_b64.len() + 4);
    buf.push_str(&head.0);
    push_media_tail(buf, payload_b64);
}

/// [`media_after`] for a payload known to be base64: copied into the frame as it is, since no
/// character of the alphabet is escaped in JSON (the echo path checked it on the way in).
pub fn media_after_base64(buf: &mut impl TextBuf, head: &MediaHead, payload: Base64<'_>) {
    let payload = payload.as_str();
    buf.clear();
    buf.reserve(head.0.len() + payload.len() + 4);
    buf.push_str(&head.0);
    buf.push_str(payload);
    buf.push_str("\"}}");
}

fn push_media_head(buf: &mut impl TextBuf, stream_sid: &str) {
    buf.push_str(r#"{"event":"media","streamSid":"#);
    push_json_str(buf, stream_sid);
    // The payload's opening quote too: one push fewer per frame.
    buf.push_str(r#","media":{"payload":""#);
}

fn push_media_tail(buf: &mut impl TextBuf, payload_b64: &str) {
    push_json_body(buf, payload_b64);
    buf.push_str("\"}}");
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
    out.push_str("\"");
    push_json_body(out, text);
    out.push_str("\"");
}

/// [`push_json_str`] without the quotes.
fn push_json_body(out: &mut impl TextBuf, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Payloads (base64) and SIDs never need escaping: one word-at-a-time scan says so, and the
    // text is copied whole instead of byte by byte.
    if super::fast::first_special(text.as_bytes()).is_none() {
        out.push_str(text);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Inbound, parse};

    const STREAM: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";
    /// 20 ms of μ-law silence is 160 bytes of 0xff; this is a shorter real-looking chunk.
    const PAYLOAD: &str = "fn5+fn5+fn5+/v7+/v7+/v7+/v7+fn5+fn5+fn5+fv7+/v7+";

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
        let mut same = BytesMut::from("left over");
        media_after(&mut same, &MediaHead::new(STREAM), PAYLOAD);
        assert_eq!(same, buf.as_bytes());
        let mut checked = BytesMut::from("left over too");
        let payload = Base64::new(PAYLOAD).unwrap().0;
        media_after_base64(&mut checked, &MediaHead::new(STREAM), payload);
        assert_eq!(checked, buf.as_bytes());
        // Every payload length, padded or not: the unscanned copy is the escaped one.
        for len in 0..40u8 {
            let audio: Vec<u8> = (0..len).map(|i| i.wrapping_mul(151)).collect();
            let text =
                base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, &audio);
            let payload = Base64::new(&text).unwrap().0;
            media_after(&mut buf, &MediaHead::new(STREAM), &text);
            media_after_base64(&mut checked, &MediaHead::new(STREAM), payload);
            assert_eq!(checked, buf.as_bytes(), "{text}");
        }
        media(&mut buf, STREAM, PAYLOAD);
        for (sid, payload) in [("MZ\"\u{1}\\", "a\nb\""), ("", ""), ("ü 電話", "\u{1f}")] {
            media(&mut buf, sid, payload);
            media_after(&mut same, &MediaHead::new(sid), payload);
            assert_eq!(same, buf.as_bytes(), "{sid:?} {payload:?}");
            let value: serde_json::Value = serde_json::from_str(&buf).unwrap();
            assert_eq!(value["streamSid"], sid);
            assert_eq!(value["media"]["payload"], payload);
        }
        media(&mut buf, STREAM, PAYLOAD);
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
