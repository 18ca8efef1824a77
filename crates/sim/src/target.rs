//! Where simulated traffic goes and what Twilio would sign: every connection is made to one
//! loopback address, whatever host a URL names, so a run can never leave the machine.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use thiserror::Error;
use url::Url;

use twilio::signature;

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("--target {0:?} is not a URL: {1}")]
    Invalid(String, url::ParseError),
    #[error("--target {0:?} must be http://host:port")]
    Scheme(String),
    #[error(
        "--target {0:?} does not resolve to a loopback address; the simulator only talks to 127.0.0.0/8 or ::1"
    )]
    NotLoopback(String),
    #[error("--public-url {0:?} must be an http(s) URL without query: {1}")]
    PublicUrl(String, String),
}

/// The server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// The loopback address every connection goes to.
    pub addr: SocketAddr,
    /// `host:port` of `--target`, the `Host` of the webhook.
    pub authority: String,
    /// `--public-url` without a trailing slash: what the server believes Twilio calls.
    public_url: Option<String>,
    auth_token: Option<String>,
}

/// How to open one Media Stream: the request path, its `Host`, and its signature.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    pub path: String,
    pub host: String,
    pub signature: Option<String>,
}

impl Target {
    /// A fresh TCP connection to the target, the one way both webhooks and streams dial it.
    pub async fn connect(&self) -> Result<tokio::net::TcpStream, super::error::SimError> {
        tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|source| super::error::SimError::Connect {
                addr: self.addr.to_string(),
                source,
            })
    }

    pub fn new(
        target: &str,
        public_url: Option<&str>,
        auth_token: Option<String>,
    ) -> Result<Self, TargetError> {
        let url = Url::parse(target).map_err(|e| TargetError::Invalid(target.to_owned(), e))?;
        if url.scheme() != "http" {
            return Err(TargetError::Scheme(target.to_owned()));
        }
        let host = url
            .host_str()
            .ok_or_else(|| TargetError::Scheme(target.to_owned()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr =
            loopback_addr(host, port).ok_or_else(|| TargetError::NotLoopback(target.to_owned()))?;
        let public_url = match public_url {
            None => None,
            Some(raw) => Some(check_public_url(raw)?),
        };
        Ok(Self {
            addr,
            authority: format!("{host}:{port}"),
            public_url,
            auth_token: auth_token.filter(|t| !t.is_empty()),
        })
    }

    /// The voice webhook's URL as Twilio was configured with it (what its signature covers).
    pub fn voice_url(&self) -> String {
        format!("{}/twilio/voice", self.base_url())
    }

    /// The stream URL a `<Stream>` would name, for runs that skip the webhook.
    pub fn default_stream_url(&self) -> String {
        let base = self.base_url();
        match base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}/twilio/stream"),
            None => format!("ws://{}/twilio/stream", base.trim_start_matches("http://")),
        }
    }

    /// `X-Twilio-Signature` for a request to `url` with `params`, when an auth token was given.
    pub fn sign(&self, url: &str, params: &[(&str, &str)]) -> Option<String> {
        self.auth_token
            .as_deref()
            .map(|token| signature::compute(token, url, params))
    }

    /// How to open the stream the TwiML named: its path and host, connected to `addr` whatever the
    /// host, and signed over the URL exactly as written (Twilio signs it with no parameters).
    pub fn stream_request(&self, stream_url: &str) -> Result<StreamRequest, String> {
        let url = Url::parse(stream_url).map_err(|e| e.to_string())?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(format!("scheme {:?} is not ws or wss", url.scheme()));
        }
        let host = url.host_str().ok_or("no host")?;
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        let empty: [(&str, &str); 0] = [];
        Ok(StreamRequest {
            path,
            host,
            signature: self.sign(stream_url, &empty),
        })
    }

    fn base_url(&self) -> String {
        match &self.public_url {
            Some(public) => public.clone(),
            None => format!("http://{}", self.authority),
        }
    }
}

fn loopback_addr(host: &str, port: u16) -> Option<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback().then_some(SocketAddr::new(ip, port));
    }
    // A name is accepted only if everything it resolves to is loopback.
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
        return None;
    }
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
}

fn check_public_url(raw: &str) -> Result<String, TargetError> {
    let bad = |why: &str| TargetError::PublicUrl(raw.to_owned(), why.to_owned());
    let url = Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("scheme is not http or https"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it has a query or fragment"));
    }
    // The server trims a trailing slash the same way before building URLs from it.
    Ok(raw.trim().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        let t = Target::new("http://127.0.0.1:8080", None, None).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.voice_url(), "http://127.0.0.1:8080/twilio/voice");
        assert_eq!(t.default_stream_url(), "ws://127.0.0.1:8080/twilio/stream");
        assert!(Target::new("http://127.9.0.1:80", None, None).is_ok());
        assert!(Target::new("http://[::1]:8080", None, None).is_ok());
        assert!(matches!(
            Target::new("http://10.0.0.1:8080", None, None),
            Err(TargetError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::new("https://127.0.0.1:8080", None, None),
            Err(TargetError::Scheme(_))
        ));
    }

    #[test]
    fn public_url_names_the_signed_urls_but_not_the_address() {
        let t = Target::new(
            "http://127.0.0.1:9000",
            Some("https://calls.example.com/"),
            Some("tok".into()),
        )
        .unwrap();
        assert_eq!(t.voice_url(), "https://calls.example.com/twilio/voice");
        assert_eq!(
            t.default_stream_url(),
            "wss://calls.example.com/twilio/stream"
        );
        let req = t
            .stream_request("wss://calls.example.com/twilio/stream")
            .unwrap();
        assert_eq!(req.path, "/twilio/stream");
        assert_eq!(req.host, "calls.example.com");
        let empty: [(&str, &str); 0] = [];
        assert_eq!(
            req.signature.as_deref(),
            Some(
                signature::compute("tok", "wss://calls.example.com/twilio/stream", &empty).as_str()
            )
        );
        assert_eq!(t.addr.port(), 9000);
    }
}
