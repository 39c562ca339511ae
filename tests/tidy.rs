//! Tidy checks of the repository itself, in the manner of rust-analyzer's tidy tests: the code
//! map in `docs/architecture.md` names every source file, and names no file that is gone.
//!
//! The code map is the section `## Code map`. Each `###` heading in it names a folder (its
//! backticked path ending in `/`; a heading without one stands for the repository root), and
//! each line `- `PATH`: ...` under it names `FOLDER/PATH`: a file, or a folder when it ends in
//! `/`. Every `*.rs` file under `crates/*/src/` and `src/`, and every file in
//! `crates/shs-http/ui/`, must be named there.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

const MAP: &str = "docs/architecture.md";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The paths the code map names, in order (relative to the root, `/` separated).
fn named(doc: &str) -> Vec<String> {
    let mut in_map = false;
    let mut folder = String::new();
    let mut names = Vec::new();
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            in_map = heading.trim() == "Code map";
            continue;
        }
        if !in_map {
            continue;
        }
        if let Some(heading) = line.strip_prefix("### ") {
            folder = backticked(heading)
                .into_iter()
                .rfind(|p| p.ends_with('/'))
                .unwrap_or_default()
                .to_owned();
            continue;
        }
        if let Some(entry) = line.strip_prefix("- `")
            && let Some((path, _)) = entry.split_once('`')
        {
            names.push(format!("{folder}{path}"));
        }
    }
    names
}

/// The backticked spans of a line.
fn backticked(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// Every file the code map must name: `*.rs` under `crates/*/src/` and `src/`, and the
/// dashboard's files.
fn required(root: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    let crates = fs::read_dir(root.join("crates")).expect("crates/ is readable");
    for krate in crates.flatten() {
        walk(&krate.path().join("src"), &mut files);
    }
    walk(&root.join("src"), &mut files);
    let rust = files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"));
    let ui = fs::read_dir(root.join("crates/shs-http/ui"))
        .expect("crates/shs-http/ui/ is readable")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file());
    rust.chain(ui)
        .map(|p| relative(root, &p))
        .collect::<BTreeSet<_>>()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).expect("under the root");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// What is wrong with a code map: files it misses, names of files that are gone, and names
/// given twice.
#[derive(Debug, Default, PartialEq, Eq)]
struct Problems {
    missing: Vec<String>,
    stale: Vec<String>,
    twice: Vec<String>,
}

impl Problems {
    fn is_empty(&self) -> bool {
        *self == Problems::default()
    }
}

fn check(doc: &str, root: &Path) -> Problems {
    let names = named(doc);
    let mut seen = BTreeSet::new();
    let mut problems = Problems::default();
    for name in &names {
        if !seen.insert(name.as_str()) {
            problems.twice.push(name.clone());
        }
        let path = root.join(name.trim_end_matches('/'));
        let exists = if name.ends_with('/') {
            path.is_dir()
        } else {
            path.is_file()
        };
        if !exists {
            problems.stale.push(name.clone());
        }
    }
    problems.missing = required(root)
        .into_iter()
        .filter(|f| !seen.contains(f.as_str()))
        .collect();
    problems
}

fn the_map() -> String {
    fs::read_to_string(root().join(MAP)).expect("docs/architecture.md is readable")
}

#[test]
fn the_code_map_names_every_source_file_and_nothing_that_is_gone() {
    let problems = check(&the_map(), root());
    let mut report = String::new();
    if !problems.missing.is_empty() {
        report += &format!(
            "{MAP}'s code map does not name these files; add a line for each under the heading \
             of its folder (\"- `PATH`: what it owns\"):\n  {}\n",
            problems.missing.join("\n  ")
        );
    }
    if !problems.stale.is_empty() {
        report += &format!(
            "{MAP}'s code map names files that do not exist; remove or fix these lines:\n  {}\n",
            problems.stale.join("\n  ")
        );
    }
    if !problems.twice.is_empty() {
        report += &format!(
            "{MAP}'s code map names these more than once:\n  {}\n",
            problems.twice.join("\n  ")
        );
    }
    assert!(problems.is_empty(), "{report}");
}

/// The check itself: a line taken out of the real map is reported missing, a line naming a file
/// that does not exist is reported stale, and a line given twice is reported.
#[test]
fn the_check_sees_a_missing_a_stale_and_a_repeated_line() {
    let map = the_map();
    let before = check(&map, root());
    let line = "- `src/pool/keeper.rs`:";
    assert!(map.contains(line), "the map names the pool's keeper");
    let without: String = map
        .lines()
        .filter(|l| !l.starts_with(line))
        .map(|l| format!("{l}\n"))
        .collect();
    let problems = check(&without, root());
    assert_eq!(
        problems.missing,
        plus(&before.missing, "crates/shs-supervisor/src/pool/keeper.rs")
    );
    assert_eq!(
        (&problems.stale, &problems.twice),
        (&before.stale, &before.twice)
    );

    let heading = "### The binary: `src/`\n";
    assert!(map.contains(heading), "the map has the binary's heading");
    let extra = map.replacen(
        heading,
        &format!("{heading}\n- `gone.rs`: a file that is not there.\n- `main.rs`: again.\n"),
        1,
    );
    let problems = check(&extra, root());
    assert_eq!(problems.missing, before.missing);
    assert_eq!(sorted(problems.stale), plus(&before.stale, "src/gone.rs"));
    assert_eq!(sorted(problems.twice), plus(&before.twice, "src/main.rs"));
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

fn plus(names: &[String], one: &str) -> Vec<String> {
    sorted(names.iter().cloned().chain([one.to_owned()]).collect())
}

/// A map outside `## Code map` does not count, and headings set the folder of their lines.
#[test]
fn only_the_code_map_section_counts() {
    let doc = "# t\n- `src/main.rs`: before the map\n## Code map\n### `src/`\n- `main.rs`: x\n\
               ### Around (the root)\n- `Cargo.toml`: y\n- `docs/`: z\n## Next\n- `src/cli.rs`: after\n";
    assert_eq!(named(doc), ["src/main.rs", "Cargo.toml", "docs/"]);
}
