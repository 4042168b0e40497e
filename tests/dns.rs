//! The DNS registry against a real DNS server: each test starts its own dnsmasq on a free
//! 127.0.0.1 port (Debian `dnsmasq-base`, installed by `.ci/run`), answering for `.test`
//! from a hosts file it re-reads on SIGHUP and from `--srv-host` records. Where the build
//! finds no dnsmasq, these tests are ignored with the reason (`tools.rs`); in CI
//! (`CI=true`) they run, and fail without it.
//!
//! Instances of one service differ by address, not port (a headless service's pods all
//! serve on the same port): they listen on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (all of
//! 127.0.0.0/8 is loopback on Linux) and each adds its address to its replies.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro_otel::call::Node;
use micro_otel::discovery::{
    Change, DnsRegistry, Registry, RegistryError, RoundRobin, SRV_PRIORITY, WEIGHT,
};
use micro_otel::wrapper::{self, Call, Next};
use micro_otel::{Client, RunningService, Service};
use micro_otel_tests::discovery::{eventually, ids, next_change, request};
use micro_otel_tests::harness::echo::{self, EchoClient};
use micro_otel_tests::harness::{Echo, Spans, missing};
use tonic::metadata::AsciiMetadataValue;

/// The reply header in which each instance names the address it listens on.
const IP_HEADER: &str = "x-echo-ip";

