//! A real nginx rendered from deploy/nginx's template in front of loopback replicas, the way
//! scripts/cluster runs it (or on a host of its own, in front of replicas on theirs):
//! single-process (one PID to kill), or with a master process where a test changes the upstreams
//! under live connections; everything in a temporary directory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How the upstream block picks a replica for each new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancing {
    /// As shipped: `least_conn` (the replica with the fewest open connections).
    LeastConn,
    /// nginx's default, round-robin: the template's `least_conn;` line left out.
    RoundRobin,
}

/// The nginx binary: `$NGINX`, else `nginx` on the PATH, else Debian's `/usr/sbin/nginx`.
pub fn find_nginx() -> Option<std::path::PathBuf> {
    let from_env = std::env::var_os("NGINX").map(std::path::PathBuf::from);
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nginx"))
            .find(|p| p.is_file())
    });
    [from_env, on_path, Some("/usr/sbin/nginx".into())]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
}

pub const NGINX_TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/nginx/templates/default.conf.template"
);

/// A certificate (chain, PEM) and its private key for the TLS listener, as files nginx reads.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Renders the template as scripts/cluster does: static loopback servers, no re-resolution, no TLS.
/// Panics if the template grew a placeholder this rendering does not know.
pub fn render_nginx_template(
    public_port: u16,
    internal_port: u16,
    upstream_ports: &[u16],
) -> String {
    render_nginx_template_tls(public_port, internal_port, upstream_ports, None)
}

/// As [`render_nginx_template`], and with `tls` (its port and files) the TLS listener too; without
/// it the template's TLS lines are commented out, as compose's base file and scripts/cluster do.
pub fn render_nginx_template_tls(
    public_port: u16,
    internal_port: u16,
    upstream_ports: &[u16],
    tls: Option<(u16, &TlsFiles)>,
) -> String {
    let upstreams: Vec<SocketAddr> = upstream_ports
        .iter()
        .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *port))
        .collect();
    render(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        (public_port, internal_port),
        &upstreams,
        tls,
        Balancing::LeastConn,
    )
}

/// The template rendered to listen on `listen` (`ports`: public, internal) in front of
/// `upstreams`, with `balancing`. Panics if the template grew a placeholder this rendering does
/// not know, or lost the `least_conn;` line round-robin removes.
fn render(
    listen: IpAddr,
    (public_port, internal_port): (u16, u16),
    upstreams: &[SocketAddr],
    tls: Option<(u16, &TlsFiles)>,
    balancing: Balancing,
) -> String {
    let mut template = std::fs::read_to_string(NGINX_TEMPLATE).expect("the nginx template");
    if balancing == Balancing::RoundRobin {
        let line = "    least_conn;\n";
        assert!(
            template.contains(line),
            "the template has no `least_conn;` line"
        );
        template = template.replace(line, "");
    }
    let servers: String = upstreams
        .iter()
        .map(|addr| format!("server {addr}; "))
        .collect();
    // With TLS off the TLS lines are comments, so what they name does not matter.
    let (if_tls, tls_listen, certificate, key) = match tls {
        Some((port, files)) => (
            "",
            format!("{listen}:{port}"),
            files.certificate.display().to_string(),
            files.key.display().to_string(),
        ),
        None => (
            "#",
            "127.0.0.1:443".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
        ),
    };
    let rendered = template
        .replace("${NGINX_LISTEN}", &format!("{listen}:{public_port}"))
        .replace(
            "${NGINX_INTERNAL_LISTEN}",
            &format!("{listen}:{internal_port}"),
        )
        .replace("${NGINX_RESOLVER}", "127.0.0.1")
        .replace("${CALLS_UPSTREAM_SERVERS}", &servers)
        .replace("${NGINX_IF_TLS}", if_tls)
        .replace("${NGINX_TLS_LISTEN}", &tls_listen)
        .replace("${NGINX_TLS_CERTIFICATE}", &certificate)
        .replace("${NGINX_TLS_CERTIFICATE_KEY}", &key);
    assert!(
        !rendered.contains("${"),
        "unknown placeholder left in the rendered nginx template"
    );
    rendered
}

/// A real nginx in front of loopback replicas, single-process (one PID to kill), everything it
/// writes in a temporary directory. Dropping it kills the process by PID.
pub struct NginxProcess {
    child: Option<std::process::Child>,
    /// Where both listeners are: loopback, or its host's address.
    pub ip: IpAddr,
    pub port: u16,
    pub internal_port: u16,
    /// The TLS listener's port, when started with [`NginxProcess::start_tls`].
    pub tls_port: Option<u16>,
    /// Started with a master process ([`NginxProcess::start_reloadable`]).
    master: bool,
    dir: tempfile::TempDir,
}

impl NginxProcess {
    pub fn start(binary: &std::path::Path, upstream_ports: &[u16]) -> std::io::Result<Self> {
        Self::launch(binary, upstream_ports, None, false)
    }

    /// As [`NginxProcess::start`], with a master process and one worker, so the upstream servers
    /// can change under live connections ([`NginxProcess::set_upstreams`]) the way a balancer
    /// follows a Service's endpoints: a reload starts a new worker with the new servers while the
    /// old one finishes the connections it holds.
    pub fn start_reloadable(
        binary: &std::path::Path,
        upstream_ports: &[u16],
    ) -> std::io::Result<Self> {
        Self::launch(binary, upstream_ports, None, true)
    }

