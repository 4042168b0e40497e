//! `user-example [demo|server|client]`
//!
//! - `demo` (default): server and client in one process, prints the trace tree;
//! - `server`: serves `user.User` on `--address` until Ctrl-C, registered as `user.service`;
//! - `client`: calls a server and prints the answers and its trace tree; with `--calls N`,
//!   makes N `GetUser` calls through the registry and prints how many each node answered.
//!
//! `--registry`, `--registry-address` and `--selector` take go-micro's values and win over
//! `MICRO_REGISTRY`, `MICRO_REGISTRY_ADDRESS` and `MICRO_SELECTOR`. With an OTLP endpoint
//! or an exporter named in the environment (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_TRACES_EXPORTER`...), `server` and `client` export as the `OTEL_*` variables say;
//! with none, they keep the last spans (a bounded number) and the RPC metrics, and print
//! them when they finish.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use micro_otel::client::ReplyMetadata;
use micro_otel::environment;
use micro_otel::telemetry::{MetricsTable, Telemetry, TraceTree};
use micro_otel::wrapper::{self, Call, Next};
use micro_otel::{Client, Service};
use user_example::store::Store;
use user_example::user::{
    self, CreateUserRequest, GetUserRequest, ListUsersRequest, WatchUsersRequest,
};
use user_example::{Users, demo};

const DEFAULT_ADDRESS: &str = "127.0.0.1:50051";
/// The reply header naming the node that answered.
const SERVED_BY: &str = "x-served-by";

#[derive(Parser)]
#[command(about = "The user service of the micro-otel spec")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Server and client in one process; prints the trace tree.
    Demo,
    /// Serves user.User until Ctrl-C or SIGTERM.
    Server {
        /// Address to serve on (and to register).
        #[arg(long, default_value = DEFAULT_ADDRESS)]
        address: String,
        #[command(flatten)]
        discovery: Discovery,
    },
    /// Calls a server: the API tour, or --calls N GetUser calls through the registry.
    Client {
        /// A server's address; without it, `--calls` goes through the registry.
        #[arg(long)]
        address: Option<String>,
        /// Make N GetUser calls and print `<node address> <count>` per node.
        #[arg(long)]
        calls: Option<usize>,
        #[command(flatten)]
        discovery: Discovery,
    },
}

/// go-micro's plumbing flags; each wins over its `MICRO_*` variable.
#[derive(Args)]
struct Discovery {
    /// Registry: memory, etcd (MICRO_REGISTRY).
    #[arg(long)]
    registry: Option<String>,
    /// Registry addresses, comma separated (MICRO_REGISTRY_ADDRESS).
    #[arg(long)]
    registry_address: Option<String>,
    /// Selector: random, round_robin, weighted, least_requests, consistent_hash
    /// (MICRO_SELECTOR).
    #[arg(long)]
    selector: Option<String>,
}

impl Discovery {
    /// The registry the flags name, else the one `MICRO_REGISTRY` names, if any.
    fn registry(&self) -> anyhow::Result<Option<Arc<dyn micro_otel::discovery::Registry>>> {
        let Some(kind) = &self.registry else {
            return Ok(environment::registry_from_env().transpose()?);
        };
        let address = self
            .registry_address
            .clone()
            .or_else(|| std::env::var(environment::MICRO_REGISTRY_ADDRESS).ok())
            .unwrap_or_default();
        Ok(Some(environment::registry(kind, &address)?))
    }

    /// The selector the flag names, else the one `MICRO_SELECTOR` names, if any.
    fn selector(&self) -> anyhow::Result<Option<Arc<dyn micro_otel::discovery::Selector>>> {
        Ok(match &self.selector {
            Some(name) => Some(environment::selector("--selector", name)?),
            None => environment::selector_from_env().transpose()?,
        })
    }

    /// A client on the registry and selector the flags (or variables) name.
    fn client(&self, telemetry: &Telemetry) -> anyhow::Result<Client> {
        let mut config = Client::builder().instrumentation(telemetry.instrumentation());
        if let Some(registry) = self.registry()? {
            config = config.registry(registry);
        }
        if let Some(selector) = self.selector()? {
            config = config.selector(selector);
        }
        Ok(config.build())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command.unwrap_or(Command::Demo) {
        Command::Demo => print!("{}", demo::run().await?),
        Command::Server { address, discovery } => server(&address, &discovery).await?,
        Command::Client {
            address,
            calls: Some(calls),
            discovery,
        } => spread(address.as_deref(), calls, &discovery).await?,
        Command::Client {
            address, discovery, ..
        } => tour(address.as_deref().unwrap_or(DEFAULT_ADDRESS), &discovery).await?,
    }
    Ok(())
}

/// What a command records, and where it goes.
struct Signals {
    telemetry: Telemetry,
    /// The console views, when nothing is exported.
    console: Option<(TraceTree, MetricsTable)>,
}

impl Signals {
    /// Exports as the `OTEL_*` variables say when they name an endpoint or an exporter;
    /// else keeps the last spans and the RPC metrics to print.
    fn new() -> anyhow::Result<Self> {
        let builder = Telemetry::builder(demo::SERVICE_NAME).version("1.0.0");
        let configured = std::env::vars().any(|(name, value)| {
            !value.is_empty()
                && (name.starts_with("OTEL_EXPORTER_OTLP_") && name.ends_with("ENDPOINT")
                    || name.starts_with("OTEL_") && name.ends_with("_EXPORTER"))
        });
        if configured {
            return Ok(Self {
                telemetry: builder.init()?,
                console: None,
            });
        }
        let (tree, table) = (TraceTree::new(), MetricsTable::new());
        let telemetry = builder
            .no_export()
            .tree(tree.clone())
            .metrics_table(table.clone())
            .init()?;
        Ok(Self {
            telemetry,
            console: Some((tree, table)),
        })
    }

