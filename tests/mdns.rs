//! The mDNS registry on real multicast DNS, only ever inside a private network namespace,
//! so no mDNS packet can leave this machine.
//!
//! Each test here is an outer test that re-runs this test binary under `unshare -n`
//! (a new network namespace holding nothing but its own loopback, set up for multicast)
//! to run one test of [`inside`], with [`INSIDE`] set. Those inner tests do nothing
//! without that marker, and before any mDNS they check that they are in another network
//! namespace than the outer test and that `lo` is its only interface. Where `unshare`,
//! `ip` or `timeout` is missing, or `unshare -n` is not permitted, the build ignores the
//! outer tests with the reason (`tools.rs`); in CI (`CI=true`) they run, and fail.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use micro_otel::call::Node;
use micro_otel::discovery::{MdnsRegistry, Registration, Registry};
use micro_otel_tests::discovery::{PutNode, eventually, ids, lookup, next_change};
use micro_otel_tests::harness::missing;

/// Set (to the outer test's network namespace) for the inner tests.
const INSIDE: &str = "MICRO_OTEL_MDNS_INSIDE";

/// Set for [`inside::serve_echo`], the server process of the two-process test.
const SERVE: &str = "MICRO_OTEL_MDNS_SERVE";

/// How long one inner test may take, namespace set-up included.
const INNER_LIMIT: &str = "120";

/// Sets up the new namespace's loopback for multicast, then runs test `$1` of binary `$0`.
const NAMESPACE_SETUP: &str = "set -e; \
    ip link set lo up; \
    ip link set lo multicast on; \
    ip route add 224.0.0.0/4 dev lo; \
    exec \"$0\" --exact \"$1\" --nocapture";

/// This process's network namespace, e.g. `net:[4026531840]`.
fn network_namespace() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .expect("/proc/self/ns/net is readable")
        .to_string_lossy()
        .into_owned()
}

/// The interfaces of this process's network namespace. Read from `/proc/self/net/dev`,
/// which shows the reader's namespace (`/sys/class/net` shows the namespace of whoever
/// mounted `/sys`).
fn interfaces() -> Vec<String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").expect("/proc/self/net/dev");
    dev.lines()
        .skip(2)
        .filter_map(|line| Some(line.split_once(':')?.0.trim().to_owned()))
        .collect()
}

/// Runs test `inner` of this binary in a private network namespace and fails if it fails.
fn in_private_network_namespace(inner: &str) {
    for tool in ["unshare", "ip", "timeout"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            missing(&format!(
                "`{tool}` not found; the mDNS tests need unshare, ip and timeout \
                 (util-linux, iproute2, coreutils)"
            ));
        }
    }
    match Command::new("unshare").args(["-n", "true"]).output() {
        Ok(probe) if probe.status.success() => {}
        probe => {
            let why = probe.map_or_else(
                |e| e.to_string(),
                |o| String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            );
            missing(&format!(
                "`unshare -n` is not permitted here ({why}); the mDNS tests need a private \
                 network namespace (root, or CAP_SYS_ADMIN)"
            ));
        }
    }

    let binary = std::env::current_exe().expect("the test binary's path");
    let started = Instant::now();
    let output = Command::new("timeout")
        .args([INNER_LIMIT, "unshare", "-n", "sh", "-c", NAMESPACE_SETUP])
        .arg(&binary)
        .arg(inner)
        .env(INSIDE, network_namespace())
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    eprintln!(
        "{inner} in a private network namespace took {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        started.elapsed()
    );
    assert!(output.status.success(), "{inner} failed: {}", output.status);
    assert!(
        stdout.contains(&format!("test {inner} ... ok")) && stdout.contains("1 passed"),
        "{inner} did not run"
    );
}

#[cfg_attr(
    not(have_netns),
    ignore = "needs unshare -n, ip and timeout (root, util-linux, iproute2)"
)]
#[test]
fn two_processes_find_each_other_and_call_by_service_name() {
    in_private_network_namespace("inside::two_processes_find_each_other");
}