    /// nginx on `host` (public side on port 80, internal on 81) in front of `upstreams` (replicas
    /// on their hosts), balancing as `balancing` says.
    pub fn start_on(
        host: &crate::netns::Host,
        binary: &std::path::Path,
        upstreams: &[SocketAddr],
        balancing: Balancing,
    ) -> std::io::Result<Self> {
        let config = render(IpAddr::V4(host.ip), (80, 81), upstreams, None, balancing);
        let mut command = host.command(binary);
        Self::run(
            &mut command,
            config,
            IpAddr::V4(host.ip),
            (80, 81, None),
            false,
        )
    }

    /// As [`NginxProcess::start`], plus the TLS listener on its own free port with `tls`'s files.
    pub fn start_tls(
        binary: &std::path::Path,
        upstream_ports: &[u16],
        tls: &TlsFiles,
    ) -> std::io::Result<Self> {
        Self::launch(binary, upstream_ports, Some(tls), false)
    }

    fn launch(
        binary: &std::path::Path,
        upstream_ports: &[u16],
        tls: Option<&TlsFiles>,
        master: bool,
    ) -> std::io::Result<Self> {
        use crate::free_port;
        let port = free_port()?;
        let internal_port = free_port()?;
        let tls_port = tls.map(|_| free_port()).transpose()?;
        let config =
            render_nginx_template_tls(port, internal_port, upstream_ports, tls_port.zip(tls));
        Self::run(
            &mut std::process::Command::new(binary),
            config,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            (port, internal_port, tls_port),
            master,
        )
    }

    /// Runs `command` (nginx, or nginx inside a host) with `config` as the http context's
    /// include (with a master process if `master`), and waits until it answers on `ip`'s public
    /// port.
    fn run(
        command: &mut std::process::Command,
        config: String,
        ip: IpAddr,
        (port, internal_port, tls_port): (u16, u16, Option<u16>),
        master: bool,
    ) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("prosaas-calls-nginx-")
            .tempdir()?;
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        std::fs::write(dir.path().join("calls.conf"), config)?;
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process {};\nworker_processes 1;\nworker_rlimit_nofile 8192;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log notice;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log {d}/access.log;\n\
                 client_body_temp_path {d}/tmp/client_body;\n  proxy_temp_path {d}/tmp/proxy;\n\
                 fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
                 scgi_temp_path {d}/tmp/scgi;\n  include {d}/calls.conf;\n}}\n",
                if master { "on" } else { "off" }
            ),
        )?;
        let child = command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            // nginx reads NGINX itself (sockets inherited on a binary upgrade), not as a path.
            .env_remove("NGINX")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let mut nginx = Self {
            child: Some(child),
            ip,
            port,
            internal_port,
            tls_port,
            master,
            dir,
        };
        nginx.wait_ready(Duration::from_secs(10))?;
        Ok(nginx)
    }

    /// `http://IP:PORT{path}` on the public side.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", SocketAddr::new(self.ip, self.port))
    }

    /// `https://127.0.0.1:PORT{path}` on the TLS listener. Panics without one.
    pub fn https_url(&self, path: &str) -> String {
        let port = self.tls_port.expect("nginx was started without TLS");
        format!("https://127.0.0.1:{port}{path}")
    }

    pub fn internal_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            SocketAddr::new(self.ip, self.internal_port)
        )
    }

    /// Points the upstream at `upstream_ports` and reloads, as a balancer does when a Service's
    /// endpoints change; returns once the new worker serves and the old one has stopped accepting
    /// (it keeps the connections it holds, so live streams are not cut). Only after
    /// [`NginxProcess::start_reloadable`].
    pub fn set_upstreams(&self, upstream_ports: &[u16]) -> std::io::Result<Duration> {
        assert!(self.master, "set_upstreams needs start_reloadable");
        let started = std::time::Instant::now();
        let count = |log: &str, what: &str| log.matches(what).count();
        let before = self.error_log();
        let (workers, retired) = (
            count(&before, "start worker process "),
            count(&before, "gracefully shutting down"),
        );
        std::fs::write(
            self.dir.path().join("calls.conf"),
            render_nginx_template(self.port, self.internal_port, upstream_ports),
        )?;
        let pid = self
            .child
            .as_ref()
            .map(std::process::Child::id)
            .unwrap_or(0);
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("kill -HUP {pid} failed")));
        }
        while started.elapsed() < Duration::from_secs(10) {
            let log = self.error_log();
            if count(&log, "start worker process ") > workers
                && count(&log, "gracefully shutting down") > retired
            {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(std::io::Error::other(format!(
            "nginx did not reload within 10 s: {}",
            self.error_log()
        )))
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(std::io::Error::other(format!(
                    "nginx exited with {status}: {}",
                    self.error_log()
                )));
            }
            if crate::healthz_ok_at(SocketAddr::new(self.ip, self.port)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("nginx not ready in time: {}", self.error_log()),
        ))
    }
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A master's workers outlive a SIGKILL of the master: ask it to stop them (TERM is
            // nginx's fast shutdown), and kill it only if it does not exit.
            if self.master {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while std::time::Instant::now() < deadline {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
