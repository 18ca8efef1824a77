//! The Twilio REST double (`prosaas-calls-sim twilio-api`) as a real process: built on demand,
//! started on a free loopback port, driven and read over plain HTTP, killed by PID.
//!
//! Records come back as the double's JSON text; a test parses them (e.g. into
//! `prosaas_calls_sim::rest_double::Recorded`), so this crate stays std-only.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The account the double serves unless given `--account-sid`.
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";

/// The `prosaas-calls-sim` binary of this build, beside the running test's: Cargo hands a test
/// only its own package's binaries, so the simulator's is built here once per test process (a
/// no-op when it is fresh), with the profile and target directory of the running test binary.
pub fn sim_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // target/<profile>/deps/<test binary>
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the profile directory");
        let target_dir = profile_dir.parent().expect("the target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "-p", "prosaas-calls-sim"])
            .args(["--bin", "prosaas-calls-sim", "--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // What cargo set for running this test, not for a build: a build script that reads one
        // (ring's reads CARGO_MANIFEST_DIR) would see it change, and the next `cargo test` would
        // rebuild half the tree.
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            let set_for_the_test = name == "OUT_DIR"
                || [
                    "CARGO_MANIFEST_",
                    "CARGO_PKG_",
                    "CARGO_BIN_EXE_",
                    "CARGO_CRATE_",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .iter()
                .any(|prefix| name.starts_with(prefix));
            if set_for_the_test {
                build.env_remove(&key);
            }
        }
        let status = build
            .status()
            .expect("running cargo build for prosaas-calls-sim");
        assert!(status.success(), "cargo build of prosaas-calls-sim failed");
        profile_dir.join("prosaas-calls-sim")
    })
}

/// A running double. Dropping it kills the process by PID.
pub struct TwilioApiDouble {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl TwilioApiDouble {
    /// Starts `prosaas-calls-sim twilio-api` (`binary`, e.g. [`sim_binary`]) on a free loopback
    /// port with `args` (behaviours, credentials, outcomes, timings: `prosaas-calls-sim
    /// twilio-api --help`), recording to a JSONL file of its own, and waits until it answers.
    pub fn spawn(binary: &Path, args: &[&str]) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("prosaas-calls-twilio-api-")
            .tempdir()?;
        let port = crate::free_port()?;
        let child = Command::new(binary)
            .arg("twilio-api")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--record")
            .arg(dir.path().join("requests.jsonl"))
            .args(args)
            .env_remove("TWILIO_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("double.log"))?)
            .spawn()?;
        let mut double = Self {
            child: Some(child),
            port,
            dir,
        };
        double.wait_ready(Duration::from_secs(10))?;
        Ok(double)
    }

    /// `http://127.0.0.1:PORT`: the server's `TWILIO_API_BASE`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every request so far, one JSON object a line, in arrival order.
    pub fn record_file(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }

    /// What the double wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("double.log")).unwrap_or_default()
    }

    /// Sets what an endpoint (`messages`, `calls`, `call-update`) does from now on: `ok`,
    /// `delay:SECS` (acted on now, answered late), `hang` (never answered nor acted on),
    /// `fail:STATUS[:CODE[:MESSAGE]]`, `rate-limit:first=N`, `rate-limit:per-second=N`,
    /// optionally prefixed `N*` (the next N requests only).
    pub fn set_behaviour(&self, endpoint: &str, spec: &str) -> io::Result<()> {
        self.put(&format!("/_double/behaviour/{endpoint}"), spec)
    }

    /// Calls to `number` end with `outcome` (`answered`, `no-answer`, `busy`, `failed`).
    pub fn set_outcome(&self, number: &str, outcome: &str) -> io::Result<()> {
        self.put("/_double/outcome", &format!("{number}={outcome}"))
    }

    /// Other calls end by this mix (`answered=70,no-answer=30`), counted afresh.
    pub fn set_mix(&self, mix: &str) -> io::Result<()> {
        self.put("/_double/mix", mix)
    }

    /// The recorded requests as a JSON array; only to `endpoint` when given (`messages`,
    /// `calls`, `call-update`, or `none` for paths the double does not serve).
    pub fn requests_json(&self, endpoint: Option<&str>) -> io::Result<String> {
        let path = match endpoint {
            Some(endpoint) => format!("/_double/requests?endpoint={endpoint}"),
            None => "/_double/requests".to_owned(),
        };
        self.get(&path)
    }

    /// Forgets the requests recorded so far (their sequence numbers go on).
    pub fn clear_requests(&self) -> io::Result<()> {
        let (status, body) = http(self.port, "DELETE", "/_double/requests", "")?;
        expect(status, 204, &body)
    }

    /// Every call placed, with its outcome, status, callbacks (and the server's answers to
    /// them) and how its media went, as a JSON array.
    pub fn calls_json(&self) -> io::Result<String> {
        self.get("/_double/calls")
    }

    /// Requests by endpoint and answer, calls by status, numbers dialled more than once, and the
    /// media of answered calls, as a JSON object.
    pub fn summary_json(&self) -> io::Result<String> {
        self.get("/_double/summary")
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn get(&self, path: &str) -> io::Result<String> {
        let (status, body) = http(self.port, "GET", path, "")?;
        expect(status, 200, &body)?;
        Ok(body)
    }

    fn put(&self, path: &str, body: &str) -> io::Result<()> {
        let (status, answer) = http(self.port, "PUT", path, body)?;
        expect(status, 204, &answer)
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let log = self.dir.path().join("double.log");
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let what = "the Twilio REST double";
        crate::wait_healthz(
            &mut self.child,
            crate::loopback(self.port),
            timeout,
            what,
            read_log,
        )
    }
}

impl Drop for TwilioApiDouble {
    fn drop(&mut self) {
        self.kill();
    }
}

fn expect(status: u16, wanted: u16, body: &str) -> io::Result<()> {
    if status == wanted {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the Twilio REST double answered {status}: {}",
            body.trim()
        )))
    }
}

/// One plain HTTP/1.1 request to a loopback port (`Connection: close`, 10 s bound): the status
/// and the body (the double always sends a Content-Length, never chunks).
pub fn http(port: u16, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("no end of headers in the answer"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line: {head}")))?;
    Ok((status, body.to_owned()))
}
