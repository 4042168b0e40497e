//! The RPC benchmark: the same unary RPCs through plain tonic and micro-otel variants,
//! servers in child processes, rounds interleaved so that every figure is a ratio measured
//! side by side.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use micro_otel::Client;
use micro_otel::discovery::{MemoryRegistry, Node, Registration, Registry};
use micro_otel::telemetry::Telemetry;
use serde_json::json;

use crate::child::Child;
use crate::load::{self, Caller, Round, Workload};
use crate::servers::ServerKind;
use crate::table::relative;
use crate::usage::Usage;

/// How long and how hard to drive.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Interleaved rounds per variant and workload.
    pub rounds: usize,
    /// Length of one round.
    pub round: Duration,
    /// Calls in flight.
    pub concurrency: usize,
    /// Only variants whose name contains this (plus tonic), for profiling one of them.
    pub only: Option<&'static str>,
}

/// A variant: how its server runs and how its client is built.
struct Variant {
    name: &'static str,
    server: ServerKind,
    client: ClientKind,
}

enum ClientKind {
    Tonic,
    /// Tracing through this telemetry, or off.
    Direct(Option<usize>),
    /// Through the registry and selector (tracing off).
    Selector,
}

/// Everything measured for one variant and workload, summed over rounds.
#[derive(Debug, Default)]
struct Totals {
    calls: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    elapsed: Duration,
    cpu: Duration,
    allocations: u64,
}

/// One row of the result.
#[derive(Debug, Clone)]
pub struct Row {
    pub variant: &'static str,
    pub qps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub rss_mb: f64,
    pub cpu_s_per_10k: f64,
    pub allocs_per_call: f64,
    pub errors: u64,
}

/// Runs the benchmark and returns rows per workload. With `BENCH_PIN` set, the clients run
/// on CPU 0 and the servers on CPU 1.
pub fn run(settings: Settings) -> anyhow::Result<BTreeMap<&'static str, Vec<Row>>> {
    crate::drive::pin_if_asked(0)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run_async(settings))
}

