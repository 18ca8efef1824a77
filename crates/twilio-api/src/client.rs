//! The HTTP side: one reqwest client (rustls with ring, the public CA roots, no redirects), a
//! timeout on every request, basic auth, form bodies out and Twilio's JSON back, every failure
//! turned into an [`ApiError`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::credentials::Credentials;
use crate::error::ApiError;
use crate::resources::{Call, EndCall, Message, NewCall, NewMessage};

/// Twilio's REST API (`TWILIO_API_BASE` when unset).
pub const DEFAULT_BASE: &str = "https://api.twilio.com";
/// Longest a request waits for its whole answer unless told otherwise ([`TwilioClient::with_timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the TCP and TLS handshakes may take, within the request's timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Twilio's answers are a few KiB; an error body quoted in a message is cut to this.
const QUOTED_BODY: usize = 200;

/// Why a client could not be built.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("Twilio API base {0:?} is not an http(s) URL without a path: {1}")]
    Base(String, String),
    #[error(
        "Twilio API base {0:?} is plain http to a host that is not loopback: credentials would travel in clear"
    )]
    PlainHttp(String),
    #[error("building the HTTP client: {0}")]
    Http(String),
}

/// A client for one account. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    /// `scheme://host[:port]`, no trailing slash.
    base: String,
    credentials: Arc<Credentials>,
    timeout: Duration,
}

impl fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioClient")
            .field("base", &self.base)
            .field("credentials", &self.credentials)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Twilio's error body.
#[derive(Deserialize)]
struct TwilioErrorBody {
    code: Option<u32>,
    message: Option<String>,
    more_info: Option<String>,
}

impl TwilioClient {
    /// A client for `base` (`https://api.twilio.com`, a regional edge such as
    /// `https://api.dublin.ie1.twilio.com`, or a test double on loopback over plain http).
    pub fn new(base: &str, credentials: Credentials) -> Result<Self, BuildError> {
        let base = check_base(base)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("prosaas-calls/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            // Twilio's API does not redirect; a redirect is someone else answering.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        Ok(Self {
            http,
            base,
            credentials: Arc::new(credentials),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client (same connections) with another timeout for each whole request: the
    /// waiting room's messages get 5 s, outbound calls 10 s.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn account_sid(&self) -> &str {
        self.credentials.account_sid()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a message (`201` → the Message resource).
    pub async fn send_message(&self, message: &NewMessage<'_>) -> Result<Message, ApiError> {
        self.post("Messages.json", &message.form()).await
    }

    /// Asks Twilio to place a call (`201` → the Call resource, `queued`). Twilio places a call
    /// each time it is asked: a request that failed with [`ApiError::may_have_been_processed`]
    /// must not simply be sent again.
    pub async fn create_call(&self, call: &NewCall<'_>) -> Result<Call, ApiError> {
        let form = call.form();
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.post("Calls.json", &pairs).await
    }

    /// Ends a call: cancels it before it is answered, or hangs it up ([`EndCall`]).
    pub async fn end_call(&self, call_sid: &str, how: EndCall) -> Result<Call, ApiError> {
        // The SID lands in the path: anything but `CA` and hex is refused before it is sent.
        if !(call_sid.starts_with("CA")
            && call_sid.len() == 34
            && call_sid[2..].bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ApiError::Refused {
                status: 404,
                code: Some(20404),
                message: format!("{call_sid:?} is not a call SID"),
                more_info: None,
            });
        }
        self.post(
            &format!("Calls/{call_sid}.json"),
            &[("Status", how.as_str())],
        )
        .await
    }

    /// `POST {base}/2010-04-01/Accounts/{AccountSid}/{resource}` with `form`.
    async fn post<T: DeserializeOwned>(
        &self,
        resource: &str,
        form: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}",
            self.base,
            self.credentials.account_sid()
        );
        let response = self
            .http
            .post(url)
            .basic_auth(
                self.credentials.username(),
                Some(self.credentials.password()),
            )
            .timeout(self.timeout)
            .form(form)
            .send()
            .await
            .map_err(|e| self.sent_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| self.sent_error(&e))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| ApiError::BadResponse {
                status: status.as_u16(),
                detail: e.to_string(),
            });
        }
        Err(refusal(status, &headers, &body))
    }

    /// A reqwest error as what it means for the request.
    fn sent_error(&self, err: &reqwest::Error) -> ApiError {
        // The URL names the account and resource, never a credential; the source says why.
        let why = std::error::Error::source(err)
            .map_or_else(|| err.to_string(), |source| format!("{err}: {source}"));
        if err.is_connect() {
            ApiError::Connect(why)
        } else if err.is_timeout() {
            ApiError::Timeout(self.timeout)
        } else {
            ApiError::Transport(why)
        }
    }
}

