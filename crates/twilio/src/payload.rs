//! The base64 audio payload of a `media` message, checked and measured without decoding it, for
//! media handlers that never look at the audio (echo forwards the text, silent drops it).
//! A checked payload is a [`Base64`]: an outbound frame copies it without scanning it for escapes.

use std::ops::Range;

/// The number of audio bytes `payload` decodes to under standard base64 with canonical padding,
/// or `None` where `base64`'s `STANDARD` engine would refuse it (length not a multiple of four,
/// a byte outside the alphabet, misplaced or excess `=`, non-zero bits after the last byte).
#[inline]
pub fn decoded_len(payload: &[u8]) -> Option<usize> {
    if !payload.len().is_multiple_of(4) {
        return None;
    }
    let pads = payload
        .iter()
        .rev()
        .take(2)
        .take_while(|&&b| b == b'=')
        .count();
    let data = &payload[..payload.len() - pads];
    // A range check per character, folded with no early exit and no table: LLVM vectorises it.
    if data
        .iter()
        .fold(false, |bad, &byte| bad | !in_alphabet(byte))
    {
        return None;
    }
    padded_len(data, pads)
}

/// How many bytes from the start of `bytes` are of the 64-character alphabet (no `=`). Sixteen
/// at a time, each block a fold with no early exit (vectorised as in [`decoded_len`]); the block
/// that holds the first other byte is then read byte by byte. The fast parser finds a payload's
/// closing quote with it: a run of the alphabet holds no quote, backslash or control character.
pub(crate) fn alphabet_run(bytes: &[u8]) -> usize {
    let mut at = 0;
    for block in bytes.chunks_exact(16) {
        if block
            .iter()
            .fold(false, |bad, &byte| bad | !in_alphabet(byte))
        {
            break;
        }
        at += 16;
    }
    // Byte by byte through the table, a load and a test each: the three range checks are
    // cheaper only sixteen at a time.
    at + bytes[at..]
        .iter()
        .take_while(|&&byte| SEXTET[usize::from(byte)] != INVALID)
        .count()
}

/// The base64 text `bytes` starts with, as [`Base64::of_run`] takes it: the alphabet's run and how
/// many `=` follow it (at most two are counted; a third is the caller's to refuse).
pub(crate) fn padded_run(bytes: &[u8]) -> (usize, usize) {
    let data = alphabet_run(bytes);
    let pads = bytes[data..]
        .iter()
        .take(2)
        .take_while(|&&b| b == b'=')
        .count();
    (data, pads)
}

/// [`decoded_len`] of `data` (all of the alphabet) followed by `pads` `=` (at most two).
pub(crate) fn padded_len(data: &[u8], pads: usize) -> Option<usize> {
    let len = data.len() + pads;
    if !len.is_multiple_of(4) || pads > 2 {
        return None;
    }
    // The character before the padding may only carry bits that end up in a decoded byte.
    let spare_bits = match pads {
        1 => 0b11,
        2 => 0b1111,
        _ => 0,
    };
    if let Some(&last) = data.last()
        && SEXTET[usize::from(last)] & spare_bits != 0
    {
        return None;
    }
    Some(len / 4 * 3 - pads)
}

/// Text of the base64 alphabet only (`A`-`Z`, `a`-`z`, `0`-`9`, `+`, `/`, `=`), none of which a
/// JSON string escapes: [`crate::messages::media_after_base64`] copies it as it is, where
/// [`crate::messages::media_after`] scans a `&str` for escapes first. Made only from a payload
/// [`decoded_len`] accepts, or as a slice of a [`Payloads`] buffer, which holds nothing else; any
/// slice of such text is such text too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base64<'a>(&'a str);

impl<'a> Base64<'a> {
    /// `payload` and the number of audio bytes it decodes to, if [`decoded_len`] accepts it: the
    /// one scan of the payload serves both the count and the outbound frame.
    #[inline]
    pub fn new(payload: &'a str) -> Option<(Self, usize)> {
        decoded_len(payload.as_bytes()).map(|len| (Self(payload), len))
    }

    /// `data` (of the alphabet only, as [`alphabet_run`] found it) and `pads` `=` after it in
    /// `text`, checked as [`Base64::new`] checks it without reading `data` again.
    pub(crate) fn of_run(text: &'a str, data_len: usize, pads: usize) -> Option<(Self, usize)> {
        let data = &text.as_bytes()[..data_len];
        debug_assert!(data.iter().all(|&byte| in_alphabet(byte)));
        debug_assert!(
            text.len() == data_len + pads && text.bytes().skip(data_len).all(|b| b == b'=')
        );
        padded_len(data, pads).map(|len| (Self(text), len))
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }
}

/// Base64 payloads kept back to back in one buffer that is reused frame after frame (a handler's
/// outbox): each comes back as a [`Base64`] without being checked again.
#[derive(Debug, Default)]
pub struct Payloads(String);

impl Payloads {
    /// Appends `payload`; the range it occupies is what [`Payloads::get`] takes.
    pub fn push(&mut self, payload: Base64<'_>) -> Range<usize> {
        let start = self.0.len();
        self.0.push_str(payload.0);
        start..self.0.len()
    }