async fn run_async(settings: Settings) -> anyhow::Result<BTreeMap<&'static str, Vec<Row>>> {
    let receiver = Child::start(&["receive".into()])?;
    let otlp = receiver.addresses[0].clone();
    let variants = vec![
        Variant {
            name: "tonic",
            server: ServerKind::Tonic,
            client: ClientKind::Tonic,
        },
        Variant {
            name: "micro-otel, tracing off",
            server: ServerKind::Micro {
                instances: 1,
                tracing: None,
            },
            client: ClientKind::Direct(None),
        },
        Variant {
            name: "micro-otel, 10% sampled",
            server: ServerKind::Micro {
                instances: 1,
                tracing: Some((0.1, otlp.clone())),
            },
            client: ClientKind::Direct(Some(0)),
        },
        Variant {
            name: "micro-otel, 100% sampled",
            server: ServerKind::Micro {
                instances: 1,
                tracing: Some((1.0, otlp.clone())),
            },
            client: ClientKind::Direct(Some(1)),
        },
        Variant {
            name: "micro-otel, selector x3",
            server: ServerKind::Micro {
                instances: 3,
                tracing: None,
            },
            client: ClientKind::Selector,
        },
    ];
    let variants: Vec<Variant> = variants
        .into_iter()
        .filter(|v| v.name == "tonic" || settings.only.is_none_or(|only| v.name.contains(only)))
        .collect();
    // Only the traced variants need exporters: idle ones would still share the client's CPU.
    let traced = variants
        .iter()
        .any(|v| matches!(v.client, ClientKind::Direct(Some(_))));
    let telemetry = [0.1, 1.0]
        .into_iter()
        .filter(|_| traced)
        .map(|ratio| {
            Telemetry::builder("bench-client")
                .otlp(otlp.clone())
                .sample_ratio(ratio)
                .install_global(false)
                .init()
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut servers = Vec::new();
    let mut callers = Vec::new();
    for variant in &variants {
        let server = Child::start(&variant.server.args())?;
        let caller = match variant.client {
            ClientKind::Tonic => Caller::tonic(&server.addresses[0]).await?,
            ClientKind::Direct(tracing) => {
                let client = match tracing {
                    Some(i) => Client::builder().instrumentation(telemetry[i].instrumentation()),
                    None => Client::builder().instrumentation(micro_otel::Instrumentation::off()),
                };
                Caller::micro(&server.addresses[0], client.build())
            }
            ClientKind::Selector => {
                let registry = MemoryRegistry::new();
                for (i, address) in server.addresses.iter().enumerate() {
                    let node = Node {
                        id: format!("bench-{i}"),
                        address: address.clone(),
                        metadata: Default::default(),
                    };
                    registry
                        .register(Registration::new(
                            "bench.server",
                            &node,
                            Duration::from_secs(3600),
                        ))
                        .await?;
                }
                let client = Client::builder()
                    .registry(Arc::new(registry))
                    .instrumentation(micro_otel::Instrumentation::off())
                    .build();
                Caller::micro("bench.server", client)
            }
        };
        servers.push(server);
        callers.push(Arc::new(caller));
    }

    // Warm up connections, caches and the allocator.
    for caller in &callers {
        for workload in Workload::ALL {
            load::run(
                caller.clone(),
                workload,
                settings.concurrency,
                Duration::from_millis(300),
            )
            .await;
        }
    }

    let mut totals: HashMap<(Workload, usize), Totals> = HashMap::new();
    for round in 0..settings.rounds {
        for workload in Workload::ALL {
            // Rotate the order each round so no variant always runs first.
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                let server_before = servers[i].usage()?;
                let client_before = Usage::of_self();
                let result = load::run(
                    callers[i].clone(),
                    workload,
                    settings.concurrency,
                    settings.round,
                )
                .await;
                let client_after = Usage::of_self();
                let server_after = servers[i].usage()?;
                let total = totals.entry((workload, i)).or_default();
                add(
                    total,
                    result,
                    [server_before, client_before],
                    [server_after, client_after],
                );
            }
        }
    }

    let mut rss = Vec::new();
    for server in &mut servers {
        rss.push(server.usage()?.rss);
    }
    drop(telemetry);
    let mut rows = BTreeMap::new();
    for workload in Workload::ALL {
        let list = variants
            .iter()
            .enumerate()
            .map(|(i, v)| {
                row(
                    v.name,
                    totals.remove(&(workload, i)).unwrap_or_default(),
                    rss[i],
                )
            })
            .collect();
        rows.insert(workload.name(), list);
    }
    Ok(rows)
}

fn add(total: &mut Totals, round: Round, before: [Usage; 2], after: [Usage; 2]) {
    total.calls += round.calls;
    total.errors += round.errors;
    total.latencies_us.extend(round.latencies_us);
    total.elapsed += round.elapsed;
    for (b, a) in before.iter().zip(&after) {
        total.cpu += a.cpu.saturating_sub(b.cpu);
        total.allocations += a.allocations.saturating_sub(b.allocations);
    }
}

fn row(variant: &'static str, mut totals: Totals, rss: u64) -> Row {
    totals.latencies_us.sort_unstable();
    let percentile = |p: f64| -> f64 {
        let l = &totals.latencies_us;
        if l.is_empty() {
            return 0.0;
        }
        l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64
    };
    let calls = totals.calls.max(1) as f64;
    Row {
        variant,
        qps: totals.calls as f64 / totals.elapsed.as_secs_f64().max(1e-9),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        p999_us: percentile(0.999),
        rss_mb: rss as f64 / (1024.0 * 1024.0),
        cpu_s_per_10k: totals.cpu.as_secs_f64() / calls * 10_000.0,
        allocs_per_call: totals.allocations as f64 / calls,
        errors: totals.errors,
    }
}

