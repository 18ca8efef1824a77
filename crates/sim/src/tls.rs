//! The client side of TLS for `https://` targets: one rustls config per run (ring, the public CA
//! roots plus an operator's `--ca-file`), and what a failed handshake means for a call.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;

use super::error::SimError;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("--ca-file {0}: {1}")]
    CaFile(PathBuf, String),
    #[error("--ca-file {0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A run's TLS client config: public CA roots (a real staging endpoint), plus every certificate of
/// `ca_file` (a private CA, or a self-signed front), ring as the only provider; HTTP/1.1 only.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |why: String| TlsError::CaFile(path.to_owned(), why);
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError::NoCertificate(path.to_owned()));
        }
    }
    // The provider is named, not taken from a process default: only ring is compiled in.
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The name the certificate must carry: `--target`'s host, a DNS name or an IP address.
pub fn server_name(host: &url::Host<&str>) -> Result<ServerName<'static>, String> {
    match host {
        url::Host::Domain(name) => {
            ServerName::try_from((*name).to_owned()).map_err(|e| e.to_string())
        }
        url::Host::Ipv4(ip) => Ok(ServerName::from(IpAddr::V4(*ip))),
        url::Host::Ipv6(ip) => Ok(ServerName::from(IpAddr::V6(*ip))),
    }
}

/// A failed handshake: an untrusted certificate is its own error (the operator's to fix, with
/// `--ca-file` or a proper certificate); anything else is a TLS error of the connection.
pub fn handshake_error(host: &str, err: io::Error) -> SimError {
    let certificate = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(why) => Some(why.clone()),
            _ => None,
        });
    match certificate {
        Some(why) => {
            let hint = match why {
                rustls::CertificateError::UnknownIssuer => {
                    " (signed by a CA this run does not trust: pass --ca-file with it)"
                }
                _ => "",
            };
            SimError::Certificate {
                host: host.to_owned(),
                reason: format!("{why}{hint}"),
            }
        }
        None => SimError::Tls {
            host: host.to_owned(),
            source: err,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("prosaas-sim-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        assert!(matches!(
            client_config(Some(&empty)),
            Err(TlsError::NoCertificate(_))
        ));
        let missing = dir.join("missing.pem");
        assert!(matches!(
            client_config(Some(&missing)),
            Err(TlsError::CaFile(..))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn certificate_failures_are_told_apart() {
        let untrusted = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let err = handshake_error("staging.example.com", untrusted);
        assert_eq!(err.kind(), "tls_certificate");
        let text = err.to_string();
        assert!(text.contains("not trusted"), "{text}");
        assert!(text.contains("--ca-file"), "{text}");
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(handshake_error("h", reset).kind(), "tls_handshake");
    }
}