/// A dnsmasq of one test, killed when dropped.
struct Dnsmasq {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Dnsmasq {
    /// Starts dnsmasq answering for `.test` with `hosts` (hosts-file lines) and `srv`
    /// (`--srv-host` values), every answer valid for `ttl` seconds, and waits until it
    /// answers.
    async fn start(hosts: &str, srv: &[String], ttl: u32) -> Self {
        let Some(dnsmasq) = ["dnsmasq", "/usr/sbin/dnsmasq"]
            .into_iter()
            .find(|path| Command::new(path).arg("--version").output().is_ok())
        else {
            missing("dnsmasq not found; `apt-get install dnsmasq-base`");
        };
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(dir.path().join("hosts"), hosts).expect("hosts file written");
        let log_path = dir.path().join("dnsmasq.log");
        // Another process may take the port between our probe and dnsmasq's bind: retry.
        let mut log = String::new();
        for _ in 0..5 {
            let port = free_udp_and_tcp_port();
            let log_file = std::fs::File::create(&log_path).expect("log file");
            let mut child = Command::new(dnsmasq)
                .args([
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--log-facility=-",
                    "--log-queries",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    // Authoritative for .test: unknown names there are NXDOMAIN.
                    "--local=/test/",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--local-ttl={ttl}"))
                .arg(format!(
                    "--addn-hosts={}",
                    dir.path().join("hosts").display()
                ))
                .args(srv.iter().map(|s| format!("--srv-host={s}")))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log file"))
                .stderr(log_file)
                .spawn()
                .expect("dnsmasq starts");
            if answers(&mut child, port, &log_path).await {
                return Self { child, dir, port };
            }
            log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not come up; its last log:\n{log}");
    }

    /// Where it answers.
    fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn hosts_file(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// Replaces the hosts file and has dnsmasq read it again (SIGHUP).
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(self.hosts_file(), hosts).expect("hosts file written");
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: signals our own child, which is alive until dropped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "SIGHUP sent");
    }

    /// How many `type` queries for `name` dnsmasq has answered.
    fn queries(&self, record_type: &str, name: &str) -> usize {
        let asked = format!("query[{record_type}] {name} ");
        self.log().lines().filter(|l| l.contains(&asked)).count()
    }

    /// A registry asking this dnsmasq for A/AAAA records, nodes on `port`.
    fn a_records(&self, port: u16) -> DnsRegistry {
        DnsRegistry::a_records(port).name_server(self.address())
    }
}

/// Polls until the dnsmasq `child` on `port` answers (`true`) or exits (`false`).
async fn answers(child: &mut Child, port: u16, log: &std::path::Path) -> bool {
    let started = Instant::now();
    let probe = DnsRegistry::a_records(1)
        .name_server(SocketAddr::from(([127, 0, 0, 1], port)))
        .timeout(Duration::from_millis(200));
    loop {
        if probe.lookup("probe.test").await.is_ok() {
            eprintln!("dnsmasq ready in {:?}", started.elapsed());
            return true;
        }
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "dnsmasq did not answer within 10 s; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 now.
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = udp.local_addr().expect("bound").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Hosts-file lines giving `name` each of `ips`.
fn hosts(name: &str, ips: &[&str]) -> String {
    ips.iter().map(|ip| format!("{ip} {name}\n")).collect()
}

/// Echo instances on each of `ips`, all on one port (chosen free, again if one is taken
/// meanwhile), with the DNS registry (registering does nothing). Returns the port.
async fn start_echoes(
    ips: &[&str],
    registry: &DnsRegistry,
    spans: &Spans,
) -> (u16, Vec<RunningService>) {
    'port: for _ in 0..10 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut running = Vec::new();
        for ip in ips {
            let ip_header: AsciiMetadataValue = ip.parse().expect("an ASCII address");
            let names_its_ip = wrapper::from_fn(move |call: Call, next: Next| {
                let ip_header = ip_header.clone();
                async move {
                    let mut reply = next.run(call).await?;
                    reply.metadata.insert(IP_HEADER, ip_header);
                    Ok(reply)
                }
            });
            let service = Service::builder("echo")
                .address(format!("{ip}:{port}"))
                .registry(registry.clone())
                .instrumentation(spans.instrumentation())
                .wrap_handler(names_its_ip)
                .build();
            echo::register_echo_handler(&service, Echo::default())
                .expect("registered before start");
            match service.start().await {
                Ok(instance) => running.push(instance),
                Err(e) => {
                    eprintln!("{ip}:{port} is taken ({e}); another port");
                    for instance in running {
                        instance.stop().await.expect("stops");
                    }
                    continue 'port;
                }
            }
        }
        return (port, running);
    }
    panic!("no port free on all of {ips:?}");
}

/// A client calling through `registry`, round robin.
fn round_robin_client(registry: DnsRegistry, name: &str) -> EchoClient {
    let client = Client::builder()
        .registry(Arc::new(registry))
        .selector(RoundRobin::new())
        .build();
    EchoClient::new(name, client)
}

/// How many of `n` calls each instance answered, by the address it names.
async fn calls_per_ip(client: &EchoClient, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let mut call = micro_otel::Request::new(request("who?"));
        let reply = micro_otel::client::ReplyMetadata::capture(&mut call);
        client.unary(call).await.expect("the call succeeds");
        let ip = reply
            .get()
            .and_then(|md| Some(md.get(IP_HEADER)?.to_str().ok()?.to_owned()))
            .expect("the instance names its address");
        *counts.entry(ip).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(ip, n)| (ip.to_string(), *n)).collect()
}

#[cfg_attr(
    not(have_dnsmasq),
    ignore = "needs dnsmasq: apt-get install dnsmasq-base"
)]
#[tokio::test]
async fn a_name_with_three_a_records_spreads_round_robin_calls_evenly_over_the_three_addresses() {
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let dns = Dnsmasq::start(&hosts("echo.test", &ips), &[], 60).await;
    let spans = Spans::default();
    // The instances "register" in DNS too: a no-op that lets them start.
    let (port, instances) = start_echoes(&ips, &dns.a_records(0), &spans).await;
    let registry = dns.a_records(port);

    let nodes = registry.lookup("echo.test").await.expect("dnsmasq answers");
    let expected: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    assert_eq!(ids(&nodes), expected);
    assert!(
        nodes
            .iter()
            .all(|n| n.address == n.id && n.metadata.is_empty()),
        "{nodes:?}"
    );

    let echo = round_robin_client(registry, "echo.test");
    assert_eq!(
        calls_per_ip(&echo, 30).await,
        counts(&[("127.0.0.1", 10), ("127.0.0.2", 10), ("127.0.0.3", 10)])
    );
    for instance in instances {
        instance
            .stop()
            .await
            .expect("stops (deregistering is a no-op)");
    }
}

#[cfg_attr(
    not(have_dnsmasq),
    ignore = "needs dnsmasq: apt-get install dnsmasq-base"
)]
#[tokio::test]
async fn a_record_removed_from_dns_is_left_out_after_its_ttl_and_one_added_back_is_called_again() {
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let ttl = Duration::from_secs(1);
    let dns = Dnsmasq::start(&hosts("echo.test", &ips), &[], 1).await;
    let spans = Spans::default();
    let (port, instances) = start_echoes(&ips, &dns.a_records(0), &spans).await;
    let registry = dns.a_records(port);
    let echo = round_robin_client(registry.clone(), "echo.test");
    assert_eq!(calls_per_ip(&echo, 30).await.len(), 3, "all three answer");

    let mut watch = registry.watch("echo.test");
    assert_eq!(next_change(&mut watch).await.nodes.len(), 3);
    dns.set_hosts(&hosts("echo.test", &ips[..2]));
    let removed_at = Instant::now();
    let change = next_change(&mut watch).await;
    eprintln!(
        "the watch reported the removal after {:?}",
        removed_at.elapsed()
    );
    let gone = format!("127.0.0.3:{port}");
    assert_eq!(ids(&change.removed), [gone.as_str()]);
    assert!(change.added.is_empty());
    assert_eq!(change.nodes.len(), 2);

    // The client's own watch follows within a TTL and a re-resolution.
    let left_out = eventually(
        ttl * 4,
        "the client stops calling the removed address",
        async || !calls_per_ip(&echo, 6).await.contains_key("127.0.0.3"),
    )
    .await;
    eprintln!(
        "the client left the removed address out {:?} after the SIGHUP",
        removed_at.elapsed()
    );
    assert!(left_out < ttl * 4);
    assert_eq!(
        calls_per_ip(&echo, 30).await,
        counts(&[("127.0.0.1", 15), ("127.0.0.2", 15)])
    );

    dns.set_hosts(&hosts("echo.test", &ips));
    let change = next_change(&mut watch).await;
    assert_eq!(ids(&change.added), [gone.as_str()]);
    eventually(
        ttl * 4,
        "the client calls the address added back",
        async || calls_per_ip(&echo, 6).await.contains_key("127.0.0.3"),
    )
    .await;
    for instance in instances {
        instance.stop().await.expect("stops");
    }
}