    /// Flushes, and prints the console views if there are any.
    fn finish(self) {
        self.telemetry.flush();
        if let Some((tree, table)) = &self.console {
            print!("\n{}\n{}", tree.render(), table.render());
        }
    }
}

async fn server(address: &str, discovery: &Discovery) -> anyhow::Result<()> {
    let signals = Signals::new()?;
    let telemetry = &signals.telemetry;
    // Every reply, answer or error, names the node: the address the call arrived on.
    let name_node = wrapper::from_fn(|call: Call, next: Next| async move {
        let served_by = call.ctx.local_addr().and_then(|local| {
            local
                .to_string()
                .parse::<micro_otel::metadata::AsciiMetadataValue>()
                .ok()
        });
        let mut answer = next.run(call).await;
        if let Some(served_by) = served_by {
            let metadata = match &mut answer {
                Ok(reply) => &mut reply.metadata,
                Err(status) => status.metadata_mut(),
            };
            metadata.insert(SERVED_BY, served_by);
        }
        answer
    });
    let mut config = Service::builder(demo::SERVICE_NAME)
        .version("1.0.0")
        .address(address)
        .instrumentation(telemetry.instrumentation())
        .wrap_handler(name_node);
    if let Some(registry) = discovery.registry()? {
        config = config.registry(registry);
    }
    let service = config.build();
    // `user.created` goes to the broker MICRO_BROKER names (in-memory by default).
    let users =
        Users::new(Arc::new(Store::new())).publishing(user::user_created_event_publisher(&service));
    user::register_user_handler(&service, users)?;
    let running = service
        .start()
        .await
        .with_context(|| format!("serving on {address}"))?;
    // The bound address: with port 0 the system picked it.
    eprintln!(
        "serving user.User on {}; Ctrl-C to stop",
        running.local_addr()
    );
    running.until_signal().await?;
    signals.finish();
    Ok(())
}

/// N GetUser calls; prints how many each node answered (a user that does not exist is
/// answered NOT_FOUND, which still names the node).
async fn spread(address: Option<&str>, calls: usize, discovery: &Discovery) -> anyhow::Result<()> {
    let signals = Signals::new()?;
    let client = discovery.client(&signals.telemetry)?;
    let users = user::UserClient::new(address.unwrap_or(demo::SERVICE_NAME), client);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in 0..calls {
        let mut request = micro_otel::Request::new(GetUserRequest { id: id as i64 + 1 });
        let reply = ReplyMetadata::capture(&mut request);
        match users.get_user(request).await {
            Ok(_) => {}
            Err(status) if status.code() == micro_otel::Code::NotFound => {}
            Err(status) => return Err(status).context("GetUser"),
        }
        let node = reply
            .get()
            .and_then(|md| {
                md.get(SERVED_BY)
                    .and_then(|v| v.to_str().ok().map(str::to_owned))
            })
            .unwrap_or_else(|| "unknown".into());
        *counts.entry(node).or_default() += 1;
    }
    for (node, count) in counts {
        println!("{node} {count}");
    }
    signals.telemetry.flush();
    Ok(())
}

/// The API tour: every RPC of user.User against one server.
async fn tour(address: &str, discovery: &Discovery) -> anyhow::Result<()> {
    let signals = Signals::new()?;
    let users = user::UserClient::new(address, discovery.client(&signals.telemetry)?);
    let created = users
        .create_user(CreateUserRequest {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        })
        .await
        .with_context(|| format!("calling {address}"))?;
    let id = created.user.unwrap_or_default().id;
    println!("CreateUser -> id {id}");
    println!(
        "GetUser({id}) -> {:?}",
        users
            .get_user(GetUserRequest { id })
            .await?
            .user
            .unwrap_or_default()
    );
    let page = users
        .list_users(ListUsersRequest {
            page_size: 10,
            page_token: String::new(),
        })
        .await?;
    println!("ListUsers -> {} users", page.users.len());
    let mut watch = users
        .watch_users(WatchUsersRequest {
            include_existing: true,
        })
        .await?;
    if let Some(event) = watch.next().await {
        println!(
            "WatchUsers -> first event for {:?}",
            event?.user.unwrap_or_default().name
        );
    }
    drop(watch);
    signals.finish();
    Ok(())
}
