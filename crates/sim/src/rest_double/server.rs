//! The double's HTTP server: Twilio's routes (basic auth, form bodies, Twilio's JSON and errors),
//! each request recorded before it is answered, and the `/_double/*` routes a test drives it with.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::behaviour::{Behaviour, Decision, Endpoint, EndpointState};
use super::clock;
use super::dialer::{DialSettings, Dialer};
use super::outcome::Outcomes;
use super::record::{self, Answer, AuthSeen, Log, Recorded};
use super::resources::{ApiError, Form, NewCall, NewMessage, message_json};
use crate::rng::Rng;

/// Forms are a few hundred bytes; more is not a request the server sends.
const MAX_BODY: usize = 64 * 1024;

/// How the double is set up.
pub struct Config {
    pub account_sid: String,
    /// Accepted as the basic-auth password with the account SID; signs every callback.
    pub auth_token: Option<String>,
    /// `(SK…, secret)` pairs accepted as basic auth. With neither a token nor keys, any basic
    /// auth is accepted (recorded as `unverified`); none at all is still a 401.
    pub api_keys: Vec<(String, String)>,
    pub behaviours: Vec<(Endpoint, Behaviour)>,
    /// Also append every request to this JSONL file.
    pub record: Option<PathBuf>,
    pub outcomes: Outcomes,
    /// How calls are placed (`account_sid` and `auth_token` are taken from above).
    pub dial: DialSettings,
    pub seed: u64,
}

