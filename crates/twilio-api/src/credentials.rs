//! Who the client is to Twilio: the account SID with the account's auth token, or with an API key
//! (SID and secret). Formatting them never shows a secret.

use std::fmt;

/// A credential; `Debug` shows `[redacted]`, and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the Authorization header only.
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Auth {
    AuthToken(Secret),
    ApiKey { sid: String, secret: Secret },
}

/// The account and how requests authenticate (HTTP basic auth).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    account_sid: String,
    auth: Auth,
}

impl Credentials {
    /// The account SID with its auth token (`TWILIO_AUTH_TOKEN`): basic auth `AC…:token`.
    pub fn auth_token(account_sid: impl Into<String>, token: Secret) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth: Auth::AuthToken(token),
        }
    }

    /// The account SID with an API key (`TWILIO_API_KEY_SID` + `TWILIO_API_KEY_SECRET`): basic
    /// auth `SK…:secret`, the account named in the path. Twilio's advice for servers: a key can
    /// be revoked without touching the account's token.
    pub fn api_key(
        account_sid: impl Into<String>,
        key_sid: impl Into<String>,
        secret: Secret,
    ) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth: Auth::ApiKey {
                sid: key_sid.into(),
                secret,
            },
        }
    }

    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// The basic-auth user: the account SID, or the API key's SID.
    pub fn username(&self) -> &str {
        match &self.auth {
            Auth::AuthToken(_) => &self.account_sid,
            Auth::ApiKey { sid, .. } => sid,
        }
    }

    /// The basic-auth password.
    pub(crate) fn password(&self) -> &str {
        match &self.auth {
            Auth::AuthToken(token) => token.expose(),
            Auth::ApiKey { secret, .. } => secret.expose(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Credentials");
        out.field("account_sid", &self.account_sid);
        match &self.auth {
            Auth::AuthToken(token) => out.field("auth_token", token),
            Auth::ApiKey { sid, secret } => out
                .field("api_key_sid", sid)
                .field("api_key_secret", secret),
        };
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let token = Credentials::auth_token("AC1", Secret::new("hunter2"));
        let key = Credentials::api_key("AC1", "SK1", Secret::new("swordfish"));
        for shown in [
            format!("{token:?}"),
            format!("{key:?}"),
            format!("{:#?}", Some(&key)),
        ] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("swordfish"),
                "{shown}"
            );
            assert!(
                shown.contains("[redacted]") && shown.contains("AC1"),
                "{shown}"
            );
        }
        assert_eq!((token.username(), token.password()), ("AC1", "hunter2"));
        assert_eq!((key.username(), key.password()), ("SK1", "swordfish"));
    }
}
