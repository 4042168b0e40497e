//! `bench drive CLIENT SERVER SECONDS`: one client kind (`tonic` or `micro`, tracing off)
//! against one server kind in a child process, GetUser with 64 calls in flight, printing
//! QPS, latency percentiles and each side's CPU per 10k calls. Mixing kinds tells whose side a cost is on, and
//! `perf record` on this process profiles one client alone. `BENCH_CONCURRENCY` sets the
//! calls in flight (default 64). `BENCH_PIN=1` puts this process on CPU 0 and the server on
//! CPU 1, so that neither side's cost depends on how the two share the cores.

use std::sync::Arc;
use std::time::Duration;

use micro_otel::Client;

use crate::child::Child;
use crate::load::{self, Caller, Workload};
use crate::servers::ServerKind;
use crate::usage::Usage;

/// Runs the drive; see the module docs for the arguments.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let [client, server, seconds] = args else {
        anyhow::bail!("usage: bench drive tonic|micro tonic|micro SECONDS");
    };
    let duration = Duration::from_secs_f64(seconds.parse()?);
    let server_kind = match server.as_str() {
        "tonic" => ServerKind::Tonic,
        "micro" => ServerKind::Micro {
            instances: 1,
            tracing: None,
        },
        other => anyhow::bail!("unknown server kind {other:?}"),
    };
    pin_if_asked(0)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut child = Child::start(&server_kind.args())?;
        let address = child.addresses[0].clone();
        let caller = Arc::new(match client.as_str() {
            "tonic" => Caller::tonic(&address).await?,
            "micro" => Caller::micro(&address, Client::builder().instrumentation(micro_otel::Instrumentation::off()).build()),
            other => anyhow::bail!("unknown client kind {other:?}"),
        });
        load::run(caller.clone(), Workload::GetUser, 64, Duration::from_millis(300)).await;
        let (server_before, client_before) = (child.usage()?, Usage::of_self());
        let concurrency = std::env::var("BENCH_CONCURRENCY").map_or(Ok(64), |c| c.parse())?;
        let round = load::run(caller, Workload::GetUser, concurrency, duration).await;
        let (server_after, client_after) = (child.usage()?, Usage::of_self());
        let per_10k = |before: &Usage, after: &Usage| {
            after.cpu.saturating_sub(before.cpu).as_secs_f64() * 10_000.0
                / round.calls.max(1) as f64
        };
        let mut latencies = round.latencies_us.clone();
        latencies.sort_unstable();
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "{client} client -> {server} server: {:.0} calls/s, p50 {}us, p99 {}us, client CPU {:.3} s/10k, server CPU {:.3} s/10k, {} errors",
            round.calls as f64 / round.elapsed.as_secs_f64(),
            percentile(0.5),
            percentile(0.99),
            per_10k(&client_before, &client_after),
            per_10k(&server_before, &server_after),
            round.errors,
        );
        Ok(())
    })
}

/// With `BENCH_PIN` set, keeps the calling thread, and the threads it starts later, on `cpu`
/// (the drive and the RPC benchmark put clients on CPU 0, server children on CPU 1).
pub fn pin_if_asked(cpu: usize) -> anyhow::Result<()> {
    if std::env::var_os("BENCH_PIN").is_none() {
        return Ok(());
    }
    // SAFETY: a zeroed `cpu_set_t` is the empty set, `CPU_SET` writes within it, and
    // `sched_setaffinity` only reads it.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if pinned != 0 {
        anyhow::bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
