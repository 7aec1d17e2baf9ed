//! Mechanical style rules, checked by `cargo test` so they never depend on a reviewer's eye
//! (TigerBeetle's `tidy`, rust-analyzer's `xtask tidy`). Each rule says why.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn workspace_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let mut files = Vec::new();
    for dir in ["crates", "benches", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10, "tidy found too few sources: {}", files.len());
    files
}

#[test]
fn no_leftover_debugging_or_placeholders() {
    // A placeholder macro is a stub called done; a debug print writes to stderr from the
    // engine thread.
    let banned = [
        concat!("to", "do!("),
        concat!("unimpl", "emented!("),
        concat!("db", "g!("),
        concat!("FIX", "ME"),
        concat!("XX", "X:"),
    ];
    let mut found = Vec::new();
    for file in workspace_sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            for b in banned {
                if line.contains(b) {
                    found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "banned constructs:\n{}", found.join("\n"));
}

#[test]
fn lines_fit_in_100_columns() {
    // rustfmt wraps code at 100 columns (rustfmt.toml) but not comments or strings; long
    // lines hide diffs in review.
    let mut found = Vec::new();
    for file in workspace_sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.chars().count() > 100 {
                found.push(format!("{}:{}", file.display(), i + 1));
            }
        }
    }
    assert!(found.is_empty(), "lines over 100 columns:\n{}", found.join("\n"));
}

#[test]
fn engine_never_reads_the_wall_clock() {
    // Determinism (DESIGN.md §2): time inside the engine is the sequencer's journaled clock.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let mut files = Vec::new();
    for c in ["types", "book", "risk", "ledger", "engine"] {
        rust_files(&root.join("crates").join(c).join("src"), &mut files);
    }
    let banned = [
        "Instant::now",
        "SystemTime",
        "thread_rng",
        "collections::HashMap",
        "HashMap, ",
        "RandomState",
    ];
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            for b in banned {
                if line.contains(b) {
                    found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "clock, randomness or std HashMap in the engine:\n{}",
        found.join("\n")
    );
}
