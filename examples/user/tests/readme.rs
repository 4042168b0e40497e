//! The README's Rust code is the example's: every ```rust block of `README.md` is cut from
//! `src/bin/tour.rs` or `build.rs` (lines in order, at most two of the file's left out, a
//! `// ...` line standing for any number), so what the README shows compiles, lints
//! and runs as shown. And the tour runs, printing the trace tree the README shows.

use std::path::Path;
use std::process::Command;

const SOURCES: &[&str] = &["src/bin/tour.rs", "build.rs"];

/// The ```rust blocks of `markdown`, each as its lines.
fn rust_blocks(markdown: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, fence) if fence.starts_with("```rust") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => block.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// Whether `block` is cut from `source`: its lines (trimmed, blank ones aside) stand in
/// `source` in order, with at most two of the source's lines left out between them; a
/// `// ...` line stands for any number.
fn cut_from(block: &[&str], source: &str) -> bool {
    let source: Vec<&str> = source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let block: Vec<&str> = block
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let Some(first) = block.first() else {
        return true;
    };
    (0..source.len())
        .filter(|&start| source[start] == *first)
        .any(|start| {
            let (mut at, mut skipped, mut elided) = (start + 1, 0, false);
            for line in &block[1..] {
                if *line == "// ..." {
                    elided = true;
                    continue;
                }
                loop {
                    match source.get(at) {
                        None => return false,
                        Some(l) if l == line => break,
                        Some(_) if elided => at += 1,
                        Some(_) if skipped < 2 => (at, skipped) = (at + 1, skipped + 1),
                        Some(_) => return false,
                    }
                }
                at += 1;
                elided = false;
            }
            true
        })
}

#[test]
fn every_rust_block_of_the_readme_is_cut_from_the_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).expect("README.md");
    let sources: Vec<String> = SOURCES
        .iter()
        .map(|s| std::fs::read_to_string(root.join(s)).expect("an example source"))
        .collect();
    let blocks = rust_blocks(&readme);
    assert!(blocks.len() >= 8, "{} rust blocks", blocks.len());
    for block in blocks {
        assert!(
            sources.iter().any(|source| cut_from(&block, source)),
            "this README block is not in {SOURCES:?}:\n{}",
            block.join("\n")
        );
    }
}

#[test]
fn a_block_that_differs_from_the_source_is_told_apart() {
    let source = "fn main() {\n    let a = 1;\n    let b = 2;\n    println!(\"{a}{b}\");\n}\n";
    assert!(cut_from(&["fn main() {", "    let a = 1;"], source));
    assert!(cut_from(&["fn main() {", "// ...", "}"], source));
    assert!(cut_from(
        &["fn main() {", "    println!(\"{a}{b}\");"],
        source
    ));
    assert!(!cut_from(&["fn main() {", "    let a = 2;"], source));
    assert!(!cut_from(&["    let b = 2;", "    let a = 1;"], source));
}

#[test]
fn the_tour_runs_and_prints_one_trace_under_its_tracing_root() {
    let output = Command::new(env!("CARGO_BIN_EXE_tour"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("the tour runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("trace "))
        .take_while(|l| !l.is_empty())
        .map(|l| l.split(" [").next().unwrap_or(l))
        .collect();
    assert_eq!(tree.len(), 12, "one trace:\n{stdout}");
    assert_eq!(
        &tree[1..],
        [
            "  tour",
            "    user.User/CreateUser",
            "      user.User/CreateUser",
            "        Store.InsertUser",
            "    send user.created",
            "      process user.created",
            "        send welcome mail",
            "    user.User/WatchUsers",
            "      user.User/WatchUsers",
            "    user.User/GetUser",
            "      user.User/GetUser",
        ],
        "{stdout}"
    );
    assert!(stdout.contains("event: Some(\"Ada\")"), "{stdout}");
    // After the tree, the metrics table: one line per method and side.
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("method "))
        .collect();
    assert!(
        table
            .iter()
            .any(|l| l.starts_with("user.User/GetUser") && l.contains("server")),
        "{stdout}"
    );
    assert!(stdout.contains("GetUser 99: Some(NotFound)"), "{stdout}");
}
