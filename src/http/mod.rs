//! The HTTP surface of docs/reference.md#endpoints: routes, and the Twilio request checks every
//! Twilio route shares (form parsing, `X-Twilio-Signature`). Handlers stay thin; the work is in
//! `calls_core::calls`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::warn;

use axum::Extension;
use calls_core::call_sid::CallSid;
use twilio::stream_token::StreamKey;
use twilio::{form, signature, twiml};

use crate::app::App;
use crate::config::redact_userinfo;
use crate::metrics::HttpReject;
use crate::stream::StreamContext;

pub(crate) use overflow::overflow_router;
use urls::{after_stream_url, stream_url};

mod after_stream;
mod calls_api;
mod fallback;
mod ops;
mod overflow;
mod status;
mod stream;
mod turned_away;
mod urls;
mod voice;
mod wait;

/// Twilio's webhooks are a few hundred bytes; anything near this is not Twilio.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A request body not all in this long after the handler starts reading it is dropped (408), like
/// headers trickled past `server::HEADER_READ_TIMEOUT` (docs/reference.md#endpoints).
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn router(app: Arc<App>) -> Router {
    // What every stream of this replica gets, instead of the whole replica.
    let streams = Arc::new(StreamContext {
        calls: app.calls().clone(),
        metrics: app.metrics().clone(),
        lifecycle: app.lifecycle().clone(),
        timeouts: app.config().stream_timeouts,
        media: app.config().media.clone(),
        stream_key: app.config().auth_token().map(StreamKey::derive),
    });
    let api = calls_api::routes(&app);
    let router = Router::new()
        // Twilio lets a number's webhooks use GET (parameters in the query string): every Twilio
        // endpoint but the stream accepts both.
        // With the waiting room on, the voice webhook visits the line first (`wait.rs`).
        .route(
            "/twilio/voice",
            get(wait::voice_webhook).post(wait::voice_webhook),
        )
        .route("/twilio/status", get(status::handle).post(status::handle))
        .route(
            "/twilio/fallback",
            get(fallback::handle).post(fallback::handle),
        )
        .route(
            twiml::AFTER_STREAM_PATH,
            get(after_stream::handle).post(after_stream::handle),
        )
        .route(twiml::WAIT_PATH, get(wait::handle).post(wait::handle))
        .route(
            "/twilio/stream",
            get(stream::handle).layer(Extension(streams)),
        )
        .route("/metrics.json", get(ops::metrics_json))
        .route("/metrics", get(ops::metrics_text))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    // docs/reference.md#outbound: `/v1/*` only where `API_TOKEN` is set.
    let router = match api {
        Some(api) => router.merge(api),
        None => router,
    };
    router
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(app)
}

/// A Twilio request rejected before any state changed: a 4xx with a short reason, a log line, a
/// counter.
pub(crate) struct Rejected {
    status: StatusCode,
    reason: HttpReject,
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.reason.as_str().replace('_', " ")),
        )
            .into_response()
    }
}

fn reject(app: &App, status: StatusCode, reason: HttpReject, path: &str) -> Rejected {
    app.metrics().http_rejected(reason);
    warn!(
        path,
        reason = reason.as_str(),
        status = status.as_u16(),
        "request refused"
    );
    Rejected { status, reason }
}

/// A Twilio webhook's form parameters, in the order they came, borrowed from the request: only a
/// name or value with a `+` or a `%` in it is decoded into a string of its own.
pub(crate) struct TwilioForm<'a> {
    params: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl TwilioForm<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
            .filter(|v| !v.is_empty())
    }

    /// The `CallSid` every Twilio request must carry: missing or malformed is a 400.
    fn call_sid(&self, app: &App, uri: &Uri) -> Result<CallSid, Rejected> {
        match self.get("CallSid").map(CallSid::parse) {
            Some(Ok(sid)) => Ok(sid),
            Some(Err(_)) => Err(reject(
                app,
                StatusCode::BAD_REQUEST,
                HttpReject::InvalidCallSid,
                uri.path(),
            )),
            None => Err(reject(
                app,
                StatusCode::BAD_REQUEST,
                HttpReject::MissingCallSid,
                uri.path(),
            )),
        }
    }
}

/// A Twilio request as the handlers receive it: GET (parameters in the query string) or POST
/// (form body).
pub(crate) struct TwilioRequest {
    pub method: Method,
    pub headers: HeaderMap,
    /// The URI as the client sent it (not as a nested router saw it): signatures cover it.
    pub uri: Uri,
    pub body: axum::body::Bytes,
}

/// Every Twilio route takes its request this way: one extractor instead of five per handler.
impl axum::extract::FromRequest<Arc<App>> for TwilioRequest {
    type Rejection = Response;

    async fn from_request(
        mut request: axum::extract::Request,
        app: &Arc<App>,
    ) -> Result<Self, Response> {
        let uri = request
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| request.uri().clone(), |original| original.0.clone());
        let method = request.method().clone();
        // Taken, not cloned: reading the body needs only the body and its limit (an extension).
        let headers = std::mem::take(request.headers_mut());
        // The body limit (`DefaultBodyLimit`) applies here, as it did to a `Bytes` extractor; the
        // deadline keeps a body trickled a byte at a time from holding a connection (and a task)
        // for as long as the sender likes, as the header timeout does for headers.
        let read = axum::body::Bytes::from_request(request, app);
        let body = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
            Ok(body) => body.map_err(IntoResponse::into_response)?,
            Err(_) => {
                let refused = reject(
                    app,
                    StatusCode::REQUEST_TIMEOUT,
                    HttpReject::BodyTimeout,
                    uri.path(),
                );
                // The rest of the body may still be on its way: the connection cannot be reused.
                return Err(([(header::CONNECTION, "close")], refused).into_response());
            }
        };
        Ok(Self {
            method,
            headers,
            uri,
            body,
        })
    }
}

