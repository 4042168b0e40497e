//! The micro-otel benchmarks.
//!
//! ```sh
//! cargo run --release -p micro-otel-tests --bin bench              # RPC, h2load, codegen: full
//! cargo run --release -p micro-otel-tests --bin bench -- --quick   # smoke run, under a minute
//! cargo run --release -p micro-otel-tests --bin bench -- rpc       # only the RPC benchmark
//! cargo run --release -p micro-otel-tests --bin bench -- rpc --only 10%   # tonic + one variant
//! cargo run --release -p micro-otel-tests --bin bench -- h2load    # servers under h2load
//! tests/bench/instructions.sh off        # instructions per call: callgrind on `bench profile`
//! target/release/bench drive micro tonic 10    # one client kind against one server kind
//! ```
//!
//! Prints tables and writes `target/bench/rpc.json`, `h2load.json` and `codegen.json`.

mod alloc;
mod baseline;
mod child;
mod codegen;
mod drive;
mod h2load;
mod load;
mod profile;
mod rpc;
mod servers;
mod table;
mod usage;

use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => return servers::serve(&args[1..]),
        Some("receive") => return servers::receive(),
        Some("measure") => return codegen::measure(&args[1..]),
        Some("profile") => return profile::run(&args[1..]),
        Some("drive") => return drive::run(&args[1..]),
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| &*s.clone().leak());
    let which = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str)
        .unwrap_or("all");
    // `target/bench`, beside the `release` folder this binary runs from.
    let out_dir = std::env::current_exe()?
        .parent()
        .and_then(|release| release.parent())
        .map(|target| target.join("bench"))
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    std::fs::create_dir_all(&out_dir)?;
    if matches!(which, "all" | "rpc") {
        let settings = if quick {
            rpc::Settings {
                only,
                rounds: 1,
                round: Duration::from_millis(1500),
                concurrency: 64,
            }
        } else {
            rpc::Settings {
                only,
                rounds: 5,
                round: Duration::from_secs(4),
                concurrency: 64,
            }
        };
        let rows = rpc::run(settings)?;
        println!("{}", rpc::table(&rows, settings));
        std::fs::write(
            out_dir.join("rpc.json"),
            serde_json::to_string_pretty(&rpc::json(&rows, settings))?,
        )?;
    }
    if matches!(which, "all" | "h2load") {
        let settings = h2load::Settings {
            rounds: if quick { 1 } else { 5 },
            requests: if quick { 30_000 } else { 200_000 },
        };
        match h2load::run(settings, &out_dir)? {
            Some(rows) => {
                println!("{}", h2load::table(&rows, settings));
                std::fs::write(
                    out_dir.join("h2load.json"),
                    serde_json::to_string_pretty(&h2load::json(&rows, settings))?,
                )?;
            }
            None => println!(
                "Server benchmark skipped: h2load is not installed (Debian: nghttp2-client)\n"
            ),
        }
    }
    if matches!(which, "all" | "codegen") {
        let report = codegen::run(quick, &out_dir)?;
        println!("{}", report.table());
        std::fs::write(
            out_dir.join("codegen.json"),
            serde_json::to_string_pretty(&report.json())?,
        )?;
    }
    if !matches!(which, "all" | "rpc" | "h2load" | "codegen") {
        anyhow::bail!("unknown benchmark {which:?}; expected rpc, h2load, codegen or all");
    }
    Ok(())
}
