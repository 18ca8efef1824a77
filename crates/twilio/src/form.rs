//! Twilio's request forms (`application/x-www-form-urlencoded`, a webhook's body or a GET's query):
//! the same pairs, decoded the same way, as `form_urlencoded::parse(..).collect()`, for less work.
//!
//! Why not `form_urlencoded` itself: it percent-decodes every name and value through an iterator
//! and checks each as UTF-8 the lossy way, about 1,000 instructions a pair; a webhook's form is a
//! handful of plain ASCII pairs, which here cost a scan for `%`/`+` and a `from_utf8`, and a pair
//! that needs decoding one pass into a buffer of its size (docs/benchmarks.md, sixth round).

use std::borrow::Cow;

/// The form's pairs in the order they came, empty pieces (`a&&b`) skipped. A name or value with no
/// `+`, `%` or invalid UTF-8 in it is borrowed from `input`.
pub fn parse(input: &[u8]) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    // One allocation of the right size: a webhook has ~7-30 pairs, which grow a `Vec` 3-4 times.
    let mut pairs = Vec::with_capacity(input.iter().filter(|&&b| b == b'&').count() + 1);
    for piece in input.split(|&b| b == b'&') {
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(at) => (&piece[..at], &piece[at + 1..]),
            None => (piece, &[][..]),
        };
        pairs.push((decode(name), decode(value)));
    }
    pairs
}

/// `+` as a space, `%XX` as its byte (a malformed escape left as it is), then UTF-8 with U+FFFD
/// for invalid sequences: `form_urlencoded`'s decoding, byte for byte.
fn decode(raw: &[u8]) -> Cow<'_, str> {
    if !raw.iter().any(|&b| b == b'+' || b == b'%') {
        return match std::str::from_utf8(raw) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => Cow::Owned(String::from_utf8_lossy(raw).into_owned()),
        };
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, after)) = rest.split_first() {
        rest = after;
        bytes.push(match byte {
            b'+' => b' ',
            b'%' => match (rest.first().and_then(hex), rest.get(1).and_then(hex)) {
                (Some(high), Some(low)) => {
                    rest = &rest[2..];
                    high << 4 | low
                }
                _ => b'%',
            },
            other => other,
        });
    }
    match String::from_utf8(bytes) {
        Ok(text) => Cow::Owned(text),
        Err(err) => Cow::Owned(String::from_utf8_lossy(err.as_bytes()).into_owned()),
    }
}

fn hex(digit: &u8) -> Option<u8> {
    char::from(*digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(input: &[u8]) -> Vec<(String, String)> {
        url::form_urlencoded::parse(input)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn ours(input: &[u8]) -> Vec<(String, String)> {
        parse(input)
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn a_twilio_webhook_form_decodes_as_form_urlencoded_does() {
        let body =
            b"CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC01&From=%2B15005550006\
                     &To=%2B15005550001&CallStatus=ringing&Direction=inbound&ApiVersion=2010-04-01\
                     &CallerName=Ana+Lu%C3%ADsa";
        let pairs = parse(body);
        assert_eq!(ours(body), reference(body));
        assert_eq!(pairs[2].1, "+15005550006");
        assert_eq!(pairs[7].1, "Ana Luísa");
        // Plain pieces are borrowed, not copied.
        assert!(matches!(pairs[0].1, Cow::Borrowed(_)));
        assert!(matches!(pairs[2].1, Cow::Owned(_)));
    }

    #[test]
    fn edge_cases_decode_as_form_urlencoded_does() {
        let cases: &[&[u8]] = &[
            b"",
            b"&",
            b"&&a=1&&",
            b"a",
            b"a=",
            b"=b",
            b"=",
            b"a=b=c",
            b"a=%",
            b"a=%4",
            b"a=%zz%41",
            b"a=%FF",
            b"%FF=\xff\xfe",
            b"a=\xe2\x82",
            b"a+b=c+%2B+d",
            b"a=%2",
            b"x=%C3%A9%",
        ];
        for case in cases {
            assert_eq!(
                ours(case),
                reference(case),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    proptest! {
        #[test]
        fn any_input_decodes_as_form_urlencoded_does(
            input in proptest::collection::vec(
                prop_oneof![
                    Just(b'&'), Just(b'='), Just(b'+'), Just(b'%'), Just(b'A'), Just(b'f'),
                    Just(b'2'), Just(0xC3u8), Just(0xA9u8), Just(0xFFu8), any::<u8>()
                ],
                0..64,
            )
        ) {
            prop_assert_eq!(ours(&input), reference(&input));
        }
    }
}
