//! The child processes: a server of one variant (`bench serve …`) and a discarding OTLP
//! receiver (`bench receive`). Each prints `listening ADDR[,ADDR…]`, then answers `usage`
//! lines on stdin with its [`Usage`], and exits when stdin closes.

use std::io::BufRead;
use std::sync::Arc;

use micro_otel::discovery::MemoryRegistry;
use micro_otel::telemetry::Telemetry;
use micro_otel::{Context, MessageStream, ResponseStream, Service, Status};
use micro_otel_tests::golden::rpc_kinds_case::echo::v1 as echo;
use micro_otel_tests::golden::user_case::user;
use user_example::store::Store;

use crate::baseline;
use crate::usage::Usage;

/// How a server child is set up, from its command line.
pub enum ServerKind {
    /// Plain tonic.
    Tonic,
    /// micro-otel: instances, and the sampling ratio with the OTLP endpoint (None: tracing off).
    Micro {
        instances: usize,
        tracing: Option<(f64, String)>,
    },
}

impl ServerKind {
    /// The arguments that make a child serve this kind.
    pub fn args(&self) -> Vec<String> {
        match self {
            ServerKind::Tonic => vec!["serve".into(), "tonic".into()],
            ServerKind::Micro { instances, tracing } => {
                let mut args = vec!["serve".into(), "micro".into(), instances.to_string()];
                if let Some((ratio, endpoint)) = tracing {
                    args.extend([ratio.to_string(), endpoint.clone()]);
                }
                args
            }
        }
    }

    fn parse(args: &[String]) -> anyhow::Result<Self> {
        match args {
            [kind] if kind == "tonic" => Ok(ServerKind::Tonic),
            [kind, n] if kind == "micro" => Ok(ServerKind::Micro {
                instances: n.parse()?,
                tracing: None,
            }),
            [kind, n, ratio, endpoint] if kind == "micro" => Ok(ServerKind::Micro {
                instances: n.parse()?,
                tracing: Some((ratio.parse()?, endpoint.clone())),
            }),
            _ => anyhow::bail!("usage: bench serve tonic | bench serve micro N [RATIO OTLP_URL]"),
        }
    }
}

/// A store holding the one user `GetUser` reads.
pub fn store() -> Arc<Store> {
    let store = Arc::new(Store::new());
    store.insert("Ada Lovelace".into(), "ada@example.com".into());
    store
}

/// `bench serve …`: serves until stdin closes.
pub fn serve(args: &[String]) -> anyhow::Result<()> {
    let kind = ServerKind::parse(args)?;
    crate::drive::pin_if_asked(1)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let addresses = match kind {
            ServerKind::Tonic => vec![serve_tonic().await?],
            ServerKind::Micro { instances, tracing } => serve_micro(instances, tracing).await?,
        };
        println!("listening {}", addresses.join(","));
        answer_usage_until_stdin_closes().await
    })
}

async fn serve_tonic() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let incoming = micro_otel_tests::harness::incoming(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(baseline::user::user_server::UserServer::new(
                baseline::Users(store()),
            ))
            .add_service(baseline::echo::echo_server::EchoServer::new(baseline::Echo))
            .serve_with_incoming(incoming),
    );
    Ok(address)
}

async fn serve_micro(
    instances: usize,
    tracing: Option<(f64, String)>,
) -> anyhow::Result<Vec<String>> {
    let telemetry = match &tracing {
        Some((ratio, endpoint)) => Some(
            Telemetry::builder("bench-server")
                .otlp(endpoint.clone())
                .sample_ratio(*ratio)
                .install_global(false)
                .init()?,
        ),
        None => None,
    };
    let store = store();
    let mut addresses = Vec::new();
    for _ in 0..instances {
        let mut builder = Service::builder("bench.server").registry(MemoryRegistry::new());
        builder = match &telemetry {
            Some(t) => builder.instrumentation(t.instrumentation()),
            None => builder.instrumentation(micro_otel::Instrumentation::off()),
        };
        let service = builder.build();
        user::register_user_handler(&service, Users(store.clone()))
            .expect("handler registered before start");
        echo::register_echo_handler(&service, Echo).expect("handler registered before start");
        let running = service.start().await?;
        addresses.push(running.local_addr().to_string());
        // Serve for the life of the process.
        std::mem::forget(running);
    }
    std::mem::forget(telemetry);
    Ok(addresses)
}

async fn answer_usage_until_stdin_closes() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| {
        for line in std::io::stdin().lock().lines() {
            if line? == "usage" {
                println!("{}", Usage::of_self().encode());
            }
        }
        Ok(())
    })
    .await?
}

/// `bench receive`: an OTLP receiver that counts and discards spans.
pub fn receive() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let receiver = micro_otel_tests::otlp::Receiver::start_discarding().await?;
        println!("listening {}", receiver.endpoint());
        answer_usage_until_stdin_closes().await
    })
}

/// `user.User` for micro-otel: the same lookup as the baseline.
pub struct Users(pub Arc<Store>);

impl user::UserHandler for Users {
    async fn create_user(
        &self,
        _: Context,
        _: user::CreateUserRequest,
    ) -> Result<user::CreateUserResponse, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }

    async fn get_user(
        &self,
        _: Context,
        request: user::GetUserRequest,
    ) -> Result<user::GetUserResponse, Status> {
        let found = self
            .0
            .get(request.id)
            .ok_or_else(|| Status::not_found(format!("no user with id {}", request.id)))?;
        Ok(user::GetUserResponse {
            user: Some(user::UserRecord {
                id: found.id,
                name: found.name,
                email: found.email,
            }),
        })
    }

    async fn list_users(
        &self,
        _: Context,
        _: user::ListUsersRequest,
    ) -> Result<user::ListUsersResponse, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }

    async fn watch_users(
        &self,
        _: Context,
        _: user::WatchUsersRequest,
    ) -> Result<ResponseStream<user::UserEvent>, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }
}

/// `echo.v1.Echo` for micro-otel: the same echo as the baseline.
struct Echo;

impl echo::EchoHandler for Echo {
    async fn unary(
        &self,
        _: Context,
        request: echo::EchoRequest,
    ) -> Result<echo::EchoResponse, Status> {
        Ok(echo::EchoResponse {
            message: request.message,
            index: 0,
            payload: request.payload,
        })
    }

    async fn server_stream(
        &self,
        _: Context,
        _: echo::EchoRequest,
    ) -> Result<ResponseStream<echo::EchoResponse>, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }

    async fn client_stream(
        &self,
        _: Context,
        _: MessageStream<echo::EchoRequest>,
    ) -> Result<echo::EchoResponse, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }

    async fn bidi(
        &self,
        _: Context,
        _: MessageStream<echo::EchoRequest>,
    ) -> Result<ResponseStream<echo::EchoResponse>, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }
}
