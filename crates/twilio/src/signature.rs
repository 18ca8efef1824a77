//! `X-Twilio-Signature`: how Twilio signs its webhook requests and WebSocket handshakes, and checking it.
//! Base64 of HMAC-SHA1, keyed by the auth token, over the full URL then every POST parameter as name+value.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The request header that carries the signature.
pub const HEADER: &str = "X-Twilio-Signature";

type HmacSha1 = Hmac<Sha1>;

/// The signature Twilio sends for a request to `url` carrying the form `params`.
///
/// `url` is the full URL Twilio was configured with, query string included, byte for byte. `params`
/// are the decoded form fields in any order; they are signed sorted by name, then by value for a
/// repeated name, in byte order (equal to Unicode code point order). For the Media Stream handshake
/// `url` is the `wss://…` URL exactly as written in the TwiML and `params` is empty.
pub fn compute<K, V>(auth_token: &str, url: &str, params: &[(K, V)]) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let params = sorted(params);
    BASE64.encode(mac(auth_token, url, &params).finalize().into_bytes())
}

/// Whether `signature` (the header value) is Twilio's signature of this request.
///
/// The comparison is constant-time (`Mac::verify_slice`); a header that is not standard padded
/// base64 of 20 bytes is simply invalid. Like Twilio's own validators, a signature made over the
/// URL with its scheme's default port written out (`https://host:443/x`) is accepted for the URL
/// without it (`https://host/x`), and the other way round, because Twilio's signer is not
/// consistent about which form it uses. Only the default port (443 for https/wss, 80 for http/ws)
/// is toggled: Twilio's Python library also drops a non-default port, which would let a signature
/// for one port pass for another, and nothing needs that.
pub fn is_valid<K, V>(auth_token: &str, url: &str, params: &[(K, V)], signature: &str) -> bool
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    // Large enough for any 20-byte signature; longer input fails to fit and is rejected unread.
    let mut claimed = [0u8; 32];
    let Ok(len) = BASE64.decode_slice(signature.as_bytes(), &mut claimed) else {
        return false;
    };
    let claimed = &claimed[..len];
    let params = sorted(params);
    if mac(auth_token, url, &params).verify_slice(claimed).is_ok() {
        return true;
    }
    match with_default_port_toggled(url) {
        Some(other) => mac(auth_token, &other, &params)
            .verify_slice(claimed)
            .is_ok(),
        None => false,
    }
}

fn sorted<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Vec<(&str, &str)> {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_ref(), value.as_ref()))
        .collect();
    sorted.sort_unstable();
    sorted
}

