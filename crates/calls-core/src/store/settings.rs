//! Where the state store is: `REDIS_URL` and the `REDIS_TLS_*` files
//! (docs/reference.md#configuration), parsed once into typed pieces for `serve`, the command line
//! and the connection alike.
//!
//! The URL keeps its credentials and only the connection reads it; [`RedisTarget`] is the address
//! without them, what logs and error messages may show.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;
use redis::{ClientTlsConfig, RedisError, TlsCertificates};
use thiserror::Error;
use url::Url;

pub const DEFAULT_REDIS_PORT: u16 = 6379;
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// `REDIS_URL` and `REDIS_TLS_*`, checked: a URL the client opens, TLS files only with a TLS URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The URL as given, credentials included: only the connection reads it.
    url: String,
    /// Where it points, without credentials: for logs, errors and the connection's shape.
    pub target: RedisTarget,
    pub tls: RedisTls,
}

/// Never the URL: it holds the credentials.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("target", &format_args!("{}", self.target))
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://` (`tls` false) or `rediss://`.
    Tcp { tls: bool, addr: HostPort, db: i64 },
    /// `redis+unix://` or `unix://`.
    Unix { path: PathBuf, db: i64 },
    /// `redis+sentinel://` (`tls` false) or `rediss+sentinel://`.
    Sentinel(SentinelTarget),
}

/// `redis+sentinel://[user:pass@]host[:port][,host[:port]…]/master_name[/db]`, as Python's clients
/// spell it; `rediss+sentinel://` speaks TLS to the Sentinels and to the primary alike. The
/// credentials are the primary's (Python's clients give Sentinels their own, out of the URL).
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    pub tls: bool,
    /// At least one; each port defaults to 26379.
    pub sentinels: Vec<HostPort>,
    /// Percent-decoded.
    pub master: String,
    pub db: i64,
    /// Percent-decoded; never shown.
    username: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// A name or an address; an IPv6 address keeps its brackets.
    pub host: String,
    pub port: u16,
}

/// `REDIS_TLS_CA_FILE`, `REDIS_TLS_CERT_FILE`, `REDIS_TLS_KEY_FILE`: PEM files, all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// The CA(s) that sign the server's certificate; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate, for a Redis that requires one.
    pub client_cert: Option<ClientCert>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Why the Redis connection cannot be built; each names the variable to fix and never repeats the
/// URL's credentials.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("REDIS_URL: {0}")]
    Url(String),
    #[error("{var}: cannot read {}: {source}", path.display())]
    ReadFile {
        var: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{var}: {} holds no PEM certificate", path.display())]
    NoCertificate { var: &'static str, path: PathBuf },
    #[error("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together: set both or neither")]
    HalfClientCertificate,
    #[error(
        "REDIS_TLS_* files are set but REDIS_URL does not use TLS (rediss:// or rediss+sentinel://)"
    )]
    TlsFilesWithoutTls,
    /// The Redis client's own reason; it never repeats the URL's credentials.
    #[error("REDIS_URL: {0}")]
    Client(#[source] RedisError),
}

impl RedisSettings {
    /// Parses `url` and pairs it with `tls`. Reads no file: a missing one fails when the
    /// connection is built.
    ///
    /// # Errors
    ///
    /// A URL the client cannot use, or TLS files beside a URL without TLS.
    pub fn new(url: &str, tls: RedisTls) -> Result<Self, ConnectError> {
        let target = RedisTarget::parse(url).map_err(ConnectError::Url)?;
        Self::of(url, target, tls)
    }

    /// Settings from a URL already parsed into `target` (start-up reports each variable's error
    /// on its own first).
    ///
    /// # Errors
    ///
    /// TLS files beside a URL without TLS.
    pub fn of(url: &str, target: RedisTarget, tls: RedisTls) -> Result<Self, ConnectError> {
        if !tls.is_empty() && !target.is_tls() {
            return Err(ConnectError::TlsFilesWithoutTls);
        }
        Ok(Self {
            url: url.to_owned(),
            target,
            tls,
        })
    }