/// Parses a Twilio webhook (voice, status, …) and its `CallSid`, checking the signature when
/// `TWILIO_AUTH_TOKEN` is set.
pub(crate) fn twilio_call_form<'a>(
    app: &App,
    request: &'a TwilioRequest,
) -> Result<(TwilioForm<'a>, CallSid), Rejected> {
    let form = twilio_form(app, request)?;
    let call_sid = form.call_sid(app, &request.uri)?;
    Ok((form, call_sid))
}

/// [`twilio_call_form`] for a request Twilio sent to `signed_url` (a URL our own TwiML gave it,
/// query included), which its signature covers.
pub(crate) fn twilio_call_form_signed_over<'a>(
    app: &App,
    request: &'a TwilioRequest,
    signed_url: &str,
) -> Result<(TwilioForm<'a>, CallSid), Rejected> {
    let form = twilio_form_signed_over(app, request, Some(signed_url))?;
    let call_sid = form.call_sid(app, &request.uri)?;
    Ok((form, call_sid))
}

/// Parses a Twilio request's parameters and checks its signature. Twilio signs the full URL it
/// requested (query included) followed, for a POST, by the sorted form parameters; for a
/// webhook that is `PUBLIC_URL` and the path, as the number's settings spell it.
pub(crate) fn twilio_form<'a>(
    app: &App,
    request: &'a TwilioRequest,
) -> Result<TwilioForm<'a>, Rejected> {
    twilio_form_signed_over(app, request, None)
}

/// `signed_url` `None`: the request's own URL under `PUBLIC_URL` ([`public_url_of`]), built only
/// when there is a signature to check.
fn twilio_form_signed_over<'a>(
    app: &App,
    request: &'a TwilioRequest,
    signed_url: Option<&str>,
) -> Result<TwilioForm<'a>, Rejected> {
    let TwilioRequest {
        method,
        headers,
        uri,
        body,
    } = request;
    if method == Method::GET {
        let query = uri.query().unwrap_or("");
        let params = form::parse(query.as_bytes());
        check_form_signature(app, request, signed_url, &[])?;
        return Ok(TwilioForm { params });
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    const FORM: &str = "application/x-www-form-urlencoded";
    if !content_type
        .get(..FORM.len())
        .is_some_and(|given| given.eq_ignore_ascii_case(FORM))
    {
        return Err(reject(
            app,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpReject::ExpectedFormBody,
            uri.path(),
        ));
    }
    let params = form::parse(body);
    check_form_signature(app, request, signed_url, &params)?;
    Ok(TwilioForm { params })
}

/// [`check_signature`] over `signed_url`, or the request's own URL under `PUBLIC_URL`.
fn check_form_signature(
    app: &App,
    request: &TwilioRequest,
    signed_url: Option<&str>,
    params: &[(Cow<'_, str>, Cow<'_, str>)],
) -> Result<(), Rejected> {
    if app.config().auth_token().is_none() {
        return Ok(());
    }
    let url = signed_url.map_or_else(
        || Cow::Owned(public_url_of(app, &request.uri)),
        Cow::Borrowed,
    );
    check_signature(app, &request.headers, &request.uri, &url, params)
}

/// The URL Twilio signed: `PUBLIC_URL` plus the path and query it requested.
fn public_url_of(app: &App, uri: &Uri) -> String {
    let path = uri
        .path_and_query()
        .map(axum::http::uri::PathAndQuery::as_str)
        .unwrap_or("/");
    format!("{}{path}", app.config().public_url.as_deref().unwrap_or(""))
}

/// Checks `X-Twilio-Signature` against `url` and `params` when an auth token is configured.
pub(crate) fn check_signature(
    app: &App,
    headers: &HeaderMap,
    uri: &Uri,
    url: &str,
    params: &[(Cow<'_, str>, Cow<'_, str>)],
) -> Result<(), Rejected> {
    let Some(token) = app.config().auth_token() else {
        return Ok(());
    };
    let given = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    let reason = match given {
        None => HttpReject::MissingSignature,
        Some(sig) if signature::is_valid(token, url, params, sig) => return Ok(()),
        Some(_) => HttpReject::BadSignature,
    };
    // The most common Twilio misconfiguration is a PUBLIC_URL that is not the URL Twilio signed
    // (scheme, host, a path prefix): the line names the URL the signature was checked against.
    // Its query is left out (a GET webhook's carries the caller's number), and so is any
    // user:password a PUBLIC_URL may hold.
    let checked = redact_userinfo(url.split_once('?').map_or(url, |(base, _)| base));
    app.metrics().http_rejected(reason);
    warn!(
        path = uri.path(),
        reason = reason.as_str(),
        status = StatusCode::FORBIDDEN.as_u16(),
        checked_url = %checked,
        query = url.contains('?'),
        "request refused: no valid X-Twilio-Signature for checked_url (PUBLIC_URL and the path): Twilio signs the URL set on the number, so the two must be the same"
    );
    Err(Rejected {
        status: StatusCode::FORBIDDEN,
        reason,
    })
}

/// The action URL's query parameter naming the stream the request follows (0: the first, N: the
/// continuation `resumed=N`): only the request for the call's current stream spends a
/// continuation (docs/reference.md#after-stream).
pub(super) const STREAM_NUMBER: &str = "stream";
