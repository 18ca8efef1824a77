//! The URLs our TwiML hands Twilio (stream, `<Connect action>`, waiting room): from `PUBLIC_URL`,
//! built once at start-up, else per request from the forwarded headers nginx sets (or `Host`).

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderName, header};
use twilio::twiml;

use crate::app::App;

/// The `wss://…/twilio/stream` URL for the TwiML: from `PUBLIC_URL`, else from the forwarded
/// headers, which is safe only because signatures are off without `PUBLIC_URL`.
pub(crate) fn stream_url<'a>(app: &'a App, headers: &HeaderMap) -> Cow<'a, str> {
    match app.public_urls() {
        Some(urls) => Cow::Borrowed(&urls.stream),
        None => Cow::Owned(from_headers(headers, ("wss", "ws"), twiml::STREAM_PATH)),
    }
}

/// The `<Connect action>` URL (`https://…/twilio/after-stream`), built like [`stream_url`].
pub(crate) fn after_stream_url<'a>(app: &'a App, headers: &HeaderMap) -> Cow<'a, str> {
    match app.public_urls() {
        Some(urls) => Cow::Borrowed(&urls.after_stream),
        None => Cow::Owned(from_headers(
            headers,
            ("https", "http"),
            twiml::AFTER_STREAM_PATH,
        )),
    }
}

/// `/twilio/wait`'s URL for the TwiML, built like [`stream_url`].
pub(crate) fn wait_url<'a>(app: &'a App, headers: &HeaderMap) -> Cow<'a, str> {
    match app.public_urls() {
        Some(urls) => Cow::Borrowed(&urls.wait),
        None => Cow::Owned(from_headers(headers, ("https", "http"), twiml::WAIT_PATH)),
    }
}

/// `scheme://host/path`, the scheme `secure` or `plain` as the request came in.
fn from_headers(headers: &HeaderMap, (secure, plain): (&str, &str), path: &str) -> String {
    let (https, host) = forwarded_origin(headers);
    let scheme = if https { secure } else { plain };
    let mut url = String::with_capacity(scheme.len() + 3 + host.len() + path.len());
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(host);
    url.push_str(path);
    url
}

/// Whether the request came in over https, and its host, as nginx forwards them (else `Host`).
fn forwarded_origin(headers: &HeaderMap) -> (bool, &str) {
    // Named by `HeaderName`, not by string: a lookup by string parses the name on every call.
    const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    let header = |name: HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let proto = header(FORWARDED_PROTO).unwrap_or("http");
    let host = header(FORWARDED_HOST)
        .or_else(|| header(header::HOST))
        .unwrap_or("localhost");
    (proto.eq_ignore_ascii_case("https"), host)
}
