//! A real Prometheus server scraping loopback targets, for tests that evaluate the queries a
//! deployment ships (the autoscaler's) against real replicas' metrics; killed by PID when dropped.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Prometheus server binary: `$PROMETHEUS`, else `prometheus` on the PATH (Debian's
/// `prometheus` package, the same that brings promtool).
pub fn find_prometheus() -> Option<PathBuf> {
    let from_env = std::env::var_os("PROMETHEUS").map(PathBuf::from);
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    });
    [from_env, on_path]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
}

/// One scrape job: its name (the `job` label), extra labels on every target, and the targets.
pub struct ScrapeJob {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub targets: Vec<String>,
}

pub struct PrometheusServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts `binary` on a free loopback port, scraping `jobs` every `interval`, its data in a
    /// temporary directory; returns once it answers `/-/ready`.
    pub fn start(binary: &Path, jobs: &[ScrapeJob], interval: Duration) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("prosaas-calls-prometheus-")
            .tempdir()?;
        let port = crate::free_port()?;
        // Prometheus durations are whole units: milliseconds.
        let ms = interval.as_millis().max(1);
        let mut config = format!("global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {ms}ms\n");
        config.push_str("scrape_configs:\n");
        for job in jobs {
            config.push_str(&format!(
                "  - job_name: {:?}\n    static_configs:\n",
                job.name
            ));
            let targets: Vec<String> = job.targets.iter().map(|t| format!("{t:?}")).collect();
            config.push_str(&format!("      - targets: [{}]\n", targets.join(", ")));
            if !job.labels.is_empty() {
                config.push_str("        labels:\n");
                for (key, value) in &job.labels {
                    config.push_str(&format!("          {key}: {value:?}\n"));
                }
            }
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut server = Self {
            child: Some(child),
            port,
            dir,
        };
        server.wait_ready(Duration::from_secs(20))?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, the API's base.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        use std::io::{Read, Write};
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(io::Error::other(format!(
                    "prometheus exited with {status}: {}",
                    self.log()
                )));
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = stream.write_all(
                    b"GET /-/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                );
                let mut response = String::new();
                let _ = stream.read_to_string(&mut response);
                if response.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("prometheus not ready in time: {}", self.log()),
        ))
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
