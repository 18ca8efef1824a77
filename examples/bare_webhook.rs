//! The burst benchmark's floor: a bare hyper http1 server (TCP_NODELAY, header-read timeout, as the
//! server) that reads each voice webhook's form and answers the stream TwiML. No Redis, no logging.
//!
//! Usage: `bare_webhook [ADDR]` (default `127.0.0.1:9001`).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

/// The server's `HEADER_READ_TIMEOUT`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    // The server's listen backlog (src/main.rs LISTEN_BACKLOG), so a burst meets the same queue.
    let listener = listen(addr.parse().map_err(std::io::Error::other)?)?;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let connection =
            builder.serve_connection(TokioIo::new(stream), hyper::service::service_fn(voice));
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

/// The same answer the server gives an admitted call: the stream TwiML with the call's SID as a
/// `<Parameter>`, after reading and decoding the whole form.
async fn voice(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let Ok(body) = req.into_body().collect().await else {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(response);
    };
    let body = body.to_bytes();
    let call_sid = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "CallSid")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let twiml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"ws://{host}/twilio/stream\">\
         <Parameter name=\"CallSid\" value=\"{call_sid}\"/></Stream></Connect></Response>"
    );
    let mut response = Response::new(Full::new(Bytes::from(twiml)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    Ok(response)
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
