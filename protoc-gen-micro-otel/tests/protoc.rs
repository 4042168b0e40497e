//! The real protoc plugin path: `protoc --plugin=... --micro-otel_out=...` gives the same
//! bytes as the build.rs path (protox) for every golden case, and reports errors cleanly.
//!
//! protoc comes from apt in CI. Outside CI a missing protoc skips these tests loudly; inside
//! CI (`CI=true`) it fails them.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const PLUGIN: &str = env!("CARGO_BIN_EXE_protoc-gen-micro-otel");

/// Whether protoc can be run; panics in CI when it cannot.
fn protoc_available() -> bool {
    let found = Command::new("protoc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "protoc is required in CI (install protobuf-compiler)"
        );
        eprintln!(
            "\n!!! SKIPPED: protoc not found on PATH; install protobuf-compiler to run this test !!!\n"
        );
    }
    found
}

fn run_protoc(include: &Path, protos: &[impl AsRef<Path>], out: &Path, opt: &str) -> Output {
    let mut cmd = Command::new("protoc");
    cmd.arg(format!("--plugin=protoc-gen-micro-otel={PLUGIN}"))
        .arg(format!("--micro-otel_out={}", out.display()))
        .arg(format!("-I{}", include.display()))
        .current_dir(include);
    if !opt.is_empty() {
        cmd.arg(format!("--micro-otel_opt={opt}"));
    }
    cmd.args(protos.iter().map(AsRef::as_ref));
    cmd.output().expect("running protoc")
}

#[test]
fn protoc_plugin_output_is_byte_identical_to_build_rs_output() {
    if !protoc_available() {
        return;
    }
    for case in common::cases() {
        let out = tempfile::tempdir().unwrap();
        let output = run_protoc(&case.dir, &case.protos, out.path(), "include_file=mod.rs");
        assert!(
            output.status.success(),
            "{}: protoc failed: {}",
            case.name,
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = case.generate();
        let mut written: Vec<String> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        written.sort();
        let mut names: Vec<String> = expected.iter().map(|f| f.name.clone()).collect();
        names.sort();
        assert_eq!(written, names, "{}: file set differs", case.name);
        for file in expected {
            let from_protoc = std::fs::read_to_string(out.path().join(&file.name)).unwrap();
            assert!(
                from_protoc == file.content,
                "{}/{}: protoc and build.rs outputs differ",
                case.name,
                file.name
            );
        }
    }
}

#[test]
fn unknown_option_is_reported_by_protoc_with_its_name() {
    if !protoc_available() {
        return;
    }
    let case = &common::cases()[0];
    let out = tempfile::tempdir().unwrap();
    let output = run_protoc(
        &case.dir,
        &case.protos,
        out.path(),
        "include_file=mod.rs,flavour=mint",
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown option `flavour`"), "{stderr}");
}

#[test]
fn proto3_optional_fields_are_accepted() {
    if !protoc_available() {
        return;
    }
    // protoc refuses plugins that do not declare proto3-optional support for such files.
    let dir = common::golden_root().join("well_known");
    let out = tempfile::tempdir().unwrap();
    let output = run_protoc(&dir, &["clock.proto"], out.path(), "");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let code = std::fs::read_to_string(out.path().join("clock.rs")).unwrap();
    assert!(code.contains("pub note: ::core::option::Option<::prost::alloc::string::String>"));
}

#[test]
fn plugin_rejects_input_that_is_not_a_request() {
    use std::io::Write;
    let mut child = Command::new(PLUGIN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\xff\xff\xff not protobuf")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CodeGeneratorRequest"), "{stderr}");
}
