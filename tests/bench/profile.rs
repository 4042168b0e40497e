//! `bench profile VARIANT N`: N sequential GetUser calls, client and server in this process
//! on one thread (spans go to a receiver in a child process), printing allocations per call. Deterministic, so it can run under
//! `valgrind --tool=callgrind` to count instructions per call, variant against variant.

use std::sync::Arc;

use micro_otel::telemetry::Telemetry;
use micro_otel::{Client, Service};
use micro_otel_tests::golden::user_case::user;

use crate::baseline;
use crate::servers;

/// Runs the profile; `variant` is `tonic`, `off`, `metrics` (metrics on, tracing off), a
/// percentage sampled (`0`, `10`, `100`: tracing on, metrics off), or `metrics+10`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let [variant, n] = args else {
        anyhow::bail!("usage: bench profile tonic|off|metrics|0|10|100|metrics+10 N");
    };
    let n: u64 = n.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // The receiver runs in its own process, so its decoding is not counted here.
        let receiver = crate::child::Child::start(&["receive".into()])?;
        let Measured {
            calls,
            allocations,
            future_bytes,
        } = match variant.as_str() {
            "tonic" => profile_tonic(n).await?,
            "off" => profile_micro(n, None).await?,
            variant => {
                let (metrics, percent) = match variant {
                    "metrics" => (true, None),
                    other => match other.strip_prefix("metrics+") {
                        Some(percent) => (true, Some(percent)),
                        None => (false, Some(other)),
                    },
                };
                let mut telemetry = Telemetry::builder("bench")
                    .otlp(receiver.addresses[0].clone())
                    .logs(false)
                    .install_global(false);
                if let Some(percent) = percent {
                    telemetry = telemetry.sample_ratio(percent.parse::<f64>()? / 100.0);
                }
                let telemetry = telemetry.init()?;
                let instrumentation = telemetry
                    .instrumentation()
                    .tracing(percent.is_some())
                    .metrics(metrics);
                let result = profile_micro(n, Some(instrumentation)).await?;
                tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
                result
            }
        };
        println!(
            "{variant}: {calls} calls, {:.1} allocations/call, {future_bytes} B per call future",
            allocations as f64 / calls as f64
        );
        Ok(())
    })
}

async fn profile_tonic(n: u64) -> anyhow::Result<Measured> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let incoming = micro_otel_tests::harness::incoming(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(baseline::user::user_server::UserServer::new(
                baseline::Users(servers::store()),
            ))
            .serve_with_incoming(incoming),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let client = baseline::user::user_client::UserClient::new(channel);
    let call = || {
        let mut client = client.clone();
        async move {
            client
                .get_user(baseline::user::GetUserRequest { id: 1 })
                .await
                .map(drop)
        }
    };
    measure(n, call).await
}

async fn profile_micro(
    n: u64,
    instrumentation: Option<micro_otel::Instrumentation>,
) -> anyhow::Result<Measured> {
    let instrumentation = instrumentation.unwrap_or_else(micro_otel::Instrumentation::off);
    let builder = Service::builder("bench.server")
        .registry(micro_otel::discovery::MemoryRegistry::new())
        .instrumentation(instrumentation.clone());
    let service = builder.build();
    user::register_user_handler(&service, servers::Users(servers::store()))
        .expect("handler registered before start");
    let running = service.start().await?;
    let client = Client::builder().instrumentation(instrumentation);
    let client = user::UserClient::new(&running.local_addr().to_string(), client.build());
    let client = Arc::new(client);
    let call = || {
        let client = client.clone();
        async move {
            client
                .get_user(user::GetUserRequest { id: 1 })
                .await
                .map(drop)
        }
    };
    let result = measure(n, call).await;
    running.stop().await?;
    result
}

/// What [`measure`] found.
struct Measured {
    calls: u64,
    allocations: u64,
    /// Size of one call's future: every move of it is a copy this large.
    future_bytes: usize,
}

/// Warms up, then makes `n` calls one after the other.
async fn measure<F, Fut>(n: u64, call: F) -> anyhow::Result<Measured>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let future_bytes = std::mem::size_of_val(&call());
    for _ in 0..100 {
        call().await?;
    }
    let before = crate::alloc::count();
    for _ in 0..n {
        call().await?;
    }
    Ok(Measured {
        calls: n,
        allocations: crate::alloc::count() - before,
        future_bytes,
    })
}