fn mac(auth_token: &str, url: &str, sorted_params: &[(&str, &str)]) -> HmacSha1 {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes())
        .expect("HMAC-SHA1 accepts keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted_params {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// `url` with its scheme's default port removed if written out, or added if absent; `None` when
/// the scheme has no default port, the URL has no authority, or the port is some other one.
fn with_default_port_toggled(url: &str) -> Option<String> {
    let scheme_end = url.find("://")?;
    let default_port: u16 = match url[..scheme_end].to_ascii_lowercase().as_str() {
        "https" | "wss" => 443,
        "http" | "ws" => 80,
        _ => return None,
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    // Userinfo may itself contain ':'; the host starts after the last '@'.
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    // A ':' inside an IPv6 literal (`[::1]`) is not a port separator.
    let port_colon = host_port
        .rfind(':')
        .filter(|&i| !host_port[i..].contains(']'));
    match port_colon {
        Some(colon) => {
            if host_port[colon + 1..].parse::<u16>().ok()? != default_port {
                return None;
            }
            let colon = authority_start + host_start + colon;
            Some(format!("{}{}", &url[..colon], &url[authority_end..]))
        }
        None => Some(format!(
            "{}:{default_port}{}",
            &url[..authority_end],
            &url[authority_end..]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde::Deserialize;

    const NO_PARAMS: &[(&str, &str)] = &[];

    /// The worked example of Twilio's webhook-security documentation (auth token `12345`).
    const DOCS_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const DOCS_PARAMS: &[(&str, &str)] = &[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ];
    const DOCS_SIGNATURE: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    #[test]
    fn twilio_documentation_worked_example() {
        assert_eq!(compute("12345", DOCS_URL, DOCS_PARAMS), DOCS_SIGNATURE);
        assert!(is_valid("12345", DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE));
        // Order of the form fields on the wire does not matter.
        let mut reversed = DOCS_PARAMS.to_vec();
        reversed.reverse();
        assert!(is_valid("12345", DOCS_URL, &reversed, DOCS_SIGNATURE));
    }

    #[test]
    fn owned_and_borrowed_params_sign_alike() {
        let owned: Vec<(String, String)> = DOCS_PARAMS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(compute("12345", DOCS_URL, &owned), DOCS_SIGNATURE);
    }

    #[test]
    fn tampering_is_rejected() {
        let mut tampered = DOCS_PARAMS.to_vec();
        tampered[2] = ("Digits", "1235");
        assert!(!is_valid("12345", DOCS_URL, &tampered, DOCS_SIGNATURE));

        let mut extra = DOCS_PARAMS.to_vec();
        extra.push(("CallStatus", "completed"));
        assert!(!is_valid("12345", DOCS_URL, &extra, DOCS_SIGNATURE));
        assert!(!is_valid(
            "12345",
            DOCS_URL,
            &DOCS_PARAMS[1..],
            DOCS_SIGNATURE
        ));

        let other_url = "https://mycompany.com/myapp.php?foo=1&bar=3";
        assert!(!is_valid("12345", other_url, DOCS_PARAMS, DOCS_SIGNATURE));
        assert!(!is_valid("12346", DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE));
        assert!(!is_valid("", DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE));
    }

    #[test]
    fn garbage_headers_are_invalid_not_errors() {
        let good = DOCS_SIGNATURE;
        for header in [
            "",
            "not base64 at all!",
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ",   // padding stripped
            "0_KCTR6DLpKmkAf8muzZqo1nDgQ=",  // URL-safe alphabet
            " 0/KCTR6DLpKmkAf8muzZqo1nDgQ=", // surrounding space
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ=0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
            "AAAA",                         // valid base64, wrong length
            "0/KCTR6DLpKmkAf8muzZqo1nDgR=", // non-canonical trailing bits
            "ü",
            &"A".repeat(10_000),
        ] {
            assert!(
                !is_valid("12345", DOCS_URL, DOCS_PARAMS, header),
                "{header:?} accepted"
            );
        }
        assert!(is_valid("12345", DOCS_URL, DOCS_PARAMS, good));
    }

    #[test]
    fn default_port_is_accepted_written_out_or_not() {
        let token = "secret";
        for (signed, presented) in [
            ("https://h.example/x?a=1", "https://h.example:443/x?a=1"),
            ("https://h.example:443/x", "https://h.example/x"),
            (
                "wss://h.example/twilio/stream",
                "wss://h.example:443/twilio/stream",
            ),
            (
                "wss://h.example:443/twilio/stream",
                "wss://h.example/twilio/stream",
            ),
            ("http://h.example/x", "http://h.example:80/x"),
            ("ws://h.example:80/x", "ws://h.example/x"),
            ("https://h.example", "https://h.example:443"),
            ("https://u:p@h.example/x", "https://u:p@h.example:443/x"),
            ("https://[::1]:443/x", "https://[::1]/x"),
        ] {
            let sig = compute(token, signed, NO_PARAMS);
            assert!(
                is_valid(token, presented, NO_PARAMS, &sig),
                "{signed} vs {presented}"
            );
        }
    }

    #[test]
    fn other_ports_and_hosts_are_not_interchangeable() {
        let token = "secret";
        for (signed, presented) in [
            ("https://h.example:8443/x", "https://h.example/x"),
            ("https://h.example/x", "https://h.example:8443/x"),
            ("https://h.example/x", "https://h.example:80/x"),
            ("http://h.example/x", "http://h.example:443/x"),
            ("wss://h.example/x", "wss://h.example:80/x"),
            ("https://h.example/x", "http://h.example/x"),
            ("https://h.example/x", "https://h.example/x/"),
            ("https://[::1]/x", "https://[::1]:80/x"),
        ] {
            let sig = compute(token, signed, NO_PARAMS);
            assert!(
                !is_valid(token, presented, NO_PARAMS, &sig),
                "{signed} vs {presented}"
            );
        }
    }

    #[test]
    fn port_toggling_edge_cases() {
        assert_eq!(with_default_port_toggled("mailto:x"), None);
        assert_eq!(with_default_port_toggled("ftp://h/x"), None);
        assert_eq!(with_default_port_toggled("https://h:/x"), None);
        assert_eq!(with_default_port_toggled("https://h:99999/x"), None);
        assert_eq!(
            with_default_port_toggled("HTTPS://h?q=:443"),
            Some("HTTPS://h:443?q=:443".to_owned())
        );
        assert_eq!(
            with_default_port_toggled("https://u:443@h/x"),
            Some("https://u:443@h:443/x".to_owned())
        );
        assert_eq!(
            with_default_port_toggled("https://h:443#f"),
            Some("https://h#f".to_owned())
        );
    }

    #[derive(Deserialize)]
    struct Fixtures {
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        auth_token: String,
        url: String,
        params: Vec<(String, String)>,
        signature: String,
        #[serde(default)]
        also_valid_for: Vec<String>,
    }

    /// Vectors computed by twilio-python's `RequestValidator`; see `scripts/make_signature_fixtures.py`.
    #[test]
    fn agrees_with_twilio_python() {
        let fixtures: Fixtures =
            serde_json::from_str(include_str!("../tests/fixtures/twilio_signatures.json"))
                .expect("fixture file is valid JSON");
        assert!(fixtures.cases.len() >= 10);
        for case in &fixtures.cases {
            let Case {
                name,
                auth_token,
                url,
                params,
                signature,
                ..
            } = case;
            assert_eq!(&compute(auth_token, url, params), signature, "{name}");
            assert!(is_valid(auth_token, url, params, signature), "{name}");
            for alternate in &case.also_valid_for {
                assert!(
                    is_valid(auth_token, alternate, params, signature),
                    "{name}: {alternate}"
                );
            }

            assert!(
                !is_valid("wrong-token", url, params, signature),
                "{name}: wrong token"
            );
            assert!(
                !is_valid(auth_token, url, params, "garbage"),
                "{name}: garbage header"
            );
            if let Some(first) = params.first() {
                let mut tampered = params.clone();
                tampered[0].1.push('x');
                assert!(
                    !is_valid(auth_token, url, &tampered, signature),
                    "{name}: tampered"
                );
                let mut dropped = params.clone();
                dropped.retain(|p| p != first);
                assert!(
                    !is_valid(auth_token, url, &dropped, signature),
                    "{name}: dropped"
                );
            } else {
                let added = [("CallSid", "CA00")];
                assert!(
                    !is_valid(auth_token, url, &added, signature),
                    "{name}: added"
                );
            }
        }
    }
}
