//! Real-world protos: the googleapis common protos (from PyPI) generate code that, in a crate
//! of its own, builds warning-free under clippy and whose doc comments pass as doctests.
//!
//! Needs python3 with pip, PyPI and crates.io. Where the build finds no python3 with venv,
//! the test is ignored with the reason (`tools.rs`); a failed download fails it.

use std::path::{Path, PathBuf};
use std::process::Command;

use micro_otel_tests::corpus::googleapis;
use micro_otel_tests::harness::missing;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Writes a crate that generates `files` from `root` in its build.rs.
fn scratch_crate(dir: &Path, root: &Path, files: &[String]) -> std::io::Result<()> {
    let ws = workspace();
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"realworld\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
             [dependencies]\nmicro-otel = {{ path = {:?} }}\nprost = \"0.14\"\nprost-types = \"0.14\"\n\n\
             [build-dependencies]\nprotoc-gen-micro-otel = {{ path = {:?} }}\n\n[workspace]\n",
            ws.join("runtime"),
            ws.join("protoc-gen-micro-otel"),
        ),
    )?;
    std::fs::write(
        dir.join("build.rs"),
        format!(
            "fn main() {{\n    let files: &[&str] = &{files:?};\n    \
             protoc_gen_micro_otel::configure().include_file(\"mod.rs\").compile(files, &[{root:?}]).unwrap();\n}}\n"
        ),
    )?;
    std::fs::write(
        dir.join("src/lib.rs"),
        "//! Generated from real-world protos.\ninclude!(concat!(env!(\"OUT_DIR\"), \"/mod.rs\"));\n",
    )?;
    // Same dependency versions as the workspace.
    std::fs::copy(ws.join("Cargo.lock"), dir.join("Cargo.lock"))?;
    Ok(())
}

fn cargo(dir: &Path, target: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("running cargo");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[cfg_attr(
    not(have_python_venv),
    ignore = "needs python3 with venv: apt-get install python3-venv"
)]
#[test]
fn googleapis_common_protos_build_clippy_clean_with_passing_doctests() {
    let base = target_dir().join("realworld");
    let corpus = match googleapis(&base.join("corpus")) {
        Ok(corpus) => corpus,
        Err(e) => {
            missing(&format!("could not fetch googleapis-common-protos: {e}"));
        }
    };
    let dir = base.join("crate");
    scratch_crate(&dir, &corpus.root, &corpus.files).unwrap();
    let target = base.join("target");
    let (ok, log) = cargo(
        &dir,
        &target,
        &["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"],
    );
    assert!(ok, "{} did not build clippy-clean:\n{log}", corpus.name);
    let (ok, log) = cargo(&dir, &target, &["test", "--quiet", "--doc"]);
    assert!(ok, "doctests from {} failed:\n{log}", corpus.name);
}