/// An error answer as Twilio meant it.
fn refusal(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ApiError {
    let parsed: Option<TwilioErrorBody> = serde_json::from_slice(body).ok();
    let (code, message, more_info) = match parsed {
        Some(error) => (
            error.code,
            error
                .message
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned()),
            error.more_info,
        ),
        None => {
            let text = String::from_utf8_lossy(body);
            let mut quoted: String = text.trim().chars().take(QUOTED_BODY).collect();
            if quoted.is_empty() {
                quoted = status.canonical_reason().unwrap_or("").to_owned();
            }
            (None, quoted, None)
        }
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return ApiError::RateLimited {
            code: code.unwrap_or(20429),
            message,
            retry_after,
        };
    }
    ApiError::Refused {
        status: status.as_u16(),
        code,
        message,
        more_info,
    }
}

/// `scheme://host[:port]` of `base`: https anywhere, plain http only to loopback.
fn check_base(base: &str) -> Result<String, BuildError> {
    let bad = |why: &str| BuildError::Base(base.to_owned(), why.to_owned());
    let url = url::Url::parse(base.trim()).map_err(|e| bad(&e.to_string()))?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it has a path, query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it carries credentials"));
    }
    let host = url.host().ok_or_else(|| bad("no host"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match host {
                url::Host::Ipv4(ip) => ip.is_loopback(),
                url::Host::Ipv6(ip) => ip.is_loopback(),
                url::Host::Domain(name) => name == "localhost",
            };
            if !loopback {
                return Err(BuildError::PlainHttp(base.to_owned()));
            }
        }
        _ => return Err(bad("the scheme is not http or https")),
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_are_https_or_loopback() {
        assert_eq!(check_base(DEFAULT_BASE).unwrap(), "https://api.twilio.com");
        assert_eq!(
            check_base("https://api.dublin.ie1.twilio.com/").unwrap(),
            "https://api.dublin.ie1.twilio.com"
        );
        assert_eq!(
            check_base("http://127.0.0.1:8089").unwrap(),
            "http://127.0.0.1:8089"
        );
        assert!(check_base("http://[::1]:8089").is_ok());
        assert!(matches!(
            check_base("http://api.twilio.com"),
            Err(BuildError::PlainHttp(_))
        ));
        for bad in [
            "api.twilio.com",
            "ftp://api.twilio.com",
            "https://api.twilio.com/2010-04-01",
            "https://u:p@api.twilio.com",
        ] {
            assert!(
                matches!(check_base(bad), Err(BuildError::Base(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_answers_are_read_as_twilio_means_them() {
        let headers = HeaderMap::new();
        let body = br#"{"code":21211,"message":"Invalid 'To' Phone Number","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
        let error = refusal(StatusCode::BAD_REQUEST, &headers, body);
        assert_eq!((error.status(), error.code()), (Some(400), Some(21211)));
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        let limited = refusal(StatusCode::TOO_MANY_REQUESTS, &headers, b"");
        assert!(matches!(
            limited,
            ApiError::RateLimited { code: 20429, retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        let proxy = refusal(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>bad gateway</html>",
        );
        assert!(
            matches!(proxy, ApiError::Refused { status: 502, code: None, ref message, .. } if message == "<html>bad gateway</html>")
        );
    }
}
