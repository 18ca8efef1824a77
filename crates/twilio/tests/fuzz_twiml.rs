//! Property tests of TwiML building: whatever text goes in (caller numbers, messages, URLs), the
//! document is well-formed XML whose attributes and text read back as that text.

use proptest::prelude::*;
use roxmltree::{Document, Node};
use twilio::twiml::{self, StreamParameters};

/// What an XML 1.0 document can carry of `text`: characters it forbids even as references (C0
/// controls but tab, LF and CR; U+FFFE; U+FFFF) are dropped by the builders; the rest survives.
fn representable(text: &str) -> String {
    text.chars()
        .filter(|&c| !matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'))
        .collect()
}

/// Any string, often full of XML's special characters and whitespace.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[<>&\"' \t\r\n;#a-z0-9\u{0}\u{1}\u{fffe}\u{ffff}é電🚀]{0,24}",
        Just("]]>".to_owned()),
        Just("&amp;&#10;&lt;".to_owned()),
    ]
}

fn parsed(xml: &str) -> Document<'_> {
    let doc = Document::parse(xml).unwrap_or_else(|e| panic!("not XML ({e}): {xml:?}"));
    assert_eq!(doc.root_element().tag_name().name(), "Response", "{xml}");
    doc
}

fn children<'a, 'i>(node: Node<'a, 'i>) -> Vec<Node<'a, 'i>> {
    node.children().filter(Node::is_element).collect()
}

fn names(nodes: &[Node<'_, '_>]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n.tag_name().name().to_owned())
        .collect()
}

proptest! {
    #[test]
    fn connect_reads_back(
        action in text(),
        stream in text(),
        call_sid in text(),
        from in prop::option::of(text()),
        to in prop::option::of(text()),
        resumed in prop::option::of(any::<u32>()),
    ) {
        let parameters = StreamParameters {
            call_sid: &call_sid,
            from_number: from.as_deref(),
            to_number: to.as_deref(),
            resumed,
        };
        let xml = twiml::connect(&action, &stream, &parameters);
        let doc = parsed(&xml);
        let top = children(doc.root_element());
        prop_assert_eq!(names(&top), ["Connect"]);
        prop_assert_eq!(top[0].attribute("action"), Some(&*representable(&action)));
        let inner = children(top[0]);
        prop_assert_eq!(names(&inner), ["Stream"]);
        prop_assert_eq!(inner[0].attribute("url"), Some(&*representable(&stream)));
        let got: Vec<(String, String)> = children(inner[0])
            .iter()
            .map(|p| {
                assert_eq!(p.tag_name().name(), "Parameter");
                (p.attribute("name").unwrap().to_owned(), p.attribute("value").unwrap().to_owned())
            })
            .collect();
        let mut expected = vec![("CallSid".to_owned(), representable(&call_sid))];
        for (name, value) in [("from_number", &from), ("to_number", &to)] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                expected.push((name.to_owned(), representable(v)));
            }
        }
        if let Some(n) = resumed {
            expected.push(("resumed".to_owned(), n.to_string()));
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn connect_stream_reads_back(stream in text(), params in prop::collection::vec((text(), text()), 0..5)) {
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let xml = twiml::connect_stream(&stream, &borrowed);
        let doc = parsed(&xml);
        let connect = children(doc.root_element());
        prop_assert_eq!(names(&connect), ["Connect"]);
        prop_assert_eq!(connect[0].attribute("action"), None);
        let streams = children(connect[0]);
        prop_assert_eq!(streams[0].attribute("url"), Some(&*representable(&stream)));
        let got: Vec<(String, String)> = children(streams[0])
            .iter()
            .map(|p| (p.attribute("name").unwrap().to_owned(), p.attribute("value").unwrap().to_owned()))
            .collect();
        let expected: Vec<(String, String)> =
            params.iter().map(|(n, v)| (representable(n), representable(v))).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn fallback_reads_back(message in text(), redirect in prop::option::of(text())) {
        for fixed in [twiml::hangup(), twiml::reject_busy()] {
            parsed(&fixed);
        }
        for xml in [twiml::fallback(&message, redirect.as_deref()), twiml::say_then(&message, redirect.as_deref())] {
            let doc = parsed(&xml);
            let verbs = children(doc.root_element());
            prop_assert_eq!(verbs[0].tag_name().name(), "Say");
            prop_assert_eq!(verbs[0].text().unwrap_or(""), representable(&message));
            match &redirect {
                Some(url) => {
                    prop_assert_eq!(names(&verbs), ["Say", "Redirect"]);
                    prop_assert_eq!(verbs[1].attribute("method"), Some("POST"));
                    prop_assert_eq!(verbs[1].text().unwrap_or(""), representable(url));
                }
                None => prop_assert_eq!(names(&verbs), ["Say", "Hangup"]),
            }
        }
    }

    #[test]
    fn urls_from_any_base_never_panic(base in prop_oneof![any::<String>(), "(https?|wss|ftp)://[a-zA-Z0-9.:@\\[\\]/?#%-]{0,30}"]) {
        for (built, scheme, path) in [
            (twiml::stream_url(&base), ["wss://", "ws://"], twiml::STREAM_PATH),
            (twiml::after_stream_url(&base), ["https://", "http://"], twiml::AFTER_STREAM_PATH),
        ] {
            if let Ok(url) = built {
                prop_assert!(scheme.iter().any(|s| url.starts_with(s)), "{}", url);
                prop_assert!(url.ends_with(path), "{}", url);
                prop_assert!(url::Url::parse(&url).is_ok(), "{}", url);
                // It goes into an attribute: it must read back from the document too.
                let xml = twiml::connect(&url, &url, &StreamParameters::new("CA1"));
                let doc = parsed(&xml);
                let connect = children(doc.root_element())[0];
                prop_assert_eq!(connect.attribute("action"), Some(&*url));
                prop_assert_eq!(children(connect)[0].attribute("url"), Some(&*url));
            }
        }
    }
}
