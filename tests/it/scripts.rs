//! The scripts under `scripts/` as an operator first meets them: each answers `--help` with its
//! usage and refuses an argument it does not know, at once and having started nothing; and what a
//! script started is stopped on any exit, a reader that went away (SIGPIPE) included.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");
/// `--help` and a refused argument parse and exit: no build, no process, no network.
const QUICK: Duration = Duration::from_secs(10);

/// Every script: the executable files directly under scripts/, and the Python programs there
/// (`python3 scripts/x.py`). `lib/` is sourced, not run; a requirements file is data.
fn scripts() -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut found: Vec<PathBuf> = std::fs::read_dir(SCRIPTS)
        .expect("scripts/")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .filter(|path| {
            let executable = std::fs::metadata(path).unwrap().permissions().mode() & 0o111 != 0;
            let program = path.extension().is_some_and(|ext| ext == "py")
                && std::fs::read_to_string(path)
                    .unwrap()
                    .contains("__name__ == \"__main__\"");
            executable || program
        })
        .collect();
    found.sort();
    assert!(found.len() >= 10, "{found:?}");
    found
}

/// Runs `script args`, killing it (and failing) if it takes longer than [`QUICK`].
fn run_quick(script: &Path, args: &[&str]) -> (Output, Duration) {
    // Run as an operator does: `scripts/x` by its shebang; the fixtures generator as its
    // docstring says, `python3 scripts/make_signature_fixtures.py`.
    let mut command = if script.extension().is_some_and(|ext| ext == "py") {
        let mut python = Command::new("python3");
        python.arg(script);
        python
    } else {
        Command::new(script)
    };
    let began = Instant::now();
    let mut child = command
        .args(args)
        // Nothing a script reads from the environment may turn --help into a run.
        .env("BUILD", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the script runs");
    while child.try_wait().unwrap().is_none() {
        if began.elapsed() > QUICK {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{} {args:?} still running after {QUICK:?}: it did more than parse its arguments\n{}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), began.elapsed())
}

#[test]
fn every_script_answers_help_and_refuses_an_unknown_argument() {
    for script in scripts() {
        let name = script.file_name().unwrap().to_string_lossy().into_owned();
        let (help, _) = run_quick(&script, &["--help"]);
        let usage = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.status.success(),
            "{name} --help: {:?}\n{usage}{}",
            help.status,
            String::from_utf8_lossy(&help.stderr)
        );
        assert!(
            usage.contains(&name) || usage.to_lowercase().contains("usage"),
            "{name} --help printed no usage:\n{usage}"
        );

        let (refused, _) = run_quick(&script, &["--no-such-option"]);
        assert!(
            !refused.status.success(),
            "{name} --no-such-option exited 0 having done nothing"
        );
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains("--no-such-option") || said.to_lowercase().contains("usage"),
            "{name} --no-such-option said neither what it refused nor its usage: {said}"
        );
    }
    // The two that took anything before: a name no mutant has, a word no command is.
    let (typo, _) = run_quick(&Path::new(SCRIPTS).join("mutants"), &["typo"]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("no mutant named 'typo'"));
    let (typo, _) = run_quick(&Path::new(SCRIPTS).join("cluster"), &["stauts"]);
    assert_eq!(typo.status.code(), Some(1));
    let (extra, _) = run_quick(&Path::new(SCRIPTS).join("cluster"), &["status", "now"]);
    assert_eq!(extra.status.code(), Some(1));
}

/// A script in the shape of the real ones: sources scripts/lib/processes.sh, starts a process it
/// records, says its PID on stderr, then writes lines to stdout for a while.
fn chatty_script(dir: &Path) -> PathBuf {
    let path = dir.join("chatty");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(
        file,
        r#"set -euo pipefail
source "{SCRIPTS}/lib/processes.sh"
STOP_GRACE_SECS=2
work="$(mktemp -d)"
at_exit 'rm -rf "$work"'
# A child that ignores SIGTERM, like a replica still draining: it must be killed after the grace.
bash -c 'trap "" TERM; while :; do sleep 0.1; done' &
pids+=("$!")
echo "child $! work $work" >&2
for i in $(seq 600); do echo "line $i"; sleep 0.05; done
"#
    )
    .unwrap();
    path
}

/// Reads the child PID and work directory the chatty script announced on stderr.
fn announced(stderr: impl std::io::Read) -> (u32, PathBuf) {
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "child", "{line}");
    (words[1].parse().unwrap(), PathBuf::from(words[3]))
}

fn gone_within(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie its parent has not reaped yet (it no longer runs).
        if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn what_a_script_started_is_stopped_when_its_reader_goes_away_or_it_is_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let script = chatty_script(dir.path());

    // `scripts/x | head -1`: the next write after head exits raises SIGPIPE.
    let mut piped = Command::new("bash")
        .arg("-c")
        .arg(format!("bash {} | head -1", script.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (child, work) = announced(piped.stderr.take().unwrap());
    let out = piped.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "line 1\n");
    assert!(
        gone_within(child, Duration::from_secs(10)),
        "the script's child {child} outlived a closed pipe"
    );
    assert!(!work.exists(), "{work:?} left behind");

    // SIGTERM (an operator's kill, a CI timeout) and SIGINT (Ctrl-C) alike.
    for signal in ["-TERM", "-INT"] {
        let mut running = Command::new("bash")
            .arg(&script)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (child, work) = announced(running.stderr.take().unwrap());
        let killed = Command::new("kill")
            .args([signal, &running.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = running.wait().unwrap();
        assert!(!status.success(), "{signal}: {status:?}");
        assert!(
            gone_within(child, Duration::from_secs(10)),
            "{signal}: the script's child {child} outlived it"
        );
        assert!(!work.exists(), "{signal}: {work:?} left behind");
    }
}
