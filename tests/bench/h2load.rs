//! The server-side benchmark, refereed by a load generator nobody here wrote: `h2load`
//! (Debian's `nghttp2-client`) sends the same gRPC `GetUser` frames over one HTTP/2
//! connection, 64 streams in flight, to a tonic server and a micro-otel server (tracing off)
//! in child processes, rounds interleaved. Only the servers' CPU and h2load's request rate
//! are compared, so neither side's client is in the figures.

use std::path::Path;
use std::process::Command;

use prost::Message as _;
use serde_json::json;

use crate::baseline;
use crate::child::Child;
use crate::servers::ServerKind;
use crate::table::relative;

/// How many requests per round, and how many rounds.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Interleaved rounds per server.
    pub rounds: usize,
    /// Requests per round.
    pub requests: u64,
}

/// What one server did over all rounds.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which server.
    pub server: &'static str,
    /// Requests per second, as h2load measured them.
    pub qps: f64,
    /// Server CPU seconds per 10k requests.
    pub cpu_s_per_10k: f64,
    /// Requests h2load did not see succeed.
    pub failed: u64,
}

/// Runs the rounds; `None` when `h2load` is not installed.
pub fn run(settings: Settings, out_dir: &Path) -> anyhow::Result<Option<Vec<Row>>> {
    if Command::new("h2load").arg("--version").output().is_err() {
        return Ok(None);
    }
    // One gRPC frame: no compression, the length, then `GetUserRequest { id: 1 }`.
    let message =
        micro_otel_tests::golden::user_case::user::GetUserRequest { id: 1 }.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    frame.extend_from_slice(&message);
    let body = out_dir.join("get_user.grpc");
    std::fs::write(&body, frame)?;

    let servers = [
        ("tonic", ServerKind::Tonic),
        (
            "micro-otel, tracing off",
            ServerKind::Micro {
                instances: 1,
                tracing: None,
            },
        ),
    ];
    let mut children = servers
        .iter()
        .map(|(_, kind)| Child::start(&kind.args()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for child in &children {
        // h2load counts HTTP statuses only; a gRPC client checks that GetUser really answers.
        answers_get_user(&child.addresses[0])?;
        // Warm up: connections, caches, the allocator.
        drive(&child.addresses[0], &body, settings.requests / 10)?;
    }
    let mut totals = vec![Total::default(); servers.len()];
    for round in 0..settings.rounds {
        for k in 0..servers.len() {
            let i = (k + round) % servers.len();
            let before = children[i].usage()?;
            let done = drive(&children[i].addresses[0], &body, settings.requests)?;
            let after = children[i].usage()?;
            let total = &mut totals[i];
            total.done.succeeded += done.succeeded;
            total.done.failed += done.failed;
            total.done.seconds += done.seconds;
            total.cpu_seconds += after.cpu.saturating_sub(before.cpu).as_secs_f64();
        }
    }
    let rows = servers
        .iter()
        .zip(totals)
        .map(|((server, _), Total { done, cpu_seconds })| Row {
            server,
            qps: done.succeeded as f64 / done.seconds.max(1e-9),
            cpu_s_per_10k: cpu_seconds / done.succeeded.max(1) as f64 * 10_000.0,
            failed: done.failed,
        })
        .collect();
    Ok(Some(rows))
}

fn answers_get_user(address: &str) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let mut client =
            baseline::user::user_client::UserClient::connect(format!("http://{address}")).await?;
        client
            .get_user(baseline::user::GetUserRequest { id: 1 })
            .await?;
        Ok(())
    })
}

/// One server's rounds, summed.
#[derive(Clone, Default)]
struct Total {
    done: Done,
    cpu_seconds: f64,
}

/// What h2load reported for one round (or, summed, for several).
#[derive(Clone, Default)]
struct Done {
    succeeded: u64,
    failed: u64,
    seconds: f64,
}

fn drive(address: &str, body: &Path, requests: u64) -> anyhow::Result<Done> {
    let output = Command::new("h2load")
        .args(["-n", &requests.to_string(), "-c", "1", "-m", "64", "-d"])
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("http://{address}/user.User/GetUser"))
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!("h2load failed: {text}");
    }
    // "finished in 3.01s, 66408.67 req/s, 4.50MB/s" and
    // "requests: 200000 total, 200000 started, 200000 done, 200000 succeeded, 0 failed, …"
    let line = |start: &str| text.lines().find(|l| l.starts_with(start));
    let count = |what: &str| -> Option<u64> {
        let parts = line("requests:")?
            .trim_start_matches("requests:")
            .split(',');
        parts
            .map(str::trim)
            .find_map(|p| p.strip_suffix(what))?
            .trim()
            .parse()
            .ok()
    };
    let parse = || -> Option<Done> {
        let rate: f64 = line("finished in")?
            .split(", ")
            .find_map(|p| p.strip_suffix(" req/s"))?
            .parse()
            .ok()?;
        let done = count("done")?;
        Some(Done {
            succeeded: count("succeeded")?,
            failed: done - count("succeeded")?.min(done),
            seconds: done as f64 / rate,
        })
    };
    parse().ok_or_else(|| anyhow::anyhow!("could not read h2load's report:\n{text}"))
}

/// The rows as a table with ratios to the first (tonic) row.
pub fn table(rows: &[Row], settings: Settings) -> String {
    let base = &rows[0];
    let mut out = format!(
        "Server benchmark (h2load, 1 connection, 64 streams): {} rounds x {} GetUser requests\n\n| server | req/s | server CPU s/10k | failed |\n|---|---|---|---|\n",
        settings.rounds, settings.requests
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.server,
            relative(r.qps, base.qps, 0, ""),
            relative(r.cpu_s_per_10k, base.cpu_s_per_10k, 3, ""),
            r.failed
        ));
    }
    out
}

/// The rows as JSON.
pub fn json(rows: &[Row], settings: Settings) -> serde_json::Value {
    json!({
        "rounds": settings.rounds,
        "requests_per_round": settings.requests,
        "rows": rows.iter().map(|r| json!({
            "server": r.server, "qps": r.qps, "cpu_s_per_10k": r.cpu_s_per_10k, "failed": r.failed,
        })).collect::<Vec<_>>(),
    })
}