    /// The URL with its credentials, for the connection only.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The server named in every store error, without credentials: `host:port`, a socket path, or
    /// the Sentinels and the master's name.
    pub fn address(&self) -> String {
        match &self.target {
            RedisTarget::Tcp { addr, .. } => addr.to_string(),
            RedisTarget::Unix { path, .. } => path.display().to_string(),
            RedisTarget::Sentinel(sentinel) => {
                let hosts: Vec<String> =
                    sentinel.sentinels.iter().map(HostPort::to_string).collect();
                format!("sentinel {} master {}", hosts.join(","), sentinel.master)
            }
        }
    }
}

impl RedisTarget {
    /// Whether the connection to Redis is TLS (`rediss://`, `rediss+sentinel://`).
    pub fn is_tls(&self) -> bool {
        match self {
            Self::Tcp { tls, .. } | Self::Sentinel(SentinelTarget { tls, .. }) => *tls,
            Self::Unix { .. } => false,
        }
    }

    /// Parses the shape of a `REDIS_URL`; the reason on error never repeats the URL.
    ///
    /// # Errors
    ///
    /// What is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let scheme = raw.split_once("://").map_or("", |(s, _)| s);
        match scheme {
            "redis" | "rediss" => tcp(raw, scheme == "rediss"),
            "redis+unix" | "unix" => unix(raw),
            "redis+sentinel" | "rediss+sentinel" => {
                sentinel(&raw[scheme.len() + 3..], scheme == "rediss+sentinel").map(Self::Sentinel)
            }
            _ => Err(
                "expected redis://, rediss://, redis+unix://, unix://, redis+sentinel:// or \
                 rediss+sentinel://"
                    .to_owned(),
            ),
        }
    }
}

/// The address without credentials, as a URL: what start-up and errors may print.
impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { tls, addr, db } => {
                let scheme = if *tls { "rediss" } else { "redis" };
                write!(f, "{scheme}://{addr}/{db}")
            }
            Self::Unix { path, db } => write!(f, "redis+unix://{}?db={db}", path.display()),
            Self::Sentinel(s) => {
                let scheme = if s.tls {
                    "rediss+sentinel"
                } else {
                    "redis+sentinel"
                };
                write!(f, "{scheme}://")?;
                for (i, addr) in s.sentinels.iter().enumerate() {
                    let comma = if i == 0 { "" } else { "," };
                    write!(f, "{comma}{addr}")?;
                }
                write!(f, "/{}/{}", s.master, s.db)
            }
        }
    }
}

/// As `Display`: no credentials.
impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

