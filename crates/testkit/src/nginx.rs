//! A real nginx rendered from deploy/nginx's template in front of loopback replicas, the way
//! scripts/cluster runs it: single-process (one PID to kill), everything in a temporary directory.

use std::time::Duration;

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

/// Renders the template as scripts/cluster does: static loopback servers, no re-resolution.
/// Panics if the template grew a placeholder this rendering does not know.
pub fn render_nginx_template(
    public_port: u16,
    internal_port: u16,
    upstream_ports: &[u16],
) -> String {
    let template = std::fs::read_to_string(NGINX_TEMPLATE).expect("the nginx template");
    let servers: String = upstream_ports
        .iter()
        .map(|port| format!("server 127.0.0.1:{port}; "))
        .collect();
    let rendered = template
        .replace("${NGINX_LISTEN}", &format!("127.0.0.1:{public_port}"))
        .replace(
            "${NGINX_INTERNAL_LISTEN}",
            &format!("127.0.0.1:{internal_port}"),
        )
        .replace("${NGINX_RESOLVER}", "127.0.0.1")
        .replace("${CALLS_UPSTREAM_SERVERS}", &servers);
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
    pub port: u16,
    pub internal_port: u16,
    dir: tempfile::TempDir,
}

impl NginxProcess {
    pub fn start(binary: &std::path::Path, upstream_ports: &[u16]) -> std::io::Result<Self> {
        use crate::free_port;
        let dir = tempfile::Builder::new()
            .prefix("prosaas-calls-nginx-")
            .tempdir()?;
        let port = free_port()?;
        let internal_port = free_port()?;
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        std::fs::write(
            dir.path().join("calls.conf"),
            render_nginx_template(port, internal_port, upstream_ports),
        )?;
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process off;\nworker_rlimit_nofile 8192;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log notice;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log {d}/access.log;\n\
                 client_body_temp_path {d}/tmp/client_body;\n  proxy_temp_path {d}/tmp/proxy;\n\
                 fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
                 scgi_temp_path {d}/tmp/scgi;\n  include {d}/calls.conf;\n}}\n"
            ),
        )?;
        let child = std::process::Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let mut nginx = Self {
            child: Some(child),
            port,
            internal_port,
            dir,
        };
        nginx.wait_ready(Duration::from_secs(10))?;
        Ok(nginx)
    }

    /// `http://127.0.0.1:PORT{path}` on the public side.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn internal_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.internal_port)
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
            if crate::healthz_ok(self.port) {
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
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
