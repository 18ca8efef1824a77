//! Where simulated traffic goes and what Twilio would sign: every connection is made to one
//! address, whatever host a URL names; loopback only, unless the operator says they mean it.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use thiserror::Error;
use url::Url;

use twilio::signature;

use super::conn::Conn;
use super::error::SimError;
use super::tls::{self, TlsError};

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("--target {0:?} is not a URL: {1}")]
    Invalid(String, url::ParseError),
    #[error("--target {0:?} must be http://host[:port] or https://host[:port]")]
    Scheme(String),
    #[error(
        "--target {0:?} does not resolve to a loopback address; the simulator only talks to \
         127.0.0.0/8 or ::1 unless --allow-remote says you mean to send traffic to another host"
    )]
    NotLoopback(String),
    #[error("--target {0:?} does not resolve: {1}")]
    Resolve(String, String),
    #[error("--target {0:?}: its host is no TLS server name: {1}")]
    ServerName(String, String),
    #[error("--ca-file is for https:// targets; --target {0:?} is plain http")]
    CaFileWithoutTls(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("--public-url {0:?} must be an http(s) URL without query: {1}")]
    PublicUrl(String, String),
}

/// How far a run may reach and whom it trusts over TLS. The default: loopback only, and for an
/// `https://` target the public CA roots alone.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// The target may resolve to any address (a staging endpoint), not only loopback.
    pub allow_remote: bool,
    /// PEM certificates trusted besides the public roots (a private CA, a self-signed front).
    pub ca_file: Option<PathBuf>,
}

/// The server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// The address every connection goes to.
    pub addr: SocketAddr,
    /// `host[:port]` of `--target` (the port when not the scheme's default): the `Host` of the
    /// webhook.
    pub authority: String,
    /// For an `https://` target: the run's TLS config and the name its certificate must carry.
    tls: Option<TlsTarget>,
    /// `--public-url` without a trailing slash: what the server believes Twilio calls.
    public_url: Option<String>,
    auth_token: Option<String>,
}

#[derive(Debug, Clone)]
struct TlsTarget {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// How to open one Media Stream: the request path, its `Host`, and its signature.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    pub path: String,
    pub host: String,
    pub signature: Option<String>,
}

impl Target {
    /// A fresh connection to the target, TLS when it is `https://`: the one way both webhooks and
    /// streams dial it.
    pub async fn connect(&self) -> Result<Conn, SimError> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|source| SimError::Connect {
                addr: self.addr.to_string(),
                source,
            })?;
        let Some(tls) = &self.tls else {
            return Ok(Conn::Plain(tcp));
        };
        tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(tls.name.clone(), tcp)
            .await
            .map(|stream| Conn::Tls(Box::new(stream)))
            .map_err(|err| tls::handshake_error(&self.authority, err))
    }

    /// A loopback target with the default [`Reach`].
    pub fn new(
        target: &str,
        public_url: Option<&str>,
        auth_token: Option<String>,
    ) -> Result<Self, TargetError> {
        Self::with_reach(target, public_url, auth_token, &Reach::default())
    }

    pub fn with_reach(
        target: &str,
        public_url: Option<&str>,
        auth_token: Option<String>,
        reach: &Reach,
    ) -> Result<Self, TargetError> {
        let url = Url::parse(target).map_err(|e| TargetError::Invalid(target.to_owned(), e))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(TargetError::Scheme(target.to_owned())),
        };
        let (Some(host), Some(host_str)) = (url.host(), url.host_str()) else {
            return Err(TargetError::Scheme(target.to_owned()));
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = resolve(target, host_str, port, reach.allow_remote)?;
        let tls = if https {
            Some(TlsTarget {
                config: tls::client_config(reach.ca_file.as_deref())?,
                name: tls::server_name(&host)
                    .map_err(|why| TargetError::ServerName(target.to_owned(), why))?,
            })
        } else if reach.ca_file.is_some() {
            return Err(TargetError::CaFileWithoutTls(target.to_owned()));
        } else {
            None
        };
        let public_url = match public_url {
            None => None,
            Some(raw) => Some(check_public_url(raw)?),
        };
        // As a browser or Twilio writes it: the port only when it is not the scheme's default.
        let authority = match url.port() {
            Some(port) => format!("{host_str}:{port}"),
            None => host_str.to_owned(),
        };
        Ok(Self {
            addr,
            authority,
            tls,
            public_url,
            auth_token: auth_token.filter(|t| !t.is_empty()),
        })
    }

    /// Whether connections speak TLS (an `https://` target).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `--target` as the run reached it: `http(s)://host[:port]`.
    pub fn origin(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }

    /// The voice webhook's URL as Twilio was configured with it (what its signature covers).
    pub fn voice_url(&self) -> String {
        format!("{}/twilio/voice", self.base_url())
    }

    /// The status callback's URL as Twilio was configured with it (what its signature covers).
    pub fn status_url(&self) -> String {
        format!("{}/twilio/status", self.base_url())
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
            None => self.origin(),
        }
    }
}