/// Without the credentials.
impl fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("tls", &self.tls)
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl SentinelTarget {
    /// The primary's user, as the URL names it.
    pub(crate) fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The primary's password, as the URL names it.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl HostPort {
    /// The host as a connection takes it: an IPv6 address without its brackets.
    pub(crate) fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl RedisTls {
    /// The three files as a command line takes them.
    ///
    /// # Errors
    ///
    /// A certificate without its key, or a key without its certificate.
    pub fn from_files(
        ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    ) -> Result<Self, ConnectError> {
        let client_cert = match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Some(ClientCert {
                cert_file,
                key_file,
            }),
            (None, None) => None,
            _ => return Err(ConnectError::HalfClientCertificate),
        };
        Ok(Self {
            ca_file,
            client_cert,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.client_cert.is_none()
    }

    /// The files' contents, read now so a missing file stops start-up rather than every call.
    pub(crate) fn certificates(&self) -> Result<TlsCertificates, ConnectError> {
        let root_cert = match &self.ca_file {
            Some(path) => {
                let pem = read("REDIS_TLS_CA_FILE", path)?;
                // An empty or non-PEM file would make an empty trust store: every handshake would
                // fail with a misleading "unknown issuer". Say what is wrong at start-up instead.
                if !pem_has_certificate(&pem) {
                    return Err(ConnectError::NoCertificate {
                        var: "REDIS_TLS_CA_FILE",
                        path: path.clone(),
                    });
                }
                Some(pem)
            }
            None => None,
        };
        let client_tls = match &self.client_cert {
            Some(ClientCert {
                cert_file,
                key_file,
            }) => {
                let client_cert = read("REDIS_TLS_CERT_FILE", cert_file)?;
                if !pem_has_certificate(&client_cert) {
                    return Err(ConnectError::NoCertificate {
                        var: "REDIS_TLS_CERT_FILE",
                        path: cert_file.clone(),
                    });
                }
                Some(ClientTlsConfig {
                    client_cert,
                    client_key: read("REDIS_TLS_KEY_FILE", key_file)?,
                })
            }
            None => None,
        };
        Ok(TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

/// A PEM file that exists and can be read now (a missing mount fails at start-up, not on the
/// first call). Its contents are never shown: a key file holds a secret.
///
/// # Errors
///
/// Why it cannot be used.
pub fn pem_file(raw: &str) -> Result<PathBuf, String> {
    let path = Path::new(raw);
    let mut file =
        std::fs::File::open(path).map_err(|err| format!("cannot read the file ({err})"))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read the file ({err})"))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err("not a PEM file (no -----BEGIN line)".to_owned());
    }
    Ok(path.to_owned())
}

fn read(var: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::ReadFile {
        var,
        path: path.to_owned(),
        source,
    })
}

fn pem_has_certificate(pem: &[u8]) -> bool {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem).any(|cert| cert.is_ok())
}

fn url_reason(err: url::ParseError) -> String {
    // url's messages name the problem, never the input.
    format!("not a valid URL ({err})")
}

fn db_number(raw: &str) -> Result<i64, String> {
    match raw.parse::<i64>() {
        Ok(db) if db >= 0 => Ok(db),
        _ => Err("the database number must be a non-negative integer".to_owned()),
    }
}

fn tcp(raw: &str, tls: bool) -> Result<RedisTarget, String> {
    let url = Url::parse(raw).map_err(url_reason)?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("expected a host, e.g. redis://redis:6379/0")?;
    let db = match url.path().trim_matches('/') {
        "" => 0,
        db => db_number(db)?,
    };
    check_with_client(raw)?;
    Ok(RedisTarget::Tcp {
        tls,
        addr: HostPort {
            host: host.to_owned(),
            port: url.port().unwrap_or(DEFAULT_REDIS_PORT),
        },
        db,
    })
}

fn unix(raw: &str) -> Result<RedisTarget, String> {
    let url = Url::parse(raw).map_err(url_reason)?;
    let path = url.path();
    if !path.starts_with('/') || path.len() < 2 {
        return Err("expected a socket path, e.g. redis+unix:///run/redis.sock".to_owned());
    }
    let db = match url.query_pairs().find(|(k, _)| k == "db") {
        Some((_, db)) => db_number(&db)?,
        None => 0,
    };
    check_with_client(raw)?;
    Ok(RedisTarget::Unix {
        path: PathBuf::from(path),
        db,
    })
}

/// The Redis client's own check, so a URL accepted here is one it will open.
fn check_with_client(raw: &str) -> Result<(), String> {
    redis::Client::open(raw)
        .map(drop)
        .map_err(|err| err.to_string())
}

/// `[user:pass@]host[:port][,host[:port]…]/master_name[/db]`, after the scheme.
fn sentinel(rest: &str, tls: bool) -> Result<SentinelTarget, String> {
    if rest.contains(['?', '#']) {
        return Err("a Sentinel URL takes no query string or fragment".to_owned());
    }
    // Credentials end at the last `@`: a password may hold characters a URL would encode.
    let (userinfo, after_userinfo) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, pass) = match userinfo.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (userinfo, None),
            };
            (
                decoded(user, "the user name")?.filter(|u| !u.is_empty()),
                pass.map(|p| decoded(p, "the password"))
                    .transpose()?
                    .flatten()
                    .filter(|p| !p.is_empty()),
            )
        }
    };
    let (hosts, path) = after_userinfo
        .split_once('/')
        .ok_or("expected /master_name after the Sentinel hosts")?;
    let sentinels = hosts
        .split(',')
        .map(sentinel_host)
        .collect::<Result<Vec<_>, _>>()?;
    let mut segments = path.split('/');
    let master = segments.next().unwrap_or_default();
    if master.is_empty() || master.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected a master name after the Sentinel hosts, e.g. /mymaster/0".to_owned());
    }
    let master = decoded(master, "the master's name")?.unwrap_or_default();
    let db = match segments.next() {
        None | Some("") => 0,
        Some(db) => db_number(db)?,
    };
    if segments.any(|s| !s.is_empty()) {
        return Err("expected /master_name[/db] after the Sentinel hosts".to_owned());
    }
    Ok(SentinelTarget {
        tls,
        sentinels,
        master,
        db,
        username,
        password,
    })
}

