//! Load generation: a fixed number of calls in flight for a fixed time, latencies recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_otel::Client;
use micro_otel_tests::golden::rpc_kinds_case::echo::v1 as echo;
use micro_otel_tests::golden::user_case::user;
use tonic::transport::Channel;

use crate::baseline;

/// The RPC a round drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// `user.User/GetUser` of an existing user.
    GetUser,
    /// `echo.v1.Echo/Unary` with a 1 KiB payload.
    Echo1K,
}

impl Workload {
    /// All workloads, in report order.
    pub const ALL: [Workload; 2] = [Workload::GetUser, Workload::Echo1K];

    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Workload::GetUser => "GetUser",
            Workload::Echo1K => "Echo 1 KiB",
        }
    }
}

/// The tonic-build clients of the baseline.
pub type TonicClients = (
    baseline::user::user_client::UserClient<Channel>,
    baseline::echo::echo_client::EchoClient<Channel>,
);

/// A typed client of one variant.
pub enum Caller {
    /// tonic-build clients over one channel.
    Tonic(Box<TonicClients>),
    /// micro-otel generated clients.
    Micro(user::UserClient, echo::EchoClient),
}

impl Caller {
    /// Plain tonic clients of `address`.
    pub async fn tonic(address: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(format!("http://{address}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(Caller::Tonic(Box::new((
            baseline::user::user_client::UserClient::new(channel.clone()),
            baseline::echo::echo_client::EchoClient::new(channel),
        ))))
    }

    /// micro-otel clients of `target` through `client`.
    pub fn micro(target: &str, client: Client) -> Self {
        Caller::Micro(
            user::UserClient::new(target, client.clone()),
            echo::EchoClient::new(target, client),
        )
    }

    async fn call(&self, workload: Workload, payload: &[u8]) -> Result<(), tonic::Status> {
        match (self, workload) {
            (Caller::Tonic(clients), Workload::GetUser) => clients
                .0
                .clone()
                .get_user(baseline::user::GetUserRequest { id: 1 })
                .await
                .map(drop),
            (Caller::Tonic(clients), Workload::Echo1K) => clients
                .1
                .clone()
                .unary(baseline::echo::EchoRequest {
                    payload: payload.to_vec(),
                    ..Default::default()
                })
                .await
                .map(drop),
            (Caller::Micro(users, _), Workload::GetUser) => users
                .get_user(user::GetUserRequest { id: 1 })
                .await
                .map(drop),
            (Caller::Micro(_, echo), Workload::Echo1K) => echo
                .unary(echo::EchoRequest {
                    payload: payload.to_vec(),
                    ..Default::default()
                })
                .await
                .map(drop),
        }
    }
}

/// What one round measured.
#[derive(Debug, Default)]
pub struct Round {
    /// Successful calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Latency of each successful call, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Wall time of the round.
    pub elapsed: Duration,
}

/// Runs `concurrency` loops of calls for `duration`.
pub async fn run(
    caller: Arc<Caller>,
    workload: Workload,
    concurrency: usize,
    duration: Duration,
) -> Round {
    let payload: Arc<[u8]> = (0..1024).map(|i| i as u8).collect();
    let started = Instant::now();
    let end = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let caller = caller.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut round = Round::default();
                while Instant::now() < end {
                    let start = Instant::now();
                    match caller.call(workload, &payload).await {
                        Ok(()) => {
                            round.calls += 1;
                            round
                                .latencies_us
                                .push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                        Err(_) => round.errors += 1,
                    }
                }
                round
            })
        })
        .collect();
    let mut total = Round::default();
    for task in tasks {
        let round = task.await.expect("load task");
        total.calls += round.calls;
        total.errors += round.errors;
        total.latencies_us.extend(round.latencies_us);
    }
    total.elapsed = started.elapsed();
    total
}