/// The rows as a table with ratios to the first (tonic) row, and the target checks.
pub fn table(rows: &BTreeMap<&'static str, Vec<Row>>, settings: Settings) -> String {
    let mut out = format!(
        "RPC benchmark: {} rounds x {:?} per variant, {} calls in flight, server in its own process\n",
        settings.rounds, settings.round, settings.concurrency
    );
    for (workload, rows) in rows {
        let base = &rows[0];
        out.push_str(&format!(
            "\n{workload}\n| variant | QPS | p50 | p99 | p99.9 | server RSS | CPU s/10k calls | allocs/call | errors |\n|---|---|---|---|---|---|---|---|---|\n"
        ));
        for r in rows {
            let cells = [
                relative(r.qps, base.qps, 0, ""),
                relative(r.p50_us, base.p50_us, 0, "us"),
                relative(r.p99_us, base.p99_us, 0, "us"),
                relative(r.p999_us, base.p999_us, 0, "us"),
                relative(r.rss_mb, base.rss_mb, 1, " MB"),
                relative(r.cpu_s_per_10k, base.cpu_s_per_10k, 3, ""),
            ];
            out.push_str(&format!(
                "| {} | {} | {:.1} ({:+.1}) | {} |\n",
                r.variant,
                cells.join(" | "),
                r.allocs_per_call,
                r.allocs_per_call - base.allocs_per_call,
                r.errors
            ));
        }
        out.push_str(&targets(rows));
    }
    out
}

fn targets(rows: &[Row]) -> String {
    let [tonic, off, ten, hundred, ..] = rows else {
        return String::new();
    };
    // (target, measured value, limit, whether the value must be at least the limit)
    let lines = [
        (
            "tracing off: QPS >= 0.97x tonic",
            off.qps / tonic.qps,
            0.97,
            true,
        ),
        (
            "tracing off: p99 <= 1.05x tonic",
            off.p99_us / tonic.p99_us,
            1.05,
            false,
        ),
        (
            "10%: QPS >= 0.98x tracing off",
            ten.qps / off.qps,
            0.98,
            true,
        ),
        (
            "10%: p99 <= 1.05x tracing off",
            ten.p99_us / off.p99_us,
            1.05,
            false,
        ),
        (
            "10%: RSS <= 1.10x tracing off",
            ten.rss_mb / off.rss_mb,
            1.10,
            false,
        ),
        (
            "100%: QPS >= 0.90x tracing off",
            hundred.qps / off.qps,
            0.90,
            true,
        ),
        (
            "tracing off: allocs/call <= tonic + 5",
            off.allocs_per_call - tonic.allocs_per_call,
            5.0,
            false,
        ),
    ];
    let mut out = String::from("targets:\n");
    for (name, value, limit, at_least) in lines {
        let met = if at_least {
            value >= limit
        } else {
            value <= limit
        };
        let verdict = if met { "met" } else { "MISSED" };
        out.push_str(&format!("  {name}: {value:.3} {verdict}\n"));
    }
    out
}

/// The rows as JSON, for comparing runs across commits.
pub fn json(rows: &BTreeMap<&'static str, Vec<Row>>, settings: Settings) -> serde_json::Value {
    let workloads: serde_json::Map<String, serde_json::Value> = rows
        .iter()
        .map(|(workload, rows)| {
            let list = rows
                .iter()
                .map(|r| {
                    json!({
                        "variant": r.variant, "qps": r.qps, "p50_us": r.p50_us, "p99_us": r.p99_us,
                        "p999_us": r.p999_us, "server_rss_mb": r.rss_mb, "cpu_s_per_10k": r.cpu_s_per_10k,
                        "allocs_per_call": r.allocs_per_call, "errors": r.errors,
                        "qps_ratio": r.qps / rows[0].qps, "p99_ratio": r.p99_us / rows[0].p99_us,
                    })
                })
                .collect();
            ((*workload).to_owned(), serde_json::Value::Array(list))
        })
        .collect();
    json!({
        "rounds": settings.rounds,
        "round_seconds": settings.round.as_secs_f64(),
        "concurrency": settings.concurrency,
        "workloads": workloads,
    })
}
