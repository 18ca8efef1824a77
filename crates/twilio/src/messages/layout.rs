//! A `media` message spelled exactly as Twilio writes it, matched as a template: the fixed text
//! between the values compared a word at a time, the values read where they must be.
//! Any other spelling, however valid, is declined here and read by the one-pass scanner (`fast`).

use std::borrow::Cow;

use super::fast::{Literal, leading_digits};
use super::inbound::{Media, Track};
use crate::payload::{self, Base64};

/// Twilio's frame, its values left out: `{"event":"media","sequenceNumber":"4","media":{"track":
/// "inbound","chunk":"2","timestamp":"5","payload":"…"},"streamSid":"MZ…"}` with no whitespace.
const HEAD: Literal<3> = Literal::new(b"{\"event\":\"media\",\"sequenceNumber\":\"");
const TO_CHUNK: Literal<3> = Literal::new(b"\",\"media\":{\"track\":\"inbound\",\"chunk\":\"");
const TO_TIMESTAMP: Literal = Literal::new(b"\",\"timestamp\":\"");
const TO_PAYLOAD: Literal = Literal::new(b"\",\"payload\":\"");
const TO_STREAM_SID: Literal = Literal::new(b"\"},\"streamSid\":\"");

/// `text` as a `media` message if it is spelled exactly as Twilio spells one (above): counters of
/// 1 to 19 digits, a payload and a stream SID of the base64 alphabet. `None` declines, it does
/// not refuse: every input this reads, the full parser reads as the same `Media`.
#[inline]
pub(crate) fn media(text: &str) -> Option<Media<'_>> {
    let mut m = Matcher {
        bytes: text.as_bytes(),
        at: 0,
    };
    m.text(&HEAD)?;
    let sequence_number = m.digits()?;
    m.text(&TO_CHUNK)?;
    let chunk = m.digits()?;
    m.text(&TO_TIMESTAMP)?;
    let timestamp = m.digits()?;
    m.text(&TO_PAYLOAD)?;
    let start = m.at;
    let (data, pads) = payload::padded_run(&m.bytes[start..]);
    m.at = start + data + pads;
    let payload_end = m.at;
    m.text(&TO_STREAM_SID)?;
    let sid_start = m.at;
    m.at += payload::alphabet_run(&m.bytes[sid_start..]);
    let sid_end = m.at;
    // The SID's closing quote, the object's end, and nothing after it.
    if &m.bytes[sid_end..] != b"\"}" {
        return None;
    }
    // Every boundary sits next to an ASCII byte, so each slice is a string.
    let payload = &text[start..payload_end];
    Some(Media {
        base64: Base64::of_run(payload, data, pads),
        sequence_number: Some(sequence_number),
        stream_sid: Some(Cow::Borrowed(&text[sid_start..sid_end])),
        track: Some(Track::Inbound),
        chunk: Some(chunk),
        timestamp: Some(timestamp),
        payload: Cow::Borrowed(payload),
    })
}

struct Matcher<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Matcher<'_> {
    /// Consumes `text` if the unread bytes start with it.
    #[inline]
    fn text<const N: usize>(&mut self, text: &Literal<N>) -> Option<()> {
        text.is_prefix_of(&self.bytes[self.at..])
            .then(|| self.at += text.len())
    }

    /// 1 to 19 ASCII digits and their value; the byte after them is the next text's to match. A
    /// twentieth digit declines: the full parser decides whether it fits.
    #[inline]
    fn digits(&mut self) -> Option<u64> {
        let (value, len) = leading_digits(&self.bytes[self.at..])?;
        self.at += len;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twilio_frame(payload: &str) -> String {
        format!(
            r#"{{"event":"media","sequenceNumber":"4","media":{{"track":"inbound","chunk":"2","timestamp":"5","payload":"{payload}"}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}}"#
        )
    }

    fn full_payload() -> String {
        use base64::Engine;
        let audio: Vec<u8> = (0..160u32).map(|i| (i * 73 + 5) as u8).collect();
        base64::engine::general_purpose::STANDARD.encode(&audio)
    }

    /// Whatever the template reads must be what the full parser reads; returns whether it read it.
    fn agrees(text: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(text) else {
            return false;
        };
        crate::messages::agrees_with_serde(text, media(text))
    }

    #[test]
    fn twilios_frames_match_the_template() {
        for payload in [
            full_payload().as_str(),
            "/v7+fn5+fn5+/v7+",
            "",
            "AA==",
            "AAA=",
        ] {
            assert!(agrees(twilio_frame(payload).as_bytes()), "{payload}");
        }
        let frame = twilio_frame(&full_payload());
        let read = media(&frame).unwrap();
        assert_eq!(read.base64.map(|(_, len)| len), Some(160));
        assert_eq!(read.sequence_number, Some(4));
        assert_eq!(
            read.stream_sid.as_deref(),
            Some("MZ18ad3ab5a668481ce02b83e7395059f0")
        );
        // The simulator's frames are Twilio's spelling too.
        assert!(agrees(
            br#"{"event":"media","sequenceNumber":"18446744073","media":{"track":"inbound","chunk":"9999999999999999999","timestamp":"0","payload":"AA=="},"streamSid":"MZ1"}"#
        ));
    }

    /// Every byte value at every position, and every truncation: a changed byte either leaves
    /// the frame Twilio's spelling or the template declines; it never reads something else.
    #[test]
    fn every_byte_at_every_position_agrees_or_declines() {
        for payload in [full_payload(), "AA==".to_owned()] {
            let frame = twilio_frame(&payload).into_bytes();
            let mut read = 0;
            for at in 0..frame.len() {
                for byte in 0..=0xffu8 {
                    let mut text = frame.clone();
                    text[at] = byte;
                    read += usize::from(agrees(&text));
                }
                assert!(!agrees(&frame[..at]), "a truncation at {at} was read");
            }
            // Digits, payload and SID characters change values; the rest must decline.
            assert!(read > frame.len() * 10, "only {read} variants were read");
        }
    }

    #[test]
    fn counters_of_every_length_agree_or_decline() {
        let frame = twilio_frame("AA==");
        for digits in 0..=22 {
            for lead in ["1", "9", "0"] {
                let counter = format!("{lead}{}", "9".repeat(digits));
                for field in ["\"4\"", "\"2\"", "\"5\""] {
                    let text = frame.replacen(field, &format!("\"{counter}\""), 1);
                    assert_eq!(agrees(text.as_bytes()), counter.len() <= 19, "{text}");
                }
            }
        }
        for field in ["\"4\"", "\"2\"", "\"5\""] {
            assert!(!agrees(frame.replacen(field, "\"\"", 1).as_bytes()));
            assert!(!agrees(frame.replacen(field, "4", 1).as_bytes()));
        }
    }

    #[test]
    fn other_spellings_decline() {
        let frame = twilio_frame("AA==");
        for (from, to) in [
            ("\"inbound\"", "\"outbound\""),
            ("{\"event\"", "{ \"event\""),
            ("\"},", "\" },"),
            ("\"MZ18", "\"MZ-18"),
            ("\"MZ18", "\"MZ\\u0031"),
            ("\"AA==\"", "\"AA\\u003d=\""),
            ("\"AA==\"", "\"AA===\""),
        ] {
            let text = frame.replacen(from, to, 1);
            assert_ne!(text, frame);
            assert!(!agrees(text.as_bytes()), "{text}");
        }
        assert!(!agrees(format!("{frame} ").as_bytes()));
        assert!(!agrees(format!("{frame}}}").as_bytes()));
    }
}
