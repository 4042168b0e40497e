// Included by the build scripts of `micro-otel-tests` and `user-example`: looks for the
// outside programs some tests drive and sets `have_<tool>` for each one found, so a test
// whose program is missing is `#[ignore]`d with the reason in cargo's own summary. With
// `CI=true` every `have_*` is set: there a missing program fails its tests. Installing a
// program reruns the build script (it watches the folders of `PATH`).

use std::path::Path;
use std::process::Command;

/// Tells whether a program is here.
type Probe = fn() -> bool;

/// `have_<name>`, and how to tell whether the program is here.
const TOOLS: &[(&str, Probe)] = &[
    ("etcd", || runs("etcd", &["--version"])),
    ("nats_server", || runs("nats-server", &["--version"])),
    ("rabbitmq", || {
        Path::new("/usr/sbin/rabbitmq-server").exists() && runs("epmd", &["-names"])
    }),
    ("dnsmasq", || {
        runs("dnsmasq", &["--version"]) || runs("/usr/sbin/dnsmasq", &["--version"])
    }),
    ("grpcurl", || runs("grpcurl", &["-version"])),
    ("python_venv", || {
        runs("python3", &["-c", "import venv, ensurepip"])
    }),
    ("netns", || {
        runs("ip", &["-V"]) && runs("timeout", &["--version"]) && runs("unshare", &["-n", "true"])
    }),
];

/// Whether `program args` runs and exits 0.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Prints the `have_*` cfgs and what reruns the build script.
fn detect_tools() {
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into()]) {
        if dir.is_dir() {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
    }
    let in_ci = std::env::var("CI").as_deref() == Ok("true");
    for (name, found) in TOOLS {
        println!("cargo::rustc-check-cfg=cfg(have_{name})");
        if in_ci || found() {
            println!("cargo::rustc-cfg=have_{name}");
        }
    }
}
