//! A voice agent that speaks Twilio's Media Streams protocol, for tests and benchmarks of the bridge:
//! it echoes audio (under its own streamSid), plays scripts (marks, `clear`, junk), misbehaves.
//!
//! Each accepted connection is one session; what it received (handshake path, query and headers,
//! every message in order, the close code) is recorded for assertions when `record` is on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

/// The streamSid the agent writes on everything it sends: never the call's, so a test can see
/// the bridge rewrite it.
pub const AGENT_STREAM_SID: &str = "MZagent0000000000000000000000000";

/// What the agent does with a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends every caller frame back.
    Echo,
    /// After `start`: three frames `a1 a2 a3`, mark `m1`, `clear`, frame `b1`, mark `m2`; then
    /// echoes.
    BargeIn,
    /// After `start`: an unknown event, a binary frame, text that is not JSON, a `media` without
    /// a payload, then a frame `done` (which must arrive); then echoes.
    Junk,
    /// Answers the handshake with this HTTP status instead of 101.
    Refuse(u16),
    /// Accepts TCP and never answers the handshake.
    HangHandshake,
    /// Reads `start`, then stops reading (the socket stays open).
    Stall,
    /// Echoes `frames` caller frames, sends a frame `bye`, then closes with 1000.
    HangUpAfter(usize),
    /// Echoes `frames` caller frames, then drops the TCP connection without a close.
    DropAfter(usize),
}

/// What one session received.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The handshake's path and query, e.g. `/agent/CA…?from=%2B1500`.
    pub path_and_query: String,
    /// The handshake's headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Text messages in order; a binary one as `<binary N bytes>`.
    pub messages: Vec<String>,
    /// The close code the bridge sent, if it closed.
    pub close_code: Option<u16>,
    /// The session is over (closed, dropped or failed).
    pub ended: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `event` of each message, in order (`?` for one that is not JSON with an event).
    pub fn events(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| {
                serde_json::from_str::<serde_json::Value>(m)
                    .ok()
                    .and_then(|v| v["event"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "?".to_owned())
            })
            .collect()
    }
}