#[cfg_attr(
    not(have_netns),
    ignore = "needs unshare -n, ip and timeout (root, util-linux, iproute2)"
)]
#[test]
fn a_deregistered_node_disappears_from_lookup_and_watch() {
    in_private_network_namespace("inside::a_deregistered_node_disappears");
}

#[cfg_attr(
    not(have_netns),
    ignore = "needs unshare -n, ip and timeout (root, util-linux, iproute2)"
)]
#[test]
fn metadata_round_trips_through_txt_and_oversized_metadata_is_refused() {
    in_private_network_namespace("inside::metadata_round_trips");
}

#[cfg_attr(
    not(have_netns),
    ignore = "needs unshare -n, ip and timeout (root, util-linux, iproute2)"
)]
#[test]
fn re_registering_an_unchanged_node_sends_no_packet() {
    in_private_network_namespace("inside::heartbeats_are_silent");
}

/// A long TTL (mDNS does not use it).
const LONG: Duration = Duration::from_secs(60);

/// A registry on loopback only.
fn registry() -> MdnsRegistry {
    MdnsRegistry::on_interfaces(["lo"])
}

/// The tests that run inside the private network namespace.
mod inside {
    use std::io::BufRead;
    use std::net::{Ipv4Addr, UdpSocket};
    use std::os::fd::FromRawFd;
    use std::sync::Arc;

    use micro_otel::discovery::RegistryError;
    use micro_otel::{Client, Service};
    use micro_otel_tests::harness::echo::{self, EchoClient, EchoRequest};
    use micro_otel_tests::harness::{Echo, Spans};

    use super::*;

    /// What the server process prints, then its address, once it serves.
    const SERVING: &str = "mdns-echo serving at";

    /// Whether this is an inner test run by the outer one; panics if the marker is set
    /// but this is not a private network namespace with only `lo`.
    fn in_private_network_namespace() -> bool {
        let Ok(outer) = std::env::var(INSIDE) else {
            return false;
        };
        assert_ne!(
            network_namespace(),
            outer,
            "{INSIDE} is set, but this is the outer network namespace: refusing to send mDNS"
        );
        assert_eq!(
            interfaces(),
            ["lo"],
            "this network namespace has other interfaces than lo: refusing to send mDNS"
        );
        true
    }

    /// The server process of [`two_processes_find_each_other`]: an echo service registered
    /// in mDNS, serving until its standard input closes.
    #[tokio::test]
    async fn serve_echo() {
        if std::env::var_os(SERVE).is_none() || !in_private_network_namespace() {
            return;
        }
        let spans = Spans::default();
        let service = Service::builder("echo")
            .registry(registry())
            .instrumentation(spans.instrumentation())
            .build();
        echo::register_echo_handler(&service, Echo::default()).expect("registered before start");
        let running = service.start().await.expect("starts and announces");
        println!("{SERVING} {}", running.node().address);
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await
            .expect("stdin read")
            .expect("stdin read");
        running.stop().await.expect("stops and says goodbye");
    }

    /// The port of the instance that answered one call.
    async fn answering_port(client: &EchoClient, message: &str) -> Result<u16, micro_otel::Status> {
        let mut call = micro_otel::Request::new(EchoRequest {
            message: message.into(),
            ..Default::default()
        });
        let reply = micro_otel::client::ReplyMetadata::capture(&mut call);
        let answer = client.unary(call).await?;
        assert_eq!(answer.message, message);
        let port = reply
            .get()
            .and_then(|md| md.get("x-echo-port")?.to_str().ok()?.parse().ok())
            .expect("the echo service names its port");
        Ok(port)
    }

