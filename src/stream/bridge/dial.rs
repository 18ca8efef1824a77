//! Dialling the voice agent (docs/reference.md#bridge): the rendered `BRIDGE_URL`, `BRIDGE_HEADERS`
//! on the handshake and nothing of Twilio's, TCP_NODELAY, rustls with ring for wss://, sized like
//! Twilio's socket.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use calls_core::state::CallState;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::{BridgeConfig, DotSegment, Placeholder};
use crate::metrics::BridgeFailure;

/// The agent's side of a bridged call, as dialled.
type AgentConnection = WebSocketStream<AgentStream>;

/// The agent's byte stream: TCP inline, TLS boxed. tokio-tungstenite's `MaybeTlsStream` holds
/// rustls' connection inline (1,104 bytes, TCP's is 32) in every bridged call's future, ws://
/// included (docs/benchmarks.md, memory per bridged call).
pub(super) enum AgentStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for AgentStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Same read buffer as Twilio's socket (src/http/stream.rs): agent frames are the same size.
const READ_BUFFER_BYTES: usize = 2048;
const WRITE_BUFFER_BYTES: usize = 0;
/// What may queue in the socket for an agent that stopped reading; the relay's own queue is
/// bounded too, and a write that waits 5 s ends the bridge.
const MAX_WRITE_BUFFER_BYTES: usize = 64 * 1024;
/// Messages over 64 KiB are dropped (and counted) by the relay, so it must be able to read them
/// whole; beyond this the socket fails and the bridge is lost.
const MAX_AGENT_MESSAGE_BYTES: usize = 1024 * 1024;

/// Why the agent could not be reached; each is a `bridge_failures_total{reason}` label.
#[derive(Debug, thiserror::Error)]
pub(super) enum DialError {
    #[error("the agent did not accept within the connect timeout")]
    Timeout,
    #[error("connection refused")]
    Refused,
    #[error("could not connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("the agent answered HTTP {0}, not 101")]
    Rejected(u16),
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    #[error("not dialled: {0}")]
    UnsafeValue(DotSegment),
}

impl DialError {
    pub(super) fn reason(&self) -> BridgeFailure {
        match self {
            Self::Timeout => BridgeFailure::ConnectTimeout,
            Self::Refused => BridgeFailure::ConnectRefused,
            Self::Connect(_) => BridgeFailure::ConnectError,
            Self::Tls(_) => BridgeFailure::Tls,
            Self::Rejected(_) => BridgeFailure::HandshakeRejected,
            Self::Handshake(_) => BridgeFailure::Handshake,
            Self::UnsafeValue(_) => BridgeFailure::UnsafeUrl,
        }
    }
}

/// The agent's URL for one call: `BRIDGE_URL` with its placeholders filled from the call's state;
/// a caller's value that would be a `..` path segment is refused (the call is not dialled).
pub(super) fn render_url(config: &BridgeConfig, state: &CallState) -> Result<String, DialError> {
    config
        .url
        .render(|placeholder| {
            match placeholder {
                Placeholder::CallSid => Some(state.call_sid.as_str()),
                Placeholder::AccountSid => state.account_sid.as_deref(),
                Placeholder::From => state.from.as_deref(),
                Placeholder::To => state.to.as_deref(),
                // Empty without TENANT_KEY, as for any unknown value.
                Placeholder::Tenant => state.tenant.as_deref(),
            }
            .unwrap_or("")
        })
        .map_err(DialError::UnsafeValue)
}

/// Opens the agent's WebSocket. The handshake carries `BRIDGE_HEADERS` and what the WebSocket
/// client itself writes, nothing else: Twilio's signature and credentials never go upstream.
/// The caller bounds it with `BRIDGE_CONNECT_TIMEOUT_SECS`.
pub(super) async fn dial(config: &BridgeConfig, url: &str) -> Result<AgentConnection, DialError> {
    let mut request = url
        .into_client_request()
        .map_err(|err| DialError::Handshake(err.to_string()))?;
    for (name, value) in &config.headers {
        request
            .headers_mut()
            .insert(name.clone(), value.expose().clone());
    }
    let socket_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(MAX_AGENT_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_AGENT_MESSAGE_BYTES));
    let uri = request.uri();
    let tls = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => {
            return Err(DialError::Handshake(
                "the URL is not ws:// or wss://".into(),
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| DialError::Handshake("the URL has no host".into()))?;
    // An IPv6 literal comes in brackets; neither the resolver nor rustls wants them.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(connect_error)?;
    // TCP_NODELAY: each 20 ms frame must leave at once, not wait for the previous one's ACK.
    tcp.set_nodelay(true).map_err(DialError::Connect)?;
    let stream = if tls {
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|err| DialError::Tls(err.to_string()))?;
        let tls = TlsConnector::from(TLS.clone())
            .connect(name, tcp)
            .await
            .map_err(|err| DialError::Tls(err.to_string()))?;
        AgentStream::Tls(Box::new(tls))
    } else {
        AgentStream::Plain(tcp)
    };
    let (socket, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(socket_config))
            .await
            .map_err(classify)?;
    Ok(socket)
}

fn connect_error(err: std::io::Error) -> DialError {
    if err.kind() == std::io::ErrorKind::ConnectionRefused {
        DialError::Refused
    } else {
        DialError::Connect(err)
    }
}

fn classify(err: tungstenite::Error) -> DialError {
    match err {
        tungstenite::Error::Io(io) => connect_error(io),
        tungstenite::Error::Tls(tls) => DialError::Tls(tls.to_string()),
        tungstenite::Error::Http(response) => DialError::Rejected(response.status().as_u16()),
        other => DialError::Handshake(other.to_string()),
    }
}

/// wss:// agents are checked against the public web roots, with ring as the one crypto provider
/// (as the Redis client): the build carries no second TLS stack.
static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // ring implements every safe default protocol version, so this builder step cannot fail.
    #[allow(clippy::expect_used)]
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3");
    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
});

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use calls_core::state::CallState;

    use super::*;
    use crate::config::BridgeUrl;

    #[test]
    fn placeholders_take_the_calls_values_percent_encoded() {
        let config = BridgeConfig {
            url: BridgeUrl::parse("wss://agent.example/{tenant}/{call_sid}?from={from}&to={to}")
                .unwrap(),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(5),
        };
        let mut state = CallState::reserved("CA1", "r1");
        state.from = Some("+15550001".into());
        assert_eq!(
            render_url(&config, &state).unwrap(),
            "wss://agent.example//CA1?from=%2B15550001&to="
        );
        state.tenant = Some("AC 9".into());
        assert_eq!(
            render_url(&config, &state).unwrap(),
            "wss://agent.example/AC%209/CA1?from=%2B15550001&to="
        );
        state.tenant = Some("..".into());
        let refused = render_url(&config, &state).unwrap_err();
        assert_eq!(refused.reason(), BridgeFailure::UnsafeUrl);
    }
}