    /// The text in `range`, `None` past the end. Every byte is ASCII, so every range within the
    /// buffer is a string, and of the alphabet only.
    pub fn get(&self, range: Range<usize>) -> Option<Base64<'_>> {
        self.0.get(range).map(Base64)
    }

    /// Forgets the payloads, keeping the memory.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Whether `byte` is one of the 64 characters of the standard alphabet; `|`, not `||`, so that
/// the loop over a payload has no branches.
#[inline]
fn in_alphabet(byte: u8) -> bool {
    // Three tests, not five: `| 0x20` maps `A`-`Z` onto `a`-`z` and no other byte into that
    // range; `/` (0x2f) sits right below the digits.
    ((byte | 0x20).wrapping_sub(b'a') < 26) | (byte.wrapping_sub(b'/') < 11) | (byte == b'+')
}

const INVALID: u8 = 0x80;

/// Each byte's six-bit value in the standard alphabet, or `INVALID`.
static SEXTET: [u8; 256] = {
    let mut table = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use super::*;

    fn agrees(text: &[u8]) {
        assert_eq!(
            decoded_len(text),
            BASE64.decode(text).ok().map(|audio| audio.len()),
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }

    #[test]
    fn base64_is_made_only_of_what_decoded_len_accepts_and_slices_of_it() {
        assert_eq!(
            Base64::new("AAAA/w==").map(|(b, n)| (b.as_str(), n)),
            Some(("AAAA/w==", 4))
        );
        for bad in ["a", "AA\"A", "AA\\A", "AA\nA", "AAA=A==="] {
            assert_eq!(Base64::new(bad), None, "{bad:?}");
        }
        let mut kept = Payloads::default();
        let first = kept.push(Base64::new("//8A").unwrap().0);
        let second = kept.push(Base64::new("fn5+fg==").unwrap().0);
        assert_eq!(kept.get(first.clone()).map(Base64::as_str), Some("//8A"));
        assert_eq!(
            kept.get(second.clone()).map(Base64::as_str),
            Some("fn5+fg==")
        );
        assert_eq!(kept.get(2..6).map(Base64::as_str), Some("8Afn"));
        assert_eq!(kept.get(0..13), None);
        kept.clear();
        assert_eq!(kept.get(first), None);
    }

    /// The run the fast parser reads a payload with ends at the first byte outside the alphabet,
    /// wherever it is.
    #[test]
    fn alphabet_run_stops_at_the_first_other_byte() {
        for len in 0..70 {
            let text: Vec<u8> = (0..len).map(|i| b"Az09+/"[i % 6]).collect();
            assert_eq!(alphabet_run(&text), len);
            for at in 0..len {
                for other in [b'=', b'"', b'\\', 0, b'-', 0xff] {
                    let mut bad = text.clone();
                    bad[at] = other;
                    assert_eq!(alphabet_run(&bad), at, "{len} {at} {other}");
                }
            }
        }
    }

    #[test]
    fn the_alphabet_test_is_the_table() {
        for byte in 0..=255u8 {
            assert_eq!(
                in_alphabet(byte),
                SEXTET[usize::from(byte)] != INVALID,
                "{byte}"
            );
        }
    }

    #[test]
    fn agrees_with_the_decoder_on_real_payloads() {
        for len in 0..200 {
            let audio: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = BASE64.encode(&audio);
            assert_eq!(decoded_len(text.as_bytes()), Some(len));
        }
    }

    #[test]
    fn agrees_with_the_decoder_on_any_byte_at_any_position_of_a_frame() {
        let audio: Vec<u8> = (0..160u32).map(|i| (i * 73 + 5) as u8).collect();
        let text = BASE64.encode(&audio).into_bytes();
        assert_eq!(text.len(), 216);
        for at in 0..text.len() {
            for byte in 0..=255u8 {
                let mut bad = text.clone();
                bad[at] = byte;
                agrees(&bad);
            }
        }
    }

    #[test]
    fn agrees_with_the_decoder_on_every_short_input() {
        // Every string of up to four characters over a set that covers the alphabet's edges,
        // padding, and bytes outside it.
        let chars = b"AQgwBP/+9z=\0 -_.\xff";
        let mut inputs: Vec<Vec<u8>> = vec![vec![]];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = inputs
                .iter()
                .filter(|s| s.len() == inputs.last().map_or(0, Vec::len))
                .flat_map(|s| {
                    chars.iter().map(move |&c| {
                        let mut t = s.clone();
                        t.push(c);
                        t
                    })
                })
                .collect();
            inputs.extend(longer);
        }
        assert!(inputs.len() > 80_000, "{}", inputs.len());
        for input in &inputs {
            agrees(input);
            // The same quad after a valid one: padding in the middle must fail too.
            let mut twice = b"AAAA".to_vec();
            twice.extend_from_slice(input);
            agrees(&twice);
            let mut before = input.clone();
            before.extend_from_slice(b"AAAA");
            agrees(&before);
        }
    }
}
