//! The real protoc plugin path: `protoc --plugin=... --micro-otel_out=...` gives the same
//! bytes as the build.rs path (protox) for every golden case, reports errors cleanly, and
//! writes only the packages of the files protoc was given unless `include_imports=true`.
//!
//! protoc comes from apt in CI. Outside CI a missing protoc skips these tests loudly; inside
//! CI (`CI=true`) it fails them.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use protoc_gen_micro_otel::GeneratedFile;

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
        // micro-otel's custom options, which the build.rs path finds by itself.
        .arg(format!("-I{}", options_include().display()))
        .current_dir(include);
    if !opt.is_empty() {
        cmd.arg(format!("--micro-otel_opt={opt}"));
    }
    cmd.args(protos.iter().map(AsRef::as_ref));
    cmd.output().expect("running protoc")
}

/// The runtime crate's `proto/` folder, which holds `micro_otel/options.proto`.
fn options_include() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/proto")
}

#[test]
fn protoc_plugin_output_is_byte_identical_to_build_rs_output() {
    if !protoc_available() {
        return;
    }
    // The build.rs path generates imports too (as prost-build does); the plugin does only with
    // `include_imports=true`. Each case gives protoc all its protos, so the plugin must match
    // the build.rs bytes with and without the option (well-known types are never written).
    for case in common::cases() {
        let expected = case.generate();
        for opt in [
            "include_file=mod.rs",
            "include_file=mod.rs,include_imports=true",
        ] {
            let out = tempfile::tempdir().unwrap();
            let output = run_protoc(&case.dir, &case.protos, out.path(), opt);
            assert!(
                output.status.success(),
                "{} ({opt}): protoc failed: {}",
                case.name,
                String::from_utf8_lossy(&output.stderr)
            );
            assert_same_files(
                &written(out.path()),
                &expected,
                &format!("{} ({opt})", case.name),
            );
        }
    }
}

/// Asserts that two sets of files have the same names and bytes, without printing contents.
fn assert_same_files(actual: &[GeneratedFile], expected: &[GeneratedFile], what: &str) {
    let names = |files: &[GeneratedFile]| {
        let mut names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        names.sort();
        names
    };
    assert_eq!(names(actual), names(expected), "{what}: file set differs");
    for file in expected {
        let same = actual
            .iter()
            .any(|f| f.name == file.name && f.content == file.content);
        assert!(
            same,
            "{what}/{}: protoc and build.rs outputs differ",
            file.name
        );
    }
}

/// The files protoc wrote into `dir`.
fn written(dir: &Path) -> Vec<GeneratedFile> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|path| GeneratedFile {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            content: std::fs::read_to_string(&path).unwrap(),
        })
        .collect()
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

/// The file given to protoc in [`imports_fixture`].
const REQUESTED: &str = "shop/cart.proto";

/// Protos where [`REQUESTED`] imports a file of its own package (`shop/item.proto`), one of
/// another package with a service (`money/money.proto`), and a well-known type.
fn imports_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, source) in [
        (
            REQUESTED,
            "syntax = \"proto3\";\npackage shop;\nimport \"shop/item.proto\";\n\
             import \"money/money.proto\";\nimport \"google/protobuf/timestamp.proto\";\n\
             message Cart {\n  repeated Item items = 1;\n  money.Money total = 2;\n  \
             google.protobuf.Timestamp at = 3;\n}\n\
             service Carts { rpc Get(Cart) returns (Cart); }\n",
        ),
        (
            "shop/item.proto",
            "syntax = \"proto3\";\npackage shop;\nmessage Item { string sku = 1; }\n",
        ),
        (
            "money/money.proto",
            "syntax = \"proto3\";\npackage money;\nmessage Money { int64 cents = 1; }\n\
             service Bank { rpc Get(Money) returns (Money); }\n",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, source).unwrap();
    }
    dir
}

fn names(files: &[GeneratedFile]) -> Vec<&str> {
    let mut names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    names.sort();
    names
}

#[test]
fn protoc_writes_only_the_packages_of_the_requested_files_by_default() {
    if !protoc_available() {
        return;
    }
    let dir = imports_fixture();
    let out = tempfile::tempdir().unwrap();
    let output = run_protoc(dir.path(), &[REQUESTED], out.path(), "include_file=mod.rs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files = written(out.path());
    assert_eq!(names(&files), ["mod.rs", "shop.rs"]);
    let shop = &files.iter().find(|f| f.name == "shop.rs").unwrap().content;
    // The package's module holds its imported file too, or `Cart` would not compile.
    assert!(
        shop.contains("pub struct Item") && shop.contains("pub struct Cart"),
        "{shop}"
    );
    assert!(shop.contains("super::money::Money"), "{shop}");
    // The same as build.rs asked for the files given only.
    let build_rs = protoc_gen_micro_otel::configure()
        .include_imports(false)
        .include_file("mod.rs")
        .generate(&[REQUESTED], &[dir.path()])
        .unwrap();
    assert_same_files(&files, &build_rs, "include_imports=false");
}

#[test]
fn include_imports_also_writes_the_packages_of_imported_files() {
    if !protoc_available() {
        return;
    }
    let dir = imports_fixture();
    let out = tempfile::tempdir().unwrap();
    let output = run_protoc(
        dir.path(),
        &[REQUESTED],
        out.path(),
        "include_file=mod.rs,include_imports=true",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files = written(out.path());
    // Never the well-known types: prost maps them to prost-types.
    assert_eq!(names(&files), ["mod.rs", "money.rs", "shop.rs"]);
    let money = &files.iter().find(|f| f.name == "money.rs").unwrap().content;
    assert!(money.contains("pub trait BankHandler"), "{money}");
    // The same as build.rs, which generates imports by default.
    let build_rs = protoc_gen_micro_otel::configure()
        .include_file("mod.rs")
        .generate(&[REQUESTED], &[dir.path()])
        .unwrap();
    assert_same_files(&files, &build_rs, "include_imports=true");
}

#[test]
fn a_bad_include_imports_value_is_reported_by_protoc_with_the_option() {
    if !protoc_available() {
        return;
    }
    let dir = imports_fixture();
    let out = tempfile::tempdir().unwrap();
    let output = run_protoc(dir.path(), &[REQUESTED], out.path(), "include_imports=yes");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("option `include_imports=yes`: expected true or false"),
        "{stderr}"
    );
    assert!(written(out.path()).is_empty());
}

#[test]
fn the_plugin_answers_file_to_generate_without_protoc_too() {
    // The same request protoc would send, built with protox, so this runs everywhere.
    let dir = imports_fixture();
    let mut compiler = protox::Compiler::new([dir.path()]).unwrap();
    compiler.include_imports(true).open_file(REQUESTED).unwrap();
    let mut request = prost_types::compiler::CodeGeneratorRequest {
        file_to_generate: vec![REQUESTED.into()],
        proto_file: compiler.file_descriptor_set().file,
        ..Default::default()
    };
    let answered = |request: &prost_types::compiler::CodeGeneratorRequest| {
        let response = protoc_gen_micro_otel::respond(request);
        assert_eq!(response.error, None);
        let mut names: Vec<String> = response.file.iter().map(|f| f.name().to_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(answered(&request), ["shop.rs"]);
    request.parameter = Some("include_imports=true".into());
    assert_eq!(answered(&request), ["money.rs", "shop.rs"]);
    request.parameter = Some("include_imports=maybe".into());
    let error = protoc_gen_micro_otel::respond(&request).error.unwrap();
    assert!(error.contains("`include_imports=maybe`"), "{error}");
}
