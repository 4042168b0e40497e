//! Golden files: each case under `tests/golden/<case>/` generates exactly its `expected/`
//! folder. `UPDATE_GOLDEN=1 cargo test` rewrites them. The `micro-otel-tests` crate compiles
//! every expected file, so the golden code is also checked by rustc and clippy.

mod common;

use std::collections::BTreeMap;

#[test]
fn generated_code_matches_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for case in common::cases() {
        let generated: BTreeMap<String, String> = case
            .generate()
            .into_iter()
            .map(|f| (f.name, f.content))
            .collect();
        let expected_dir = case.dir.join("expected");
        if update {
            let _ = std::fs::remove_dir_all(&expected_dir);
            std::fs::create_dir_all(&expected_dir).unwrap();
            for (name, content) in &generated {
                std::fs::write(expected_dir.join(name), content).unwrap();
            }
            continue;
        }
        let expected: BTreeMap<String, String> = std::fs::read_dir(&expected_dir)
            .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", expected_dir.display()))
            .map(|e| e.unwrap().path())
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        if generated.keys().ne(expected.keys()) {
            mismatches.push(format!(
                "{}: files {:?}, expected {:?}",
                case.name,
                generated.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>()
            ));
            continue;
        }
        for (name, content) in &generated {
            if &expected[name] != content {
                let line = content
                    .lines()
                    .zip(expected[name].lines())
                    .position(|(a, b)| a != b)
                    .map_or(0, |i| i + 1);
                mismatches.push(format!("{}/{name}: differs from line {line}", case.name));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "generated code differs from golden files (UPDATE_GOLDEN=1 to accept):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn every_generated_file_starts_with_the_generated_header() {
    for case in common::cases() {
        for file in case.generate() {
            assert!(
                file.content.starts_with(protoc_gen_micro_otel::HEADER),
                "{}/{}",
                case.name,
                file.name
            );
        }
    }
}
