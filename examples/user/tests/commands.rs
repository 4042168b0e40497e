//! The example's commands as a newcomer runs them: the demo, server and client as
//! processes talking over 127.0.0.1, and three servers sharing a client's calls through a
//! real etcd.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, bound_address, start_server};

#[test]
fn demo_prints_the_calls_and_a_connected_trace_tree() {
    let output = Command::new(BIN)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out = String::from_utf8(output.stdout).unwrap();
    assert!(out.contains("GetUser(99) -> Err(NotFound)"), "{out}");
    assert!(out.contains("ListUsers -> [\"Linus\"] next=\"\""), "{out}");
    // One trace rooted at the demo span, with client -> server -> handler spans indented.
    assert_eq!(out.matches("\ntrace ").count(), 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let client = lines
        .iter()
        .position(|l| l.starts_with("    user.User/CreateUser [client]"))
        .expect(&out);
    assert!(
        lines[client + 1].starts_with("      user.User/CreateUser [server]"),
        "{out}"
    );
    assert!(
        lines[client + 2..client + 4]
            .iter()
            .any(|l| l.starts_with("        Store.InsertUser [internal]")),
        "{out}"
    );
    // CreateUser publishes user.created; the demo's subscriber handles it in the same trace.
    let send = lines
        .iter()
        .position(|l| l.starts_with("        send user.created [producer]"))
        .expect(&out);
    assert!(
        lines[send + 1].starts_with("          process user.created [consumer]"),
        "{out}"
    );
    assert_eq!(
        out.matches("process user.created [consumer]").count(),
        3,
        "{out}"
    );
    // After the tree, the metrics it recorded: calls, errors, p50, p99 per method and side.
    let table = lines
        .iter()
        .position(|l| l.starts_with("method ") && l.ends_with("p99"))
        .expect(&out);
    let row = |method: &str, side: &str| {
        lines[table..]
            .iter()
            .find(|l| l.starts_with(method) && l.contains(side))
            .map(|l| l.split_whitespace().skip(2).take(2).collect::<Vec<_>>())
    };
    assert_eq!(
        row("user.User/CreateUser", "server"),
        Some(vec!["3", "0"]),
        "{out}"
    );
    assert_eq!(
        row("user.User/GetUser", "client"),
        Some(vec!["2", "1"]),
        "the NOT_FOUND is the caller's error: {out}"
    );
    assert_eq!(
        row("user.User/GetUser", "server"),
        Some(vec!["2", "0"]),
        "and not the server's: {out}"
    );
    // The watch stream the demo ends on purpose is no error.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("    user.User/WatchUsers [client]") && !l.contains("ERROR")),
        "{out}"
    );
}

#[test]
fn server_and_client_run_as_separate_processes() {
    let mut server = Command::new(BIN)
        .args(["server", "--address", "127.0.0.1:0"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let address = bound_address(&mut server);
    let client = Command::new(BIN)
        .args(["client", "--address", &address])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    let terminated = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let status = server.wait().unwrap();
    let mut server_out = String::new();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut server_out)
        .unwrap();

    let client_out = String::from_utf8(client.stdout).unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(client_out.contains("CreateUser -> id 1"), "{client_out}");
    assert!(client_out.contains("ListUsers -> 1 users"), "{client_out}");
    assert!(
        client_out.contains("user.User/GetUser [client]"),
        "{client_out}"
    );
    assert!(
        status.success(),
        "SIGTERM shuts the server down cleanly: {status:?}"
    );
    assert!(
        server_out.contains("user.User/CreateUser [server]"),
        "spans flushed at shutdown: {server_out}"
    );
}

#[test]
fn a_bad_micro_variable_stops_the_server_with_its_name() {
    let output = Command::new(BIN)
        .args(["server", "--address", "127.0.0.1:0"])
        .env("MICRO_SELECTOR", "fastest")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("MICRO_SELECTOR=\"fastest\": unknown selector"),
        "{stderr}"
    );
}

#[test]
fn client_calls_print_one_line_per_node_and_flags_win_over_variables() {
    let (mut server, address) = start_server(&[], &[]);
    let output = Command::new(BIN)
        .args([
            "client",
            "--address",
            &address,
            "--calls",
            "4",
            "--selector",
            "round_robin",
        ])
        .env("MICRO_SELECTOR", "fastest")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{address} 4\n")
    );
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn three_servers_and_a_client_spread_calls_through_etcd() {
    use micro_otel::discovery::Registry;
    let etcd = micro_otel_tests::etcd::Etcd::start().await;
    let endpoint = etcd.endpoint();
    let through_etcd = [
        "--registry",
        "etcd",
        "--registry-address",
        endpoint.as_str(),
    ];
    let mut servers: Vec<_> = (0..3).map(|_| start_server(&through_etcd, &[])).collect();
    let registry = etcd.registry().await;
    let ready = Instant::now() + Duration::from_secs(10);
    while registry.lookup("user.service").await.map_or(0, |n| n.len()) < 3 {
        assert!(Instant::now() < ready, "the servers did not all register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = Command::new(BIN)
        .args(["client", "--calls", "300", "--selector", "round_robin"])
        .args(through_etcd)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    for (server, _) in &mut servers {
        let _ = server.kill();
        let _ = server.wait();
    }
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut expected: Vec<String> = servers.iter().map(|(_, a)| format!("{a} 100")).collect();
    expected.sort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected, "{stdout}");
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test(flavor = "multi_thread")]
async fn with_micro_broker_nats_the_server_publishes_its_events_to_nats() {
    use futures_util::StreamExt;
    let nats = micro_otel_tests::nats::Nats::start().await;
    let mut created = nats
        .client()
        .await
        .subscribe("user.created")
        .await
        .expect("subscribed");
    let url = nats.url();
    let (mut server, address) = start_server(
        &[],
        &[("MICRO_BROKER", "nats"), ("MICRO_BROKER_ADDRESS", &url)],
    );
    let client = Command::new(BIN)
        .args(["client", "--address", &address])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), created.next())
        .await
        .expect("an event within 10 s")
        .expect("the subscription goes on");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let traceparent = event.headers.as_ref().and_then(|h| h.get("traceparent"));
    assert!(
        traceparent.is_some(),
        "the event carries its trace: {event:?}"
    );
}