/// The address `host` resolves to, for `--target` `target`: loopback only unless `allow_remote`.
fn resolve(
    target: &str,
    host: &str,
    port: u16,
    allow_remote: bool,
) -> Result<SocketAddr, TargetError> {
    let refused = || TargetError::NotLoopback(target.to_owned());
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return (allow_remote || ip.is_loopback())
            .then_some(SocketAddr::new(ip, port))
            .ok_or_else(refused);
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| TargetError::Resolve(target.to_owned(), e.to_string()))?
        .collect();
    // Without the flag a name is accepted only if everything it resolves to is loopback.
    if !allow_remote && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(refused());
    }
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| TargetError::Resolve(target.to_owned(), "no address".into()))
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
            Target::new("ftp://127.0.0.1:8080", None, None),
            Err(TargetError::Scheme(_))
        ));
    }

    #[test]
    fn https_targets_speak_tls_on_443_by_default() {
        let t = Target::new("https://127.0.0.1", None, None).unwrap();
        assert!(t.is_tls());
        assert_eq!(t.addr, "127.0.0.1:443".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1");
        assert_eq!(t.voice_url(), "https://127.0.0.1/twilio/voice");
        assert_eq!(t.default_stream_url(), "wss://127.0.0.1/twilio/stream");

        let t = Target::new("https://[::1]:8443", None, None).unwrap();
        assert!(t.is_tls());
        assert_eq!(t.addr, "[::1]:8443".parse().unwrap());
        assert_eq!(t.voice_url(), "https://[::1]:8443/twilio/voice");

        let t = Target::new("http://127.0.0.1", None, None).unwrap();
        assert!(!t.is_tls());
        assert_eq!(t.addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(t.voice_url(), "http://127.0.0.1/twilio/voice");
    }

    #[test]
    fn remote_targets_only_with_allow_remote() {
        // TEST-NET addresses: parsed here, never resolved or contacted.
        let remote = "https://192.0.2.10:8443";
        let refused = Target::new(remote, None, None).unwrap_err();
        assert!(matches!(refused, TargetError::NotLoopback(_)));
        assert!(refused.to_string().contains("--allow-remote"), "{refused}");
        assert!(matches!(
            Target::new("http://[2001:db8::1]:8080", None, None),
            Err(TargetError::NotLoopback(_))
        ));

        let reach = Reach {
            allow_remote: true,
            ca_file: None,
        };
        let t = Target::with_reach(remote, None, None, &reach).unwrap();
        assert!(t.is_tls());
        assert_eq!(t.addr, "192.0.2.10:8443".parse().unwrap());
        assert_eq!(t.voice_url(), "https://192.0.2.10:8443/twilio/voice");
        let t = Target::with_reach("http://[2001:db8::1]", None, None, &reach).unwrap();
        assert_eq!(t.addr, "[2001:db8::1]:80".parse().unwrap());
        // Loopback stays allowed with the flag.
        assert!(Target::with_reach("http://127.0.0.1:8080", None, None, &reach).is_ok());
    }

    #[test]
    fn ca_file_is_read_for_https_targets_only() {
        let reach = Reach {
            allow_remote: false,
            ca_file: Some("/nonexistent/prosaas-sim-ca.pem".into()),
        };
        assert!(matches!(
            Target::with_reach("http://127.0.0.1:8080", None, None, &reach),
            Err(TargetError::CaFileWithoutTls(_))
        ));
        assert!(matches!(
            Target::with_reach("https://127.0.0.1:8443", None, None, &reach),
            Err(TargetError::Tls(TlsError::CaFile(..)))
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