#[cfg_attr(
    not(have_dnsmasq),
    ignore = "needs dnsmasq: apt-get install dnsmasq-base"
)]
#[tokio::test]
async fn srv_records_give_one_node_per_target_and_port_with_their_weight_and_priority() {
    let spans = Spans::default();
    let start = |registry: DnsRegistry| {
        let service = Service::builder("echo")
            .registry(registry)
            .instrumentation(spans.instrumentation())
            .build();
        echo::register_echo_handler(&service, Echo::default()).expect("registered");
        async move { service.start().await.expect("starts") }
    };
    let placeholder = DnsRegistry::srv().name_server("127.0.0.1:9".parse().unwrap());
    let first = start(placeholder.clone()).await;
    let second = start(placeholder).await;
    let ports = [first.local_addr().port(), second.local_addr().port()];
    let srv = [
        // _service._proto.name,target,port,priority,weight
        format!("_grpc._tcp.echo.test,one.test,{},0,30", ports[0]),
        format!("_grpc._tcp.echo.test,two.test,{},1,70", ports[1]),
        // A target with no address is left out.
        "_grpc._tcp.echo.test,nowhere.test,9,0,5".to_owned(),
    ];
    let names = "127.0.0.1 one.test\n127.0.0.1 two.test\n";
    let dns = Dnsmasq::start(names, &srv, 60).await;
    let registry = DnsRegistry::srv()
        .name_server(dns.address())
        .map_name(|service| format!("_grpc._tcp.{service}"));

    let mut nodes = registry.lookup("echo.test").await.expect("dnsmasq answers");
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = vec![
        Node::new(
            format!("127.0.0.1:{}", ports[0]),
            format!("127.0.0.1:{}", ports[0]),
        )
        .with_metadata(WEIGHT, "30")
        .with_metadata(SRV_PRIORITY, "0"),
        Node::new(
            format!("127.0.0.1:{}", ports[1]),
            format!("127.0.0.1:{}", ports[1]),
        )
        .with_metadata(WEIGHT, "70")
        .with_metadata(SRV_PRIORITY, "1"),
    ];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(nodes, expected);

    // Both are called, each on its own port.
    let echo = round_robin_client(registry, "echo.test");
    let mut answered = Vec::new();
    for _ in 0..10 {
        let mut call = micro_otel::Request::new(request("which port?"));
        let reply = micro_otel::client::ReplyMetadata::capture(&mut call);
        echo.unary(call).await.expect("the call succeeds");
        let port: u16 = reply
            .get()
            .and_then(|md| md.get("x-echo-port")?.to_str().ok()?.parse().ok())
            .expect("the echo service names its port");
        answered.push(port);
    }
    answered.sort_unstable();
    answered.dedup();
    let mut both = ports.to_vec();
    both.sort_unstable();
    assert_eq!(answered, both);
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[cfg_attr(
    not(have_dnsmasq),
    ignore = "needs dnsmasq: apt-get install dnsmasq-base"
)]
#[tokio::test]
async fn a_name_with_no_records_has_no_nodes_and_its_watch_starts_empty() {
    let dns = Dnsmasq::start(&hosts("other.test", &["127.0.0.1"]), &[], 1).await;
    for registry in [
        dns.a_records(80),
        DnsRegistry::srv().name_server(dns.address()),
    ] {
        assert!(
            registry
                .lookup("echo.test")
                .await
                .expect("NXDOMAIN")
                .is_empty()
        );
        let mut watch = registry.watch("echo.test");
        let first = next_change(&mut watch).await;
        assert_eq!(first, Change::default(), "{registry:?}");
    }
}

#[cfg_attr(
    not(have_dnsmasq),
    ignore = "needs dnsmasq: apt-get install dnsmasq-base"
)]
#[tokio::test]
async fn a_watch_asks_again_when_the_ttl_runs_out_and_no_sooner_than_the_minimum_interval() {
    let window = Duration::from_millis(3500);
    let watch_for = async |ttl: u32, min_interval: Duration| -> usize {
        let dns = Dnsmasq::start(&hosts("echo.test", &["127.0.0.1"]), &[], ttl).await;
        let registry = dns.a_records(80).min_interval(min_interval);
        let mut watch = registry.watch("echo.test");
        assert_eq!(next_change(&mut watch).await.nodes.len(), 1);
        let before = dns.queries("A", "echo.test");
        // Nothing changes: the watch only asks.
        assert!(tokio::time::timeout(window, watch.next()).await.is_err());
        dns.queries("A", "echo.test") - before
    };
    // A 1 s TTL with a 50 ms minimum: about once a second, not twenty times.
    let (by_ttl, by_minimum) = tokio::join!(
        watch_for(1, Duration::from_millis(50)),
        // A 0 s TTL (not to be cached) with a 500 ms minimum: about twice a second.
        watch_for(0, Duration::from_millis(500)),
    );
    eprintln!("in {window:?}: {by_ttl} queries with a 1 s TTL, {by_minimum} with a 0 s TTL");
    assert!((2..=4).contains(&by_ttl), "{by_ttl} queries");
    assert!((5..=8).contains(&by_minimum), "{by_minimum} queries");
}

