//! Twilio's REST API settings (`TWILIO_ACCOUNT_SID`, `TWILIO_API_KEY_SID` + `TWILIO_API_KEY_SECRET`,
//! else `TWILIO_AUTH_TOKEN`; `TWILIO_API_BASE`): the one place the server's REST client is built.

use twilio_api::{Credentials, TwilioClient};

use super::{Checker, ConfigError, RawConfig, given};

/// `TWILIO_API_BASE` when unset.
pub const DEFAULT_TWILIO_API_BASE: &str = twilio_api::DEFAULT_BASE;

/// Who the server is to Twilio's REST API, and where that API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioApiConfig {
    /// `TWILIO_ACCOUNT_SID`.
    pub account_sid: Option<String>,
    /// The account with an API key, else with `TWILIO_AUTH_TOKEN`; `None` without the account or
    /// any credential.
    pub credentials: Option<Credentials>,
    /// `TWILIO_API_BASE`, e.g. `https://api.twilio.com`.
    pub base: String,
}

impl TwilioApiConfig {
    /// The REST client, where the account and its credentials are set.
    ///
    /// # Errors
    ///
    /// A base URL the client refuses (checked at start-up already, so not expected here).
    pub fn client(&self) -> Option<Result<TwilioClient, twilio_api::BuildError>> {
        let credentials = self.credentials.clone()?;
        Some(TwilioClient::new(&self.base, credentials))
    }
}

pub(super) fn parse(c: &mut Checker, raw: &RawConfig) -> TwilioApiConfig {
    let account_sid = given(&raw.twilio_account_sid).and_then(|sid| {
        let valid = sid.len() == 34
            && sid.starts_with("AC")
            && sid[2..].bytes().all(|b| b.is_ascii_hexdigit());
        c.ok(if valid {
            Ok(sid.to_owned())
        } else {
            Err(ConfigError::new(
                "TWILIO_ACCOUNT_SID",
                sid,
                "expected AC and 32 hex digits",
            ))
        })
    });
    let key_sid = given(&raw.twilio_api_key_sid);
    let key_secret = given(&raw.twilio_api_key_secret);
    match (key_sid, key_secret) {
        (Some(_), None) => c.errors.push(ConfigError::hidden(
            "TWILIO_API_KEY_SECRET",
            "must be set with TWILIO_API_KEY_SID",
        )),
        (None, Some(_)) => c.errors.push(ConfigError::hidden(
            "TWILIO_API_KEY_SID",
            "must be set with TWILIO_API_KEY_SECRET",
        )),
        _ => {}
    }
    let base = given(&raw.twilio_api_base)
        .unwrap_or(twilio_api::DEFAULT_BASE)
        .trim_end_matches('/')
        .to_owned();
    // The client checks the base itself (http(s), no path, plain http only to loopback): built
    // once here with a placeholder account, so a bad value stops start-up naming the variable.
    let probe = Credentials::auth_token("AC", twilio_api::Secret::new(""));
    if let Err(err) = TwilioClient::new(&base, probe) {
        c.errors
            .push(ConfigError::new("TWILIO_API_BASE", &base, err.to_string()));
    }
    let credentials = account_sid.as_ref().and_then(|sid| {
        if let (Some(key), Some(secret)) = (key_sid, key_secret) {
            return Some(Credentials::api_key(
                sid.clone(),
                key,
                twilio_api::Secret::new(secret),
            ));
        }
        given(&raw.twilio_auth_token)
            .map(|token| Credentials::auth_token(sid.clone(), twilio_api::Secret::new(token)))
    });
    TwilioApiConfig {
        account_sid,
        credentials,
        base,
    }
}
