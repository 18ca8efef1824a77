//! Records the commit the binary was built from, for `prosaas_calls_build_info{version,commit}`:
//! `PROSAAS_CALLS_COMMIT` when the build sets it (the Docker build has no .git), else git.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PROSAAS_CALLS_COMMIT");
    let commit = std::env::var("PROSAAS_CALLS_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves, so a dev build never reports a stale commit.
    for path in ["HEAD", "refs/heads"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    println!("cargo:rustc-env=PROSAAS_CALLS_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    git(&["rev-parse", "--short=12", "HEAD"])
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}
