//! The docs against the tree: every file or folder the README and docs/ name (a path in backticks:
//! `src/…`, `crates/…`, `tests/…`, `scripts/…`, `deploy/…`, `docs/…`, `examples/…`) exists, so a
//! move in the code cannot leave a reader looking for a file that is gone.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ROOTS: [&str; 7] = [
    "src/",
    "crates/",
    "tests/",
    "scripts/",
    "deploy/",
    "docs/",
    "examples/",
];

/// The repository paths one Markdown text names in backticks: no spaces (a command is not a
/// path), no glob or placeholder, an anchor or a `:line` dropped.
fn cited_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|code| code.trim_start_matches("./"))
        .filter(|code| ROOTS.iter().any(|root| code.starts_with(root)))
        .filter(|code| !code.contains([' ', '*', '{', '<', '$']))
        .map(|code| code.split(['#', ':']).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn every_path_the_docs_cite_exists() {
    let mut docs = vec![Path::new(ROOT).join("README.md")];
    let mut in_docs: Vec<_> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    in_docs.sort();
    docs.extend(in_docs);
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for path in cited_paths(&text) {
            checked += 1;
            if !Path::new(ROOT).join(&path).exists() {
                missing.push(format!(
                    "{}: {path}",
                    doc.strip_prefix(ROOT).unwrap().display()
                ));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} paths found: is the parser right?"
    );
    assert!(
        missing.is_empty(),
        "the docs cite paths that do not exist: {missing:#?}"
    );
}

#[test]
fn cited_paths_are_read_as_a_reader_would() {
    let text = "see `src/http/mod.rs`, `tests/it/docs.rs#L3`, `crates/x.rs:12`, \
                `scripts/cluster up 3`, `crates/calls-core/src/lua/*.lua`, `calls:state:{sid}`";
    assert_eq!(
        cited_paths(text),
        ["src/http/mod.rs", "tests/it/docs.rs", "crates/x.rs"]
    );
}
