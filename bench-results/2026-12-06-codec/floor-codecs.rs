//! The media benchmark's floor: the smallest program doing the server's I/O, tuned as it is tuned.
//! hyper http1 (header-read timeout, TCP_NODELAY) answers `POST /twilio/voice` with stream TwiML
//! and upgrades `GET /twilio/stream` to tokio-tungstenite with the server's buffer sizes; it echoes
//! `media` messages only (or, with `silent`, drops everything). No Redis, no parsing, no state.
//!
//! Usage: `bare_echo [ADDR] [echo|silent]` (default `127.0.0.1:9000 echo`).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, CONTENT_TYPE, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The server's values (src/http/stream.rs, src/session.rs): a floor with tungstenite's 128 KiB
/// default read buffer zero-fills 64 times more per read than the server and is no floor.
const READ_BUFFER_BYTES: usize = 2048;
const WRITE_BUFFER_BYTES: usize = 0;
const MAX_WRITE_BUFFER_BYTES: usize = 64 * 1024;
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The server's `HEADER_READ_TIMEOUT`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let echo = args.next().as_deref() != Some("silent");
    // The server's listen backlog (src/main.rs LISTEN_BACKLOG), so a burst meets the same queue.
    let listener = listen(addr.parse().map_err(std::io::Error::other)?)?;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, _) = listener.accept().await?;
        // The server sets TCP_NODELAY too; without it Nagle would skew latency.
        stream.set_nodelay(true)?;
        let service = hyper::service::service_fn(move |req| handle(req, echo));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

async fn handle(req: Request<Incoming>, echo: bool) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::POST {
        return Ok(voice(req).await);
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mode = std::env::var("WS").unwrap_or_default();
        let raw = mode.ends_with("raw");
        if raw {
            let parts = upgraded.downcast::<TokioIo<tokio::net::TcpStream>>().ok().unwrap();
            assert!(parts.read_buf.is_empty());
            let tcp = parts.io.into_inner();
            if mode.starts_with("tws") { tws(tcp, echo).await } else { tung(tcp, echo).await }
        } else if mode.starts_with("tws") {
            tws(TokioIo::new(upgraded), echo).await
        } else {
            tung(TokioIo::new(upgraded), echo).await
        }
    });
    let mut response = status(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    Ok(response)
}

/// The webhook step the server run pays too: read the whole form, answer the stream TwiML.
async fn voice(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    if req.into_body().collect().await.is_err() {
        return status(StatusCode::BAD_REQUEST);
    }
    let twiml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"ws://{host}/twilio/stream\"/></Connect></Response>"
    );
    let mut response = Response::new(Full::new(Bytes::from(twiml)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

async fn tung<S>(s: S, echo: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let ws = WebSocketStream::from_raw_socket(s, Role::Server, Some(config)).await;
    serve(ws, echo).await
}

async fn tws<S>(s: S, echo: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ws = tokio_websockets::ServerBuilder::new()
        .limits(tokio_websockets::Limits::default().max_payload_len(Some(MAX_MESSAGE_BYTES)))
        .serve(s);
    let finder = memchr::memmem::Finder::new(b"\"event\":\"media\"");
    while let Some(Ok(message)) = ws.next().await {
        let media = message.as_text().is_some_and(|t| finder.find(t.as_bytes()).is_some());
        if echo && media && ws.send(message).await.is_err() {
            break;
        }
    }
}

async fn serve<S>(mut ws: WebSocketStream<S>, echo: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let finder = memchr::memmem::Finder::new(b"\"event\":\"media\"");
    while let Some(Ok(message)) = ws.next().await {
        // The server answers media only (marks, DTMF and start are read, not echoed as media).
        let media =
            matches!(&message, Message::Text(text) if finder.find(text.as_bytes()).is_some());
        if echo && media && ws.send(message).await.is_err() {
            break;
        }
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

/// As the server listens: backlog 4096 instead of tokio's 128.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
