//! What can go wrong with one simulated call, typed; each error has a short stable `kind` so a
//! run's report can count failures by cause without keeping their messages.

use std::io;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SimError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("TLS to {host}: the server's certificate was not trusted: {reason}")]
    Certificate { host: String, reason: String },
    #[error("TLS to {host}: handshake failed: {source}")]
    Tls { host: String, source: io::Error },
    #[error("{stage}: {source}")]
    Io {
        stage: &'static str,
        source: io::Error,
    },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("voice webhook answered HTTP {0}")]
    WebhookStatus(u16),
    #[error("voice webhook answer is not HTTP/1.1 with a body: {0}")]
    BadHttp(&'static str),
    #[error("voice webhook TwiML has neither <Stream> nor a refusal")]
    BadTwiml,
    #[error("stream URL {0:?} is unusable: {1}")]
    BadStreamUrl(String, String),
    #[error("WebSocket upgrade refused with HTTP {0}")]
    UpgradeStatus(u16),
    #[error("WebSocket upgrade answer is malformed: {0}")]
    BadUpgrade(&'static str),
    #[error("server broke the WebSocket protocol: {0}")]
    Protocol(&'static str),
    #[error("server closed the stream early with code {0}")]
    ClosedEarly(u16),
    #[error("server closed the connection before the call ended")]
    Eof,
    #[error("the socket stopped taking our frames (more than {0} bytes queued)")]
    SendStalled(usize),
}

impl SimError {
    pub fn io(stage: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { stage, source }
    }

    /// A short label for the errors-by-kind table.
    pub fn kind(&self) -> String {
        match self {
            Self::Connect { .. } => "connect".into(),
            Self::Certificate { .. } => "tls_certificate".into(),
            Self::Tls { .. } => "tls_handshake".into(),
            Self::Io { stage, source } => format!("io_{stage}_{:?}", source.kind()).to_lowercase(),
            Self::Timeout(stage) => format!("timeout_{stage}"),
            Self::WebhookStatus(code) => format!("webhook_http_{code}"),
            Self::BadHttp(_) => "webhook_bad_http".into(),
            Self::BadTwiml => "webhook_bad_twiml".into(),
            Self::BadStreamUrl(..) => "bad_stream_url".into(),
            Self::UpgradeStatus(code) => format!("upgrade_http_{code}"),
            Self::BadUpgrade(_) => "upgrade_malformed".into(),
            Self::Protocol(_) => "ws_protocol".into(),
            Self::ClosedEarly(code) => format!("closed_early_{code}"),
            Self::Eof => "eof_mid_call".into(),
            Self::SendStalled(_) => "send_stalled".into(),
        }
    }
}
