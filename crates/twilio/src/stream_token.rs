//! The stream token (docs/reference.md#stream-token): a MAC of a call SID and its continuation
//! number, sent as the `<Stream>`'s `token` parameter and checked when the stream's `start` arrives.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use ring::hmac;

/// The `<Parameter>` name the token travels under, back in `start.customParameters`.
pub const PARAMETER: &str = "token";

/// What the key is derived for: a new purpose (or a new token format) takes a new label, so a
/// token of one never passes for another.
const KEY_LABEL: &[u8] = b"prosaas-calls stream token v1";

/// The key tokens are made with, derived from `TWILIO_AUTH_TOKEN`: every replica holds it, no one
/// else does, and the auth token itself is never what signs a token.
#[derive(Clone)]
pub struct StreamKey(hmac::Key);

/// Never printed: it is as secret as the auth token it comes from.
impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

impl StreamKey {
    /// The key of the replicas that share `auth_token`: HMAC-SHA256(auth_token, label).
    pub fn derive(auth_token: &str) -> Self {
        let outer = hmac::Key::new(hmac::HMAC_SHA256, auth_token.as_bytes());
        let derived = hmac::sign(&outer, KEY_LABEL);
        Self(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// The token of stream `continuation` of `call_sid` (0: the first stream, N: the stream a
    /// continuation grant `resumed=N` asked for): base64url, no padding, of
    /// HMAC-SHA256(key, call_sid "/" continuation).
    pub fn token(&self, call_sid: &str, continuation: u32) -> String {
        BASE64URL.encode(hmac::sign(&self.0, &message(call_sid, continuation)))
    }

    /// Whether `given` is the token of stream `continuation` of `call_sid`, compared in constant
    /// time. Anything that is not base64url of 32 bytes is simply not it.
    pub fn verify(&self, call_sid: &str, continuation: u32, given: &str) -> bool {
        let mut claimed = [0u8; 48];
        let Ok(len) = BASE64URL.decode_slice(given.as_bytes(), &mut claimed) else {
            return false;
        };
        hmac::verify(&self.0, &message(call_sid, continuation), &claimed[..len]).is_ok()
    }
}

fn message(call_sid: &str, continuation: u32) -> Vec<u8> {
    // A call SID never holds '/', so no two (SID, number) pairs share a message.
    format!("{call_sid}/{continuation}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_is_bound_to_its_call_its_continuation_and_its_key() {
        let key = StreamKey::derive("auth-token-1");
        let token = key.token(SID, 0);
        assert_eq!(token.len(), 43, "32 bytes, base64url without padding");
        assert!(key.verify(SID, 0, &token));
        assert_eq!(token, StreamKey::derive("auth-token-1").token(SID, 0));
        // Another call, another continuation, another key: no.
        assert!(!key.verify("CA0123456789abcdef0123456789abcdee", 0, &token));
        assert!(!key.verify(SID, 1, &token));
        assert!(!StreamKey::derive("auth-token-2").verify(SID, 0, &token));
        // Not the auth token's own HMAC of the message: the key is derived.
        let plain = hmac::Key::new(hmac::HMAC_SHA256, b"auth-token-1");
        let naive = BASE64URL.encode(hmac::sign(&plain, format!("{SID}/0").as_bytes()));
        assert!(!key.verify(SID, 0, &naive));
    }

    #[test]
    fn anything_else_is_refused_without_panicking() {
        let key = StreamKey::derive("t");
        let token = key.token(SID, 3);
        for given in [
            "",
            "x",
            &token[..42],
            &format!("{token}A"),
            &"A".repeat(200),
            "****",
        ] {
            assert!(!key.verify(SID, 3, given), "{given:?}");
        }
        assert_eq!(format!("{key:?}"), "StreamKey(<redacted>)");
    }
}