    #[tokio::test]
    async fn two_processes_find_each_other() {
        if !in_private_network_namespace() {
            return;
        }
        let mut server = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "inside::serve_echo", "--nocapture"])
            .env(SERVE, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server process starts");
        let stdout = server.stdout.take().expect("piped");
        let (lines, mut from_server) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = lines.send(line);
            }
        });
        let started = Instant::now();
        let address = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), from_server.recv())
                .await
                .expect("the server serves within 30 s")
                .expect("the server prints its address");
            if let Some(address) = line.strip_prefix(SERVING) {
                break address.trim().to_owned();
            }
        };
        eprintln!(
            "the server process serves at {address} after {:?}",
            started.elapsed()
        );

        // Found by name through mDNS, with the metadata the service registers.
        let registry = registry();
        let found = eventually(Duration::from_secs(10), "the server is found", async || {
            !lookup(&registry, "echo").await.is_empty()
        })
        .await;
        eprintln!("looked up after {found:?}");
        let nodes = lookup(&registry, "echo").await;
        assert_eq!(nodes.len(), 1, "{nodes:?}");
        assert_eq!(nodes[0].address, address);
        assert!(nodes[0].id.starts_with("echo-"), "{}", nodes[0].id);
        assert_eq!(nodes[0].metadata["transport"], "grpc");
        assert_eq!(nodes[0].metadata["version"], "latest");

        // And called by name, by a client whose registry is mDNS.
        let client = Client::builder()
            .registry(Arc::new(registry.clone()))
            .build();
        let echo = EchoClient::new("echo", client);
        let port = answering_port(&echo, "hello across processes")
            .await
            .expect("the call reaches the other process");
        assert_eq!(port.to_string(), address.rsplit(':').next().unwrap());

        // The server stops: it says goodbye, and is gone from lookups.
        drop(server.stdin.take());
        let stopped = Instant::now();
        let status = tokio::task::spawn_blocking(move || server.wait())
            .await
            .unwrap()
            .expect("the server exits");
        assert!(status.success(), "the server process failed: {status}");
        let mut rest = Vec::new();
        while let Some(line) = from_server.recv().await {
            rest.push(line);
        }
        assert!(
            rest.iter()
                .any(|l| l.contains("test inside::serve_echo ... ok")),
            "the server stopped cleanly: {rest:?}"
        );
        eventually(
            Duration::from_secs(5),
            "the stopped server is gone",
            async || lookup(&registry, "echo").await.is_empty(),
        )
        .await;
        eprintln!(
            "gone from lookups {:?} after it was told to stop",
            stopped.elapsed()
        );
    }

    #[tokio::test]
    async fn a_deregistered_node_disappears() {
        if !in_private_network_namespace() {
            return;
        }
        let server = registry();
        let a = Node::new("svc-a", "127.0.0.1:5001").with_metadata("zone", "a");
        let b = Node::new("svc-b", "127.0.0.1:5002").with_metadata("zone", "b");
        let other = Node::new("other-c", "127.0.0.1:5003");
        server.put_node("svc", &a, LONG).await;
        server.put_node("svc", &b, LONG).await;
        server.put_node("svc-other", &other, LONG).await;

        // A lookup listens one browse window (1.5 s) and returns what answered.
        let client = registry();
        let found = eventually(
            Duration::from_secs(10),
            "both nodes are found",
            async || lookup(&client, "svc").await.len() == 2,
        )
        .await;
        eprintln!("both nodes found after {found:?}");
        assert_eq!(lookup(&client, "svc").await, [a.clone(), b.clone()]);
        assert_eq!(
            lookup(&client, "svc-other").await,
            std::slice::from_ref(&other)
        );
        let fresh = Instant::now();
        assert_eq!(lookup(&registry(), "svc").await, [a.clone(), b.clone()]);
        eprintln!("a lookup from a new registry took {:?}", fresh.elapsed());

        // A watch starts with the current nodes.
        let mut watch = client.watch("svc");
        let first = next_change(&mut watch).await;
        assert_eq!(ids(&first.nodes), ["svc-a", "svc-b"]);
        assert_eq!(ids(&first.added), ["svc-a", "svc-b"]);
        assert!(first.removed.is_empty());

        // Deregistering says goodbye: the node leaves the watch and lookups.
        let goodbye = Instant::now();
        server.deregister("svc", "svc-a").await.unwrap();
        let removed = next_change(&mut watch).await;
        eprintln!("the watch saw the goodbye after {:?}", goodbye.elapsed());
        assert_eq!(removed.nodes, std::slice::from_ref(&b));
        assert_eq!(removed.removed, std::slice::from_ref(&a));
        assert!(removed.added.is_empty());
        assert_eq!(lookup(&client, "svc").await, std::slice::from_ref(&b));
        assert_eq!(lookup(&registry(), "svc").await, std::slice::from_ref(&b));

        // Deregistering a node this registry never announced changes nothing.
        client.deregister("svc", "svc-b").await.unwrap();
        server.deregister("svc", "nobody").await.unwrap();
        assert_eq!(lookup(&client, "svc").await, std::slice::from_ref(&b));

        server.deregister("svc", "svc-b").await.unwrap();
        let last = next_change(&mut watch).await;
        assert!(last.nodes.is_empty());
        assert_eq!(last.removed, [b]);
        assert!(lookup(&client, "svc").await.is_empty());
        assert_eq!(
            lookup(&client, "svc-other").await,
            [other],
            "another service's node stays"
        );
    }

    /// The bytes `node`'s TXT record takes (each entry and its length byte).
    fn txt_size(service: &str, node: &Node) -> usize {
        let entry = |k: &str, v: &str| 1 + k.len() + 1 + v.len();
        entry("micro.service", service)
            + entry("micro.node", &node.id)
            + node
                .metadata
                .iter()
                .map(|(k, v)| entry(k, v))
                .sum::<usize>()
    }

    #[tokio::test]
    async fn metadata_round_trips() {
        if !in_private_network_namespace() {
            return;
        }
        let server = registry();
        let client = registry();
        let node = Node::new("meta-1", "127.0.0.1:5010")
            .with_metadata("zone", "eu-west-1")
            .with_metadata("Version", "2.1")
            .with_metadata("empty", "")
            .with_metadata("note", "a=b; spaces & ünïcødé")
            // The longest entry: 255 bytes.
            .with_metadata("blob", "x".repeat(255 - "blob=".len()));
        server.put_node("meta", &node, LONG).await;

        // The largest TXT record allowed, 1300 bytes, still goes through.
        let mut big = Node::new("meta-big", "127.0.0.1:5011");
        for k in ["k1", "k2", "k3", "k4"] {
            big = big.with_metadata(k, "y".repeat(255 - "k1=".len()));
        }
        let room = 1300 - txt_size("meta", &big);
        big = big.with_metadata("k5", "z".repeat(room - 1 - "k5=".len()));
        assert_eq!(txt_size("meta", &big), 1300);
        server.put_node("meta", &big, LONG).await;

        eventually(
            Duration::from_secs(10),
            "both nodes are found",
            async || lookup(&client, "meta").await.len() == 2,
        )
        .await;
        assert_eq!(
            lookup(&client, "meta").await,
            [node.clone(), big],
            "id, address and metadata round-trip exactly"
        );

        // Metadata that does not fit is refused, with why, and nothing is announced.
        let refused = |e: RegistryError| {
            let RegistryError::Invalid(why) = e else {
                panic!("not invalid: {e}");
            };
            why
        };
        let too_long = Node::new("meta-2", "127.0.0.1:5012").with_metadata("blob", "x".repeat(300));
        let why = refused(
            server
                .register(Registration::new("meta", &too_long, LONG))
                .await
                .unwrap_err(),
        );
        assert!(
            why.contains("meta-2")
                && why.contains("\"blob\"")
                && why.contains("305 bytes")
                && why.contains("255"),
            "{why}"
        );
        let mut too_much = Node::new("meta-3", "127.0.0.1:5013");
        for k in 0..6 {
            too_much = too_much.with_metadata(format!("k{k}"), "y".repeat(250));
        }
        let why = refused(
            server
                .register(Registration::new("meta", &too_much, LONG))
                .await
                .unwrap_err(),
        );
        assert!(why.contains("meta-3") && why.contains("1300"), "{why}");
        assert_eq!(
            ids(&lookup(&registry(), "meta").await),
            ["meta-1", "meta-big"],
            "the refused nodes were not announced"
        );

        // Changed metadata is announced again: the node is removed as it was and added
        // as it is.
        let mut watch = client.watch("meta");
        assert_eq!(next_change(&mut watch).await.nodes.len(), 2);
        let moved = node.clone().with_metadata("zone", "eu-central-1");
        server.put_node("meta", &moved, LONG).await;
        let changed = next_change(&mut watch).await;
        assert_eq!(changed.added, std::slice::from_ref(&moved));
        assert_eq!(changed.removed, [node]);
        assert!(lookup(&client, "meta").await.contains(&moved));
    }

    /// A second IPv4 mDNS listener on `lo`, as any other mDNS responder would be: port
    /// 5353 shared (SO_REUSEADDR and SO_REUSEPORT, as `mdns-sd` binds it), group
    /// 224.0.0.251 joined.
    fn mdns_listener() -> tokio::net::UdpSocket {
        // SAFETY: a new socket whose descriptor the UdpSocket owns from here on; the
        // options and the address are passed with their exact sizes.
        let socket = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let socket = UdpSocket::from_raw_fd(fd);
            let one: libc::c_int = 1;
            for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
                let set = libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    option,
                    (&raw const one).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
                assert_eq!(set, 0, "setsockopt: {}", std::io::Error::last_os_error());
            }
            let address = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 5353u16.to_be(),
                sin_addr: libc::in_addr { s_addr: 0 },
                sin_zero: [0; 8],
            };
            let bound = libc::bind(
                fd,
                (&raw const address).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            socket
        };
        socket
            .join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 251), &Ipv4Addr::LOCALHOST)
            .expect("joined the mDNS group on lo");
        socket.set_nonblocking(true).expect("non-blocking");
        tokio::net::UdpSocket::from_std(socket).expect("a tokio socket")
    }

    /// The packets `listener` receives until none comes for `quiet` (at most 20 s).
    async fn packets_until_quiet(listener: &tokio::net::UdpSocket, quiet: Duration) -> usize {
        let started = Instant::now();
        let mut buffer = [0; 9000];
        let mut packets = 0;
        while let Ok(received) = tokio::time::timeout(quiet, listener.recv(&mut buffer)).await {
            received.expect("recv");
            packets += 1;
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "mDNS never went quiet"
            );
        }
        packets
    }

    #[tokio::test]
    async fn heartbeats_are_silent() {
        if !in_private_network_namespace() {
            return;
        }
        // The only mDNS speaker here: nothing browses, so every packet is an announcement.
        let listener = mdns_listener();
        let server = registry();
        let quiet = Duration::from_secs(2);
        let node = Node::new("beat-1", "127.0.0.1:5020").with_metadata("zone", "a");

        server.put_node("beat", &node, LONG).await;
        let announced = packets_until_quiet(&listener, quiet).await;
        assert!(announced > 0, "registering sends probes and announcements");

        let beats = Instant::now();
        for _ in 0..20 {
            server.put_node("beat", &node, LONG).await;
        }
        let elapsed = beats.elapsed();
        let after_beats = packets_until_quiet(&listener, quiet).await;
        assert_eq!(
            after_beats, 0,
            "twenty unchanged re-registrations sent packets"
        );
        eprintln!("{announced} packets to announce; 0 for 20 heartbeats (in {elapsed:?})");

        // A change is announced.
        let changed = node.with_metadata("zone", "b");
        server.put_node("beat", &changed, LONG).await;
        let reannounced = packets_until_quiet(&listener, quiet).await;
        assert!(reannounced > 0, "a changed node is announced again");

        server.deregister("beat", "beat-1").await.unwrap();
        let goodbyes = packets_until_quiet(&listener, quiet).await;
        assert!(goodbyes > 0, "deregistering says goodbye");
        eprintln!("{reannounced} packets to re-announce a change, {goodbyes} to say goodbye");
    }
}