#[tokio::test]
async fn a_name_server_that_does_not_answer_is_unavailable_naming_it_and_the_name_quickly() {
    // A port nobody listens on, and one whose socket never answers.
    let closed = free_udp_and_tcp_port();
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("bound").port();
    let timeout = Duration::from_millis(300);
    for port in [closed, silent_port] {
        let server = format!("127.0.0.1:{port}");
        let registry = DnsRegistry::a_records(80)
            .name_server(server.parse().unwrap())
            .domain("test")
            .timeout(timeout);
        let unavailable = |e: RegistryError| {
            let RegistryError::Unavailable(why) = e else {
                panic!("not unavailable: {e}");
            };
            assert!(why.contains(&server) && why.contains("echo.test"), "{why}");
            why
        };
        let started = Instant::now();
        let why = unavailable(registry.lookup("echo").await.unwrap_err());
        let took = started.elapsed();
        eprintln!("{server}: {why} (after {took:?})");
        assert!(took < timeout * 3, "took {took:?}");

        let started = Instant::now();
        let mut watch = registry.watch("echo");
        unavailable(watch.next().await.expect("one item").unwrap_err());
        assert!(watch.next().await.is_none(), "a failed watch ends");
        assert!(started.elapsed() < timeout * 3);
    }
    drop(silent);
}