struct State {
    account_sid: String,
    auth_token: Option<String>,
    api_keys: HashMap<String, String>,
    endpoints: Mutex<HashMap<Endpoint, EndpointState>>,
    log: Log,
    dialer: Arc<Dialer>,
    sids: Mutex<Rng>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running double. Dropping it stops accepting (calls in flight finish on the runtime).
pub struct RestDouble {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for RestDouble {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl RestDouble {
    /// Listens on `listen` and serves until dropped.
    pub async fn start(listen: SocketAddr, config: Config) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let mut dial = config.dial;
        dial.account_sid.clone_from(&config.account_sid);
        dial.auth_token.clone_from(&config.auth_token);
        let mut endpoints: HashMap<Endpoint, EndpointState> = Endpoint::ALL
            .into_iter()
            .map(|e| (e, EndpointState::default()))
            .collect();
        for (endpoint, behaviour) in config.behaviours {
            endpoints.entry(endpoint).or_default().set(behaviour);
        }
        let state = Arc::new(State {
            account_sid: config.account_sid,
            auth_token: config.auth_token,
            api_keys: config.api_keys.into_iter().collect(),
            endpoints: Mutex::new(endpoints),
            log: Log::new(config.record.as_deref())?,
            dialer: Arc::new(Dialer::new(dial, config.outcomes, config.seed)),
            sids: Mutex::new(Rng::new(config.seed ^ 0x5eed)),
        });
        let accept = tokio::spawn(accept_loop(listener, state));
        Ok(Self { addr, accept })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`: what `TWILIO_API_BASE` is set to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            // A client that goes away mid-request ends only its own connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn json_reply(status: u16, body: &Value) -> Reply {
    reply(status, "application/json; charset=utf-8", body.to_string())
}

fn text_reply(status: u16, text: impl Into<String>) -> Reply {
    reply(status, "text/plain; charset=utf-8", text.into())
}

async fn handle(state: &State, request: Request<Incoming>) -> Reply {
    let received_unix_us = clock::now_us();
    let path = request.uri().path().to_owned();
    if path == "/healthz" {
        return text_reply(200, "ok\n");
    }
    if let Some(control) = path.strip_prefix("/_double/") {
        return control_route(state, request, control.to_owned()).await;
    }
    twilio_route(state, request, path, received_unix_us).await
}

/// Which Twilio route a path is: the account it names, the endpoint, and a call's SID.
fn route(path: &str) -> Option<(&str, Endpoint, Option<&str>)> {
    let rest = path.strip_prefix("/2010-04-01/Accounts/")?;
    let (account, rest) = rest.split_once('/')?;
    match rest {
        "Messages.json" => Some((account, Endpoint::Messages, None)),
        "Calls.json" => Some((account, Endpoint::Calls, None)),
        _ => {
            let sid = rest.strip_prefix("Calls/")?.strip_suffix(".json")?;
            (!sid.is_empty() && !sid.contains('/')).then_some((
                account,
                Endpoint::CallUpdate,
                Some(sid),
            ))
        }
    }
}

async fn twilio_route(
    state: &State,
    request: Request<Incoming>,
    path: String,
    received_unix_us: i64,
) -> Reply {
    let method = request.method().clone();
    let auth_header = request.headers().get(AUTHORIZATION).cloned();
    let form = match read_form(request).await {
        Ok(form) => form,
        Err(why) => {
            let error = ApiError::new(400, 20001, why);
            return error_reply(&error);
        }
    };
    let routed = route(&path);
    let mut entry = Recorded {
        seq: 0,
        received_at: clock::rfc3339(received_unix_us),
        received_unix_us,
        method: method.to_string(),
        path: path.clone(),
        endpoint: routed.map(|(_, endpoint, _)| endpoint.name().to_owned()),
        auth: None,
        form: record::form_object(&form),
        answer: Answer::default(),
    };
    let outcome = answer(
        state,
        &method,
        &path,
        routed,
        auth_header.as_ref(),
        &form,
        &mut entry,
    );
    match outcome {
        None => {
            entry.answer = Answer::default();
            state.log.push(entry);
            // Accepted and never answered: the client's timeout ends it (and drops this future).
            std::future::pending::<()>().await;
            text_reply(504, "")
        }
        Some((delay, result)) => {
            let delayed_ms = delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let (answer, reply) = match result {
                Ok((status, body, sid)) => (
                    Answer {
                        status: Some(status),
                        sid,
                        code: None,
                        delayed_ms,
                    },
                    json_reply(status, &body),
                ),
                Err(error) => (
                    Answer {
                        status: Some(error.status),
                        sid: None,
                        code: Some(error.code),
                        delayed_ms,
                    },
                    error_reply(&error),
                ),
            };
            entry.answer = answer;
            state.log.push(entry);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            reply
        }
    }
}

/// What a Twilio route answers: `None` to hang; else how long to hold the answer back, and the
/// status, JSON and SID, or an error.
type Answered = Option<(
    Option<std::time::Duration>,
    Result<(u16, Value, Option<String>), ApiError>,
)>;

fn answer(
    state: &State,
    method: &Method,
    path: &str,
    routed: Option<(&str, Endpoint, Option<&str>)>,
    auth_header: Option<&HeaderValue>,
    form: &[(String, String)],
    entry: &mut Recorded,
) -> Answered {
    let Some((account, endpoint, call_sid)) = routed else {
        return Some((None, Err(ApiError::not_found(path))));
    };
    entry.auth = state.authenticate(auth_header, account);
    if entry.auth.as_ref().is_none_or(|a| a.kind == "refused") {
        return Some((None, Err(ApiError::authenticate())));
    }
    if method != Method::POST {
        return Some((None, Err(ApiError::method_not_allowed())));
    }
    let decision = lock(&state.endpoints)
        .entry(endpoint)
        .or_default()
        .decide(Instant::now());
    let delay = match decision {
        Decision::Hang => return None,
        Decision::Fail(error) => return Some((None, Err(error))),
        Decision::Answer => None,
        Decision::Delay(delay) => Some(delay),
    };
    let form = Form(form);
    Some((
        delay,
        match endpoint {
            Endpoint::Messages => NewMessage::from_form(&form).map(|message| {
                let sid = lock(&state.sids).sid("SM");
                let body = message_json(&state.account_sid, &sid, &message, clock::now_us());
                (201, body, Some(sid))
            }),
            Endpoint::Calls => NewCall::from_form(&form).map(|call| {
                let sid = lock(&state.sids).sid("CA");
                let placed = state.dialer.place(sid.clone(), call);
                (201, placed.resource(&state.account_sid), Some(sid))
            }),
            Endpoint::CallUpdate => {
                let sid = call_sid.unwrap_or_default();
                state
                    .dialer
                    .update(sid, path, form.get("Status"))
                    .map(|body| (200, body, Some(sid.to_owned())))
            }
        },
    ))
}

fn error_reply(error: &ApiError) -> Reply {
    let mut response = json_reply(error.status, &error.json());
    if error.status == 401 {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
    }
    response
}

async fn read_form(request: Request<Incoming>) -> Result<Vec<(String, String)>, String> {
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("the request body could not be read: {e}"))?
        .to_bytes();
    Ok(form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

impl State {
    /// Who the basic auth names, and whether it holds; `None` without basic auth.
    fn authenticate(&self, header: Option<&HeaderValue>, account: &str) -> Option<AuthSeen> {
        let encoded = header?.to_str().ok()?.strip_prefix("Basic ")?;
        let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let open = self.auth_token.is_none() && self.api_keys.is_empty();
        let kind = if account != self.account_sid {
            "refused"
        } else if open {
            "unverified"
        } else if user == self.account_sid && self.auth_token.as_deref() == Some(password) {
            "auth_token"
        } else if self
            .api_keys
            .get(user)
            .is_some_and(|secret| secret == password)
        {
            "api_key"
        } else {
            "refused"
        };
        Some(AuthSeen {
            user: user.to_owned(),
            kind: kind.to_owned(),
        })
    }
}

async fn control_route(state: &State, request: Request<Incoming>, route: String) -> Reply {
    let method = request.method().clone();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).trim().to_owned(),
        Err(e) => return text_reply(400, format!("body: {e}\n")),
    };
    let done = |result: Result<(), String>| match result {
        Ok(()) => reply(204, "text/plain", ""),
        Err(why) => text_reply(400, format!("{why}\n")),
    };
    match (&method, route.as_str()) {
        (&Method::GET, "requests") => {
            let since = query.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
            let list = state
                .log
                .list(query.get("endpoint").map(String::as_str), since);
            json_reply(200, &json!(list))
        }
        (&Method::DELETE, "requests") => {
            state.log.clear();
            reply(204, "text/plain", "")
        }
        (&Method::GET, "behaviour") => {
            let endpoints = lock(&state.endpoints);
            let map: serde_json::Map<String, Value> = Endpoint::ALL
                .iter()
                .map(|e| {
                    let spec = endpoints
                        .get(e)
                        .map_or_else(|| "ok".to_owned(), |s| s.behaviour().to_string());
                    (e.name().to_owned(), Value::String(spec))
                })
                .collect();
            json_reply(200, &Value::Object(map))
        }
        (&Method::PUT, name) if name.starts_with("behaviour/") => {
            let name = &name["behaviour/".len()..];
            done(match Endpoint::from_name(name) {
                None => Err(format!(
                    "{name:?}: the endpoints are messages, calls and call-update"
                )),
                Some(endpoint) => Behaviour::parse(&body).map(|behaviour| {
                    lock(&state.endpoints)
                        .entry(endpoint)
                        .or_default()
                        .set(behaviour);
                }),
            })
        }
        (&Method::PUT, "outcome") => done(state.dialer.outcomes().set_for_number(&body)),
        (&Method::PUT, "mix") => done(state.dialer.outcomes().set_mix(&body)),
        (&Method::GET, "calls") => json_reply(200, &json!(state.dialer.reports())),
        (&Method::GET, "summary") => {
            let mut by_endpoint: HashMap<String, HashMap<String, u64>> = HashMap::new();
            for entry in state.log.list(None, 0) {
                let answer = entry
                    .answer
                    .status
                    .map_or_else(|| "hang".to_owned(), |s| s.to_string());
                *by_endpoint
                    .entry(entry.endpoint.unwrap_or_else(|| "none".to_owned()))
                    .or_default()
                    .entry(answer)
                    .or_default() += 1;
            }
            let mut summary = state.dialer.summary();
            summary["requests"] = json!(by_endpoint);
            json_reply(200, &summary)
        }
        _ => text_reply(404, format!("no control route {method} /_double/{route}\n")),
    }
}