/// Percent-decodes `raw` (`what` names it in the error, never its value).
fn decoded(raw: &str, what: &str) -> Result<Option<String>, String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| Some(s.into_owned()))
        .map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

fn sentinel_host(raw: &str) -> Result<HostPort, String> {
    let bad = || format!("{raw:?} is not host[:port]");
    let (host, port) = if let Some(v6) = raw.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (&raw[..addr.len() + 2], port)
    } else {
        match raw.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
    if !host_ok {
        return Err(if raw.is_empty() {
            "expected at least one Sentinel host".to_owned()
        } else {
            bad()
        });
    }
    let port = match port {
        None => DEFAULT_SENTINEL_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(bad()),
        },
    };
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.to_owned(),
            port,
        }
    }

    fn sentinel_of(url: &str) -> SentinelTarget {
        match RedisTarget::parse(url).unwrap() {
            RedisTarget::Sentinel(sentinel) => sentinel,
            other => panic!("not a Sentinel URL: {other}"),
        }
    }

    #[test]
    fn tcp_and_unix_urls_give_their_address() {
        let cases = [
            ("redis://redis:6379/0", "redis://redis:6379/0"),
            ("redis://:pw@10.0.0.5", "redis://10.0.0.5:6379/0"),
            (
                "rediss://u:pw@redis.example.com:6380/2",
                "rediss://redis.example.com:6380/2",
            ),
            ("redis://[::1]:7000/1", "redis://[::1]:7000/1"),
            (
                "redis+unix:///run/redis.sock",
                "redis+unix:///run/redis.sock?db=0",
            ),
            (
                "unix:///run/redis.sock?db=3",
                "redis+unix:///run/redis.sock?db=3",
            ),
        ];
        for (raw, shown) in cases {
            let target = RedisTarget::parse(raw).unwrap();
            assert_eq!(target.to_string(), shown, "{raw}");
            assert_eq!(target.is_tls(), raw.starts_with("rediss"));
        }
    }

    #[test]
    fn sentinel_urls_give_hosts_master_db_and_credentials() {
        let target = sentinel_of("redis+sentinel://:pw@s1:26380,s2,[::1]:5000/mymaster/3");
        assert_eq!(
            target.sentinels,
            vec![host("s1", 26380), host("s2", 26379), host("[::1]", 5000)]
        );
        assert_eq!((target.master.as_str(), target.db), ("mymaster", 3));
        assert_eq!((target.username(), target.password()), (None, Some("pw")));
        assert_eq!(target.sentinels[2].bare_host(), "::1");
        assert_eq!(
            RedisTarget::Sentinel(target).to_string(),
            "redis+sentinel://s1:26380,s2:26379,[::1]:5000/mymaster/3"
        );
        let tls = sentinel_of("rediss+sentinel://app:p%40ss%3Aw@a/m");
        assert!(tls.tls);
        assert_eq!(
            (tls.username(), tls.password()),
            (Some("app"), Some("p@ss:w"))
        );
        assert_eq!(
            RedisTarget::Sentinel(tls).to_string(),
            "rediss+sentinel://a:26379/m/0"
        );
        let slash = RedisTarget::parse("redis+sentinel://a:1/m/").unwrap();
        assert_eq!(slash.to_string(), "redis+sentinel://a:1/m/0");
    }

    #[test]
    fn malformed_urls_are_refused_without_repeating_them() {
        for raw in [
            "http://x",
            "redis://:hunter2@host:notaport/0",
            "redis://:hunter2@host:6379/x",
            "redis+unix://",
            "redis+sentinel://:hunter2@s1,s2",
            "redis+sentinel://:hunter2@/m",
            "redis+sentinel://:hunter2@s1,,s2/m",
            "redis+sentinel://:hunter2@s1:0/m",
            "redis+sentinel://:hunter2@s1:99999/m",
            "redis+sentinel://:hunter2@s1/",
            "redis+sentinel://:hunter2@s1/m/-1",
            "redis+sentinel://:hunter2@s1/m/0/extra",
            "redis+sentinel://:hunter2@s1/m?db=1",
            "redis+sentinel://:hunter2@[::1/m",
            "redis+sentinel://:hunter2@bad host/m",
            "redis+sentinel://:%FFhunter2@s1/m",
        ] {
            let reason = RedisTarget::parse(raw).expect_err(raw);
            assert!(!reason.contains("hunter2"), "{raw}: {reason}");
        }
    }

    #[test]
    fn settings_never_show_the_url_and_name_their_server() {
        let settings =
            RedisSettings::new("redis://:hunter2@10.0.0.5:6380/1", RedisTls::default()).unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(settings.address(), "10.0.0.5:6380");
        let sentinel =
            RedisSettings::new("redis+sentinel://:hunter2@s1,s2:1/m", RedisTls::default()).unwrap();
        assert!(!format!("{sentinel:?}").contains("hunter2"));
        assert_eq!(sentinel.address(), "sentinel s1:26379,s2:1 master m");
        let err = RedisSettings::new("redis://:hunter2@h:x/0", RedisTls::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("REDIS_URL: "), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn tls_files_go_with_a_tls_url_and_in_pairs() {
        let ca = RedisTls {
            ca_file: Some("/ca.pem".into()),
            client_cert: None,
        };
        for url in [
            "redis://h:6379/0",
            "redis+sentinel://s1/m",
            "unix:///r.sock",
        ] {
            assert!(
                matches!(
                    RedisSettings::new(url, ca.clone()),
                    Err(ConnectError::TlsFilesWithoutTls)
                ),
                "{url}"
            );
        }
        assert!(RedisSettings::new("rediss://h:6380/0", ca).is_ok());
        assert!(matches!(
            RedisTls::from_files(None, Some("/c.pem".into()), None),
            Err(ConnectError::HalfClientCertificate)
        ));
        assert!(RedisTls::from_files(None, None, None).unwrap().is_empty());
    }

    #[test]
    fn tls_files_are_read_and_checked_when_used() {
        let dir = tempfile::tempdir().unwrap();
        let missing = RedisTls {
            ca_file: Some(dir.path().join("missing.pem")),
            client_cert: None,
        };
        let err = missing.certificates().err().unwrap().to_string();
        assert!(err.starts_with("REDIS_TLS_CA_FILE: cannot read"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = RedisTls {
            ca_file: Some(empty),
            client_cert: None,
        }
        .certificates()
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }

    #[test]
    fn pem_files_must_exist_and_look_like_pem() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let der = dir.path().join("ca.der");
        std::fs::write(&der, [0x30, 0x82, 0x01]).unwrap();
        assert_eq!(pem_file(pem.to_str().unwrap()).unwrap(), pem);
        assert!(pem_file(der.to_str().unwrap()).unwrap_err().contains("PEM"));
        let missing = dir.path().join("missing.pem");
        assert!(
            pem_file(missing.to_str().unwrap())
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
