//! Property tests of request signing and the form parsing in front of it: no input panics them,
//! a request Twilio signed is accepted in any parameter order, and any change to it is refused.

use proptest::prelude::*;
use twilio::signature;
use url::form_urlencoded;

type Params = Vec<(String, String)>;

fn params() -> impl Strategy<Value = Params> {
    let text = prop_oneof![3 => "[A-Za-z0-9+ ._-]{0,16}", 1 => any::<String>()];
    prop::collection::vec((text.clone(), text), 0..8)
}

/// URLs shaped like the ones Twilio signs, and near misses: odd schemes, userinfo, IPv6, ports
/// that are not ports, queries with colons.
fn url() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "https", "http", "wss", "ws", "HTTPS", "ftp", "mailto", "",
    ]);
    let sep = prop::sample::select(vec!["://", ":", ""]);
    let userinfo = prop::sample::select(vec!["", "u@", "u:p@", "u:443@", "@", ":@"]);
    let host = prop::sample::select(vec![
        "h.example",
        "[::1]",
        "[::1",
        "127.0.0.1",
        "",
        "H.Example",
    ]);
    let port = prop::sample::select(vec![
        "", ":443", ":80", ":8443", ":", ":99999", ":-1", ":443:443",
    ]);
    let rest = prop_oneof![
        "(/[a-z0-9]{0,6}){0,3}(\\?[a-z=&:0-9]{0,12})?(#[a-z:]{0,4})?",
        any::<String>()
    ];
    prop_oneof![
        4 => (scheme, sep, userinfo, host, port, rest)
            .prop_map(|(s, sep, u, h, p, r)| format!("{s}{sep}{u}{h}{p}{r}")),
        1 => any::<String>(),
    ]
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(
        token in any::<String>(),
        url in url(),
        params in params(),
        header in prop_oneof![any::<String>(), "[A-Za-z0-9+/=]{0,40}"],
    ) {
        let _ = signature::is_valid(&token, &url, &params, &header);
        let _ = signature::compute(&token, &url, &params);
    }

    #[test]
    fn arbitrary_form_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), url in url()) {
        // The server reads a webhook's form exactly so: twilio::form over the raw body.
        let params = twilio::form::parse(&body);
        let _ = signature::is_valid("token", &url, &params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }

    #[test]
    fn signed_requests_pass_in_any_order_through_the_form(
        token in any::<String>(),
        url in url(),
        params in params(),
        rotate in any::<usize>(),
    ) {
        let sig = signature::compute(&token, &url, &params);
        // What Twilio sends: the form-encoded body, in whatever order; what the server reads back.
        let mut sent = params.clone();
        if !sent.is_empty() {
            let by = rotate % sent.len();
            sent.rotate_left(by);
        }
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&sent).finish();
        let received: Params = twilio::form::parse(body.as_bytes())
            .into_iter()
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        prop_assert_eq!(&received, &sent);
        prop_assert!(signature::is_valid(&token, &url, &received, &sig));
    }

    #[test]
    fn any_change_is_refused(
        token in any::<String>(),
        url in url(),
        params in params().prop_filter("one parameter at least", |p| !p.is_empty()),
        which in any::<usize>(),
        extra in "[a-z0-9]{1,3}",
    ) {
        let sig = signature::compute(&token, &url, &params);
        let i = which % params.len();
        let mut value_changed = params.clone();
        value_changed[i].1.push_str(&extra);
        prop_assert!(!signature::is_valid(&token, &url, &value_changed, &sig));
        // The scheme signs name and value run together, so an empty name with an empty value
        // signs as nothing: dropping it changes nothing. Twilio never sends one.
        if !(params[i].0.is_empty() && params[i].1.is_empty()) {
            let mut dropped = params.clone();
            dropped.remove(i);
            prop_assert!(!signature::is_valid(&token, &url, &dropped, &sig));
        }
        let other_token = format!("{token}{extra}");
        prop_assert!(!signature::is_valid(&other_token, &url, &params, &sig));
        let other_url = format!("{url}{extra}");
        prop_assert!(!signature::is_valid(&token, &other_url, &params, &sig));
    }

    #[test]
    fn the_default_port_may_be_written_or_not(
        scheme in prop::sample::select(vec![("https", "443"), ("wss", "443"), ("http", "80"), ("ws", "80")]),
        host in "[a-z]{1,8}\\.example",
        path in "(/[a-z0-9]{1,6}){0,3}(\\?[a-z0-9=&]{0,10})?",
        params in params(),
    ) {
        let (scheme, port) = scheme;
        let bare = format!("{scheme}://{host}{path}");
        let with_port = format!("{scheme}://{host}:{port}{path}");
        let sig = signature::compute("token", &bare, &params);
        prop_assert!(signature::is_valid("token", &with_port, &params, &sig));
        let sig = signature::compute("token", &with_port, &params);
        prop_assert!(signature::is_valid("token", &bare, &params, &sig));
        // Another port is another URL.
        let other = format!("{scheme}://{host}:8443{path}");
        prop_assert!(!signature::is_valid("token", &other, &params, &sig));
    }
}
