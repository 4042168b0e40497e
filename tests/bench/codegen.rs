//! The codegen benchmark: time and peak memory to generate code for a large synthetic corpus
//! (500 services, 5 000 messages) and a real one (googleapis common protos from PyPI), with
//! our protoc plugin, our build.rs path (protox, no protoc), and protoc-gen-prost +
//! protoc-gen-tonic from crates.io, side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use micro_otel_tests::corpus::{Corpus, googleapis};
use serde_json::json;

use crate::usage;

/// One measured generation.
#[derive(Debug, Clone)]
struct Measurement {
    corpus: String,
    tool: &'static str,
    /// Best wall time over the runs.
    wall: Duration,
    /// Largest resident set of any process involved.
    peak_rss: u64,
    /// Bytes of Rust written.
    output_bytes: u64,
}

/// The results, printable and serialisable.
pub struct Report {
    measurements: Vec<Measurement>,
    notes: Vec<String>,
}

/// Runs every tool on every corpus.
pub fn run(quick: bool, out_dir: &Path) -> anyhow::Result<Report> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "protoc-gen-micro-otel",
            "--bin",
            "protoc-gen-micro-otel",
        ])
        .current_dir(&workspace)
        .status()?;
    anyhow::ensure!(status.success(), "building protoc-gen-micro-otel failed");
    // Built into the same target folder as this binary (CARGO_TARGET_DIR is honoured).
    let ours = std::env::current_exe()?
        .parent()
        .ok_or_else(|| anyhow::anyhow!("bench binary has no folder"))?
        .join("protoc-gen-micro-otel");
    let mut notes = Vec::new();
    let tools_dir = out_dir.join("tools/bin");
    let prost = tools_dir.join("protoc-gen-prost");
    let tonic = tools_dir.join("protoc-gen-tonic");
    let have_prost_tonic = prost.exists() && tonic.exists();
    if !have_prost_tonic {
        notes.push(format!(
            "protoc-gen-prost/protoc-gen-tonic not installed: `cargo install protoc-gen-prost protoc-gen-tonic --root {}`",
            out_dir.join("tools").display()
        ));
    }

    let (services, messages) = if quick { (20, 200) } else { (500, 5000) };
    let mut corpora = vec![synthetic(
        &out_dir.join("corpus/synthetic"),
        services,
        messages,
    )?];
    match googleapis(&out_dir.join("corpus/googleapis")) {
        Ok(corpus) => corpora.push(corpus),
        Err(e) => notes.push(format!("real corpus skipped: {e}")),
    }

    let runs = if quick { 1 } else { 3 };
    let mut measurements = Vec::new();
    for corpus in &corpora {
        let plugin = format!("--plugin=protoc-gen-micro-otel={}", ours.display());
        measurements.push(best_of(
            runs,
            corpus,
            "micro-otel (protoc plugin)",
            |out| {
                let mut args = vec![
                    plugin.clone(),
                    format!("--micro-otel_out={}", out.display()),
                ];
                args.push(format!("-I{}", corpus.root.display()));
                args.extend(corpus.files.iter().cloned());
                protoc(args)
            },
        )?);
        measurements.push(best_of(
            runs,
            corpus,
            "micro-otel (build.rs, protox)",
            |out| {
                let mut args = vec![
                    "measure".to_owned(),
                    "protox".to_owned(),
                    out.display().to_string(),
                ];
                args.push(corpus.root.display().to_string());
                args.extend(corpus.files.iter().cloned());
                Ok(Command::new(std::env::current_exe()?).args(args).output()?)
            },
        )?);
        if have_prost_tonic {
            measurements.push(best_of(
                runs,
                corpus,
                "protoc-gen-prost + protoc-gen-tonic",
                |out| {
                    let mut args = vec![
                        format!("--plugin=protoc-gen-prost={}", prost.display()),
                        format!("--plugin=protoc-gen-tonic={}", tonic.display()),
                        format!("--prost_out={}", out.display()),
                        format!("--tonic_out={}", out.display()),
                    ];
                    args.push(format!("-I{}", corpus.root.display()));
                    args.extend(corpus.files.iter().cloned());
                    protoc(args)
                },
            )?);
        }
    }
    Ok(Report {
        measurements,
        notes,
    })
}

