//! `REDIS_URL` and `REDIS_TLS_*`: where the state store is, as typed pieces without credentials.
//! The URL itself stays a `Secret`; `RedisTarget` is what logs and error messages may show.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use url::Url;

use super::Secret;

pub const DEFAULT_REDIS_PORT: u16 = 6379;
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// The state store of a cluster replica (`REDIS_URL` set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The URL as given, credentials included: only the connection may read it.
    pub url: Secret<String>,
    /// Where it points, without credentials: for logs, errors and the connection's shape.
    pub target: RedisTarget,
    pub tls: RedisTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://` (`tls` false) or `rediss://`.
    Tcp { tls: bool, addr: HostPort, db: i64 },
    /// `redis+unix://` or `unix://`.
    Unix { path: PathBuf, db: i64 },
    /// `redis+sentinel://` (`tls` false) or `rediss+sentinel://`.
    Sentinel(SentinelTarget),
}

/// `redis+sentinel://[user:pass@]host[:port][,host[:port]…]/master_name[/db]`, as Python's
/// clients spell it. The credentials are left in the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    pub tls: bool,
    /// At least one; each port defaults to 26379.
    pub sentinels: Vec<HostPort>,
    pub master: String,
    pub db: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// A name or an address; an IPv6 address keeps its brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// `REDIS_TLS_CA_FILE`, `REDIS_TLS_CERT_FILE`, `REDIS_TLS_KEY_FILE`: PEM files, checked readable.
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

impl RedisTarget {
    /// Whether the connection to Redis is TLS (`rediss://`, `rediss+sentinel://`).
    pub fn is_tls(&self) -> bool {
        match self {
            Self::Tcp { tls, .. } | Self::Sentinel(SentinelTarget { tls, .. }) => *tls,
            Self::Unix { .. } => false,
        }
    }

    /// Parses the shape of a `REDIS_URL`; the reason on error never repeats the URL.
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
    calls_core::store::RedisStore::check_url(raw)
}

/// `[user:pass@]host[:port][,host[:port]…]/master_name[/db]`, after the scheme.
fn sentinel(rest: &str, tls: bool) -> Result<SentinelTarget, String> {
    if rest.contains(['?', '#']) {
        return Err("a Sentinel URL takes no query string or fragment".to_owned());
    }
    // Credentials end at the last `@`: a password may hold characters a URL would encode.
    let after_userinfo = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
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
        master: master.to_owned(),
        db,
    })
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

/// A PEM file that exists and can be read now (a missing mount fails at start-up, not on the
/// first call). Its contents are never shown: a key file holds a secret.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn host(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.to_owned(),
            port,
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
    fn sentinel_urls_give_hosts_master_and_db() {
        let target =
            RedisTarget::parse("redis+sentinel://:pw@s1:26380,s2,[::1]:5000/mymaster/3").unwrap();
        assert_eq!(
            target,
            RedisTarget::Sentinel(SentinelTarget {
                tls: false,
                sentinels: vec![host("s1", 26380), host("s2", 26379), host("[::1]", 5000)],
                master: "mymaster".to_owned(),
                db: 3,
            })
        );
        assert_eq!(
            target.to_string(),
            "redis+sentinel://s1:26380,s2:26379,[::1]:5000/mymaster/3"
        );
        let tls = RedisTarget::parse("rediss+sentinel://u:p@a/m").unwrap();
        assert!(tls.is_tls());
        assert_eq!(tls.to_string(), "rediss+sentinel://a:26379/m/0");
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
        ] {
            let reason = RedisTarget::parse(raw).expect_err(raw);
            assert!(!reason.contains("hunter2"), "{raw}: {reason}");
        }
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
