//! A private certificate authority made per test, and a `redis-server` that speaks only TLS with a
//! certificate from it (optionally requiring client certificates), killed by PID when dropped.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::free_port;

/// A PEM certificate and its private key, on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority that exists only for one test; its certificate is `ca_file`.
pub struct TestCa {
    name: String,
    issuer: Issuer<'static, KeyPair>,
    dir: tempfile::TempDir,
    ca_file: PathBuf,
}

impl TestCa {
    /// A new CA named `name` (its files are named after it too).
    pub fn new(name: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("prosaas-calls-ca-")
            .tempdir()?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(other)?;
        let cert = params.self_signed(&key).map_err(other)?;
        let ca_file = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem())?;
        Ok(Self {
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
            dir,
            ca_file,
        })
    }

    /// The CA's certificate (PEM): what `REDIS_TLS_CA_FILE` names.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A server certificate for `localhost` and 127.0.0.1, signed by this CA.
    pub fn server_cert(&self, stem: &str) -> io::Result<CertFiles> {
        self.issue(
            stem,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate signed by this CA (for `tls-auth-clients yes`).
    pub fn client_cert(&self, stem: &str) -> io::Result<CertFiles> {
        self.issue(stem, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        stem: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> io::Result<CertFiles> {
        let mut params = CertificateParams::new(names).map_err(other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{} {stem}", self.name));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(other)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(other)?;
        let files = CertFiles {
            cert: self.dir.path().join(format!("{}-{stem}.pem", self.name)),
            key: self.dir.path().join(format!("{}-{stem}.key", self.name)),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }
}

fn other(err: rcgen::Error) -> io::Error {
    io::Error::other(format!("rcgen: {err}"))
}

/// A `redis-server` on a loopback port that speaks only TLS (`--port 0`), keeping nothing on disk.
pub struct TlsRedisServer {
    dir: tempfile::TempDir,
    port: u16,
    ca_file: PathBuf,
    /// A client certificate of the server's own CA, so `cli` works when clients must present one.
    cli_cert: CertFiles,
    child: Option<Child>,
}

impl TlsRedisServer {
    /// Starts a server whose certificate `ca` signed; with `require_client_cert`, it also refuses
    /// clients without a certificate from `ca` (`--tls-auth-clients yes`).
    pub fn start(ca: &TestCa, require_client_cert: bool) -> io::Result<Self> {
        let server_cert = ca.server_cert("redis-server")?;
        let cli_cert = ca.client_cert("redis-cli")?;
        let dir = tempfile::Builder::new()
            .prefix("prosaas-calls-redis-tls-")
            .tempdir()?;
        let port = free_port()?;
        let child = Command::new("redis-server")
            .arg("--port")
            .arg("0")
            .arg("--tls-port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--tls-cert-file")
            .arg(&server_cert.cert)
            .arg("--tls-key-file")
            .arg(&server_cert.key)
            .arg("--tls-ca-cert-file")
            .arg(ca.ca_file())
            .arg("--tls-auth-clients")
            .arg(if require_client_cert { "yes" } else { "no" })
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start redis-server (is it installed?): {e}"),
                )
            })?;
        let mut server = Self {
            dir,
            port,
            ca_file: ca.ca_file().to_owned(),
            cli_cert,
            child: Some(child),
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// `rediss://127.0.0.1:PORT/0` (the certificate names 127.0.0.1, so the host is verified).
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `redis-cli` over TLS against this server and returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new("redis-cli")
            .arg("--tls")
            .arg("--cacert")
            .arg(&self.ca_file)
            .arg("--cert")
            .arg(&self.cli_cert.cert)
            .arg("--key")
            .arg(&self.cli_cert.key)
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .stderr(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Kills the server by PID and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "redis-server (TLS) exited with {status}: {}",
                    self.log()
                )));
            }
            if self.cli(&["PING"]).is_ok_and(|out| out == "PONG") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "redis-server (TLS) did not answer PING within 10 s: {}",
                self.log()
            ),
        ))
    }
}

impl Drop for TlsRedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