/// `protoc ARGS` run under a `bench measure` child, which reports wall time and peak RSS.
fn protoc(args: Vec<String>) -> anyhow::Result<std::process::Output> {
    let mut all = vec!["measure".to_owned(), "run".to_owned(), "protoc".to_owned()];
    all.extend(args);
    Ok(Command::new(std::env::current_exe()?).args(all).output()?)
}

/// Runs `generate` into a fresh folder `runs` times and keeps the fastest.
fn best_of(
    runs: usize,
    corpus: &Corpus,
    tool: &'static str,
    generate: impl Fn(&Path) -> anyhow::Result<std::process::Output>,
) -> anyhow::Result<Measurement> {
    let mut best: Option<Measurement> = None;
    for _ in 0..runs {
        let out = tempdir()?;
        let output = generate(&out)?;
        anyhow::ensure!(
            output.status.success(),
            "{tool} on {}: {}",
            corpus.name,
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let (wall, peak_rss) = parse_measure(line)?;
        let output_bytes = dir_size(&out);
        std::fs::remove_dir_all(&out)?;
        let m = Measurement {
            corpus: corpus.name.clone(),
            tool,
            wall,
            peak_rss,
            output_bytes,
        };
        if best.as_ref().is_none_or(|b| m.wall < b.wall) {
            best = Some(m);
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no runs"))
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "micro-otel-codegen-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

fn parse_measure(line: &str) -> anyhow::Result<(Duration, u64)> {
    let mut wall = None;
    let mut peak = None;
    for pair in line.split_whitespace() {
        match pair.split_once('=') {
            Some(("wall_ns", v)) => wall = Some(Duration::from_nanos(v.parse()?)),
            Some(("peak_rss", v)) => peak = Some(v.parse()?),
            _ => {}
        }
    }
    Ok((
        wall.ok_or_else(|| anyhow::anyhow!("no wall_ns in {line:?}"))?,
        peak.ok_or_else(|| anyhow::anyhow!("no peak_rss in {line:?}"))?,
    ))
}

/// `bench measure run CMD ARGS…` or `bench measure protox OUT ROOT FILES…`: does the work in
/// a fresh process and prints `wall_ns=… peak_rss=…`.
pub fn measure(args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let peak = match args {
        [mode, cmd, rest @ ..] if mode == "run" => {
            let output = Command::new(cmd).args(rest).output()?;
            if !output.status.success() {
                eprint!("{}", String::from_utf8_lossy(&output.stderr));
                std::process::exit(1);
            }
            usage::children_peak_rss()
        }
        [mode, out, root, files @ ..] if mode == "protox" => {
            protoc_gen_micro_otel::configure()
                .out_dir(out)
                .compile(files, &[root])?;
            usage::self_peak_rss()
        }
        _ => anyhow::bail!(
            "usage: bench measure run CMD ARGS... | bench measure protox OUT ROOT FILES..."
        ),
    };
    println!("wall_ns={} peak_rss={peak}", started.elapsed().as_nanos());
    Ok(())
}

/// Writes `services` services and `messages` messages over files of 10 services each.
fn synthetic(root: &Path, services: usize, messages: usize) -> anyhow::Result<Corpus> {
    let files_count = services.div_ceil(10);
    let per_file = messages / files_count;
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root)?;
    let mut files = Vec::new();
    for f in 0..files_count {
        let mut proto = format!("syntax = \"proto3\";\n\npackage synth.f{f:03};\n\n");
        if f > 0 {
            let _ = writeln!(proto, "import \"f{:03}.proto\";\n", f - 1);
        }
        for m in 0..per_file {
            let _ = writeln!(proto, "// Message {m} of file {f}.\nmessage M{m} {{");
            let _ = writeln!(
                proto,
                "  string name = 1;\n  int64 id = 2;\n  repeated string tags = 3;\n  map<string, int32> counts = 4;"
            );
            if m > 0 {
                let _ = writeln!(proto, "  M{} previous = 5;", m - 1);
            }
            if f > 0 && m == 0 {
                let _ = writeln!(proto, "  synth.f{:03}.M0 imported = 6;", f - 1);
            }
            let _ = writeln!(
                proto,
                "  oneof choice {{ string text = 7; bytes blob = 8; }}\n  enum Kind {{ KIND_UNSPECIFIED = 0; KIND_A = 1; }}\n  Kind kind = 9;\n}}\n"
            );
        }
        for s in 0..10 {
            let _ = writeln!(proto, "// Service {s} of file {f}.\nservice S{s} {{");
            for r in 0..5 {
                let (a, b) = (r % per_file, (r + 1) % per_file);
                let (cs, ss) = match r % 4 {
                    0 => ("", ""),
                    1 => ("", "stream "),
                    2 => ("stream ", ""),
                    _ => ("stream ", "stream "),
                };
                let _ = writeln!(
                    proto,
                    "  // Rpc {r}.\n  rpc Call{r}({cs}M{a}) returns ({ss}M{b});"
                );
            }
            proto.push_str("}\n\n");
        }
        let name = format!("f{f:03}.proto");
        std::fs::write(root.join(&name), proto)?;
        files.push(name);
    }
    Ok(Corpus {
        name: format!(
            "synthetic ({services} services, {} messages)",
            per_file * files_count
        ),
        root: root.to_path_buf(),
        files,
    })
}

impl Report {
    /// A table per corpus, with ratios to protoc-gen-prost + protoc-gen-tonic when present.
    pub fn table(&self) -> String {
        let mut out =
            String::from("Codegen benchmark (best of runs; peak RSS of the largest process)\n");
        let mut corpora: Vec<&str> = self
            .measurements
            .iter()
            .map(|m| m.corpus.as_str())
            .collect();
        corpora.dedup();
        for corpus in corpora {
            let rows: Vec<&Measurement> = self
                .measurements
                .iter()
                .filter(|m| m.corpus == corpus)
                .collect();
            let base = rows
                .iter()
                .find(|m| m.tool.starts_with("protoc-gen-prost"))
                .copied();
            let _ = writeln!(
                out,
                "\n{corpus}\n| tool | time | peak RSS | output |\n|---|---|---|---|"
            );
            for m in rows {
                let ratio = |a: f64, b: Option<f64>| {
                    b.map_or(String::new(), |b| format!(" ({:.2}x)", a / b))
                };
                let _ = writeln!(
                    out,
                    "| {} | {:.0} ms{} | {:.1} MB{} | {:.1} MB |",
                    m.tool,
                    m.wall.as_secs_f64() * 1000.0,
                    ratio(m.wall.as_secs_f64(), base.map(|b| b.wall.as_secs_f64())),
                    m.peak_rss as f64 / 1048576.0,
                    ratio(m.peak_rss as f64, base.map(|b| b.peak_rss as f64)),
                    m.output_bytes as f64 / 1048576.0
                );
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// The measurements as JSON.
    pub fn json(&self) -> serde_json::Value {
        let list: Vec<_> = self
            .measurements
            .iter()
            .map(|m| {
                json!({"corpus": m.corpus, "tool": m.tool, "wall_ms": m.wall.as_secs_f64() * 1000.0,
                       "peak_rss_mb": m.peak_rss as f64 / 1048576.0, "output_mb": m.output_bytes as f64 / 1048576.0})
            })
            .collect();
        json!({ "measurements": list, "notes": self.notes })
    }
}
