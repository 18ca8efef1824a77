//! Twilio's REST API credentials (docs/reference.md#configuration: `TWILIO_ACCOUNT_SID`,
//! `TWILIO_API_KEY_SID` + `TWILIO_API_KEY_SECRET`, else `TWILIO_AUTH_TOKEN`; `TWILIO_API_BASE`).

use twilio_api::{BuildError, Credentials, Secret as ApiSecret, TwilioClient};

use super::{Checker, ConfigError, RawConfig, given};

/// `TWILIO_API_BASE` when unset.
pub const DEFAULT_TWILIO_API_BASE: &str = twilio_api::DEFAULT_BASE;

/// What the REST client needs: the account, how it authenticates (an API key, else the auth
/// token), and the API's base URL. `credentials` is `None` when no account or no credential is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioApiConfig {
    pub account_sid: Option<String>,
    pub credentials: Option<Credentials>,
    pub base: String,
}

impl TwilioApiConfig {
    /// The client for these settings, if there are credentials.
    ///
    /// # Errors
    ///
    /// A base URL the client refuses (checked at start-up, so not expected here).
    pub fn client(&self) -> Option<Result<TwilioClient, BuildError>> {
        self.credentials
            .clone()
            .map(|credentials| TwilioClient::new(&self.base, credentials))
    }
}

/// Reads the variables; a half-set API key, or a base the client refuses, is named.
pub(super) fn parse(c: &mut Checker, raw: &RawConfig) -> TwilioApiConfig {
    let account_sid = given(&raw.twilio_account_sid).map(str::to_owned);
    let key_sid = given(&raw.twilio_api_key_sid);
    let key_secret = given(&raw.twilio_api_key_secret);
    let auth_token = given(&raw.twilio_auth_token);
    let base = given(&raw.twilio_api_base)
        .unwrap_or(DEFAULT_TWILIO_API_BASE)
        .trim_end_matches('/')
        .to_owned();
    if let Some(sid) = &account_sid
        && !(sid.starts_with("AC")
            && sid.len() == 34
            && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        c.errors.push(ConfigError::new(
            "TWILIO_ACCOUNT_SID",
            sid,
            "expected AC followed by 32 hex digits",
        ));
    }
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
    let credentials = account_sid
        .as_ref()
        .and_then(|sid| match (key_sid, key_secret) {
            (Some(key), Some(secret)) => Some(Credentials::api_key(
                sid.clone(),
                key,
                ApiSecret::new(secret),
            )),
            _ => {
                auth_token.map(|token| Credentials::auth_token(sid.clone(), ApiSecret::new(token)))
            }
        });
    if let Some(credentials) = &credentials
        && let Err(err) = TwilioClient::new(&base, credentials.clone())
    {
        c.errors
            .push(ConfigError::new("TWILIO_API_BASE", &base, err.to_string()));
    }
    TwilioApiConfig {
        account_sid,
        credentials,
        base,
    }
}
