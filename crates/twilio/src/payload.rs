//! The base64 audio payload of a `media` message, checked and measured without decoding it, for
//! media handlers that never look at the audio (echo forwards the text, silent drops it).

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
    Some(payload.len() / 4 * 3 - pads)
}

/// Whether `byte` is one of the 64 characters of the standard alphabet; `|`, not `||`, so that
/// the loop over a payload has no branches.
#[inline]
fn in_alphabet(byte: u8) -> bool {
    (byte.wrapping_sub(b'A') < 26)
        | (byte.wrapping_sub(b'a') < 26)
        | (byte.wrapping_sub(b'0') < 10)
        | (byte == b'+')
        | (byte == b'/')
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