/// A running agent; dropped, it stops accepting (sessions in flight end with their sockets).
pub struct Agent {
    addr: SocketAddr,
    sessions: Arc<Mutex<Vec<Arc<Mutex<Received>>>>>,
    accept: JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Agent {
    /// Listens on `listen` (port 0: any free port) and serves each connection with `behaviour`.
    ///
    /// # Errors
    ///
    /// The listener could not be bound.
    pub async fn start(
        listen: SocketAddr,
        behaviour: Behaviour,
        record: bool,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let sessions: Arc<Mutex<Vec<Arc<Mutex<Received>>>>> = Arc::default();
        let accept = tokio::spawn(accept_loop(listener, behaviour, record, sessions.clone()));
        Ok(Self {
            addr,
            sessions,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// A snapshot of every session so far, in the order they connected.
    pub fn sessions(&self) -> Vec<Received> {
        lock(&self.sessions)
            .iter()
            .map(|s| lock(s).clone())
            .collect()
    }

    /// Connections accepted so far (handshakes answered or not).
    pub fn connections(&self) -> usize {
        lock(&self.sessions).len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(
    listener: TcpListener,
    behaviour: Behaviour,
    record: bool,
    sessions: Arc<Mutex<Vec<Arc<Mutex<Received>>>>>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors, most likely: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let received = Arc::new(Mutex::new(Received::default()));
        if record {
            lock(&sessions).push(received.clone());
        }
        tokio::spawn(serve(tcp, behaviour.clone(), record, received));
    }
}

fn media(payload: &str) -> Message {
    Message::Text(
        format!(
            r#"{{"event":"media","streamSid":"{AGENT_STREAM_SID}","media":{{"payload":"{payload}"}}}}"#
        )
        .into(),
    )
}

fn mark(name: &str) -> Message {
    Message::Text(
        format!(
            r#"{{"event":"mark","streamSid":"{AGENT_STREAM_SID}","mark":{{"name":"{name}"}}}}"#
        )
        .into(),
    )
}

fn clear() -> Message {
    Message::Text(format!(r#"{{"event":"clear","streamSid":"{AGENT_STREAM_SID}"}}"#).into())
}

/// A payload whose base64 spells `word`-ish: distinct and recognisable on the Twilio side.
pub fn tagged_payload(word: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(word.as_bytes())
}

async fn serve(tcp: TcpStream, behaviour: Behaviour, record: bool, received: Arc<Mutex<Received>>) {
    if behaviour == Behaviour::HangHandshake {
        // Hold the connection open without a word until the bridge gives up.
        let mut tcp = tcp;
        let mut sink = [0u8; 1024];
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await {
            if n == 0 {
                break;
            }
        }
        lock(&received).ended = true;
        return;
    }
    let refuse = match behaviour {
        Behaviour::Refuse(status) => Some(status),
        _ => None,
    };
    let handshake_record = received.clone();
    // tungstenite's callback signature fixes the error type; it is built once per handshake.
    #[allow(clippy::result_large_err)]
    let callback = move |request: &Request,
                         response: Response|
          -> Result<Response, ErrorResponse> {
        let mut r = lock(&handshake_record);
        r.path_and_query = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        r.headers = request
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if let Some(status) = refuse {
            let mut refusal = ErrorResponse::new(Some("refused by the test agent".to_owned()));
            *refusal.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            return Err(refusal);
        }
        Ok(response)
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(0);
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await
    else {
        lock(&received).ended = true;
        return;
    };
    let mut echoed = 0usize;
    while let Some(message) = ws.next().await {
        let Ok(message) = message else { break };
        let text = match &message {
            Message::Text(text) => text.as_str().to_owned(),
            Message::Binary(bytes) => format!("<binary {} bytes>", bytes.len()),
            Message::Close(frame) => {
                lock(&received).close_code =
                    Some(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
                continue;
            }
            _ => continue,
        };
        if record {
            lock(&received).messages.push(text.clone());
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let event = value["event"].as_str().unwrap_or("");
        let sent = match (event, &behaviour) {
            ("start", Behaviour::Stall) => {
                // Never read again; the socket stays open until the bridge closes it.
                std::future::pending::<()>().await;
                Ok(())
            }
            ("start", Behaviour::BargeIn) => {
                let script = [
                    media(&tagged_payload("a1")),
                    media(&tagged_payload("a2")),
                    media(&tagged_payload("a3")),
                    mark("m1"),
                    clear(),
                    media(&tagged_payload("b1")),
                    mark("m2"),
                ];
                let mut all = futures_util::stream::iter(script.into_iter().map(Ok));
                ws.send_all(&mut all).await
            }
            ("start", Behaviour::Junk) => {
                let script = [
                    Message::Text(r#"{"event":"transcript","text":"hello"}"#.into()),
                    Message::Binary(vec![1u8, 2, 3].into()),
                    Message::Text("this is not json".into()),
                    Message::Text(r#"{"event":"media","streamSid":"x"}"#.into()),
                    media(&tagged_payload("done")),
                ];
                let mut all = futures_util::stream::iter(script.into_iter().map(Ok));
                ws.send_all(&mut all).await
            }
            ("media", _) => {
                let payload = value["media"]["payload"].as_str().unwrap_or("");
                let sent = ws.send(media(payload)).await;
                echoed += 1;
                match behaviour {
                    Behaviour::HangUpAfter(n) if echoed == n => {
                        let _ = ws.send(media(&tagged_payload("bye"))).await;
                        let _ = ws
                            .send(Message::Close(Some(CloseFrame {
                                code: CloseCode::Normal,
                                reason: "agent done".into(),
                            })))
                            .await;
                        // Read until the bridge answers the close.
                        while let Some(Ok(message)) = ws.next().await {
                            if let Message::Close(frame) = message {
                                lock(&received).close_code =
                                    Some(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
                                break;
                            }
                        }
                        break;
                    }
                    Behaviour::DropAfter(n) if echoed == n => break,
                    _ => {}
                }
                sent
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    lock(&received).ended = true;
    // Dropping `ws` here closes the TCP connection (abruptly for DropAfter).
}
