//! Golden cases shared by the generator's tests: `tests/golden/<case>/**/*.proto`.

use std::path::{Path, PathBuf};

use protoc_gen_micro_otel::{GeneratedFile, configure};

/// One golden case: a folder of protos (also the include path) and its `expected/` output.
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    /// Proto files relative to `dir`, sorted.
    pub protos: Vec<PathBuf>,
}

impl Case {
    /// What the build.rs path generates for the case (with the include file `mod.rs`).
    pub fn generate(&self) -> Vec<GeneratedFile> {
        configure()
            .include_file("mod.rs")
            .generate(&self.protos, &[&self.dir])
            .unwrap_or_else(|e| panic!("case {}: {e}", self.name))
    }
}

pub fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

/// Every case, sorted by name.
pub fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(golden_root())
        .expect("tests/golden exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_dir())
        .map(|dir| {
            let mut protos = Vec::new();
            collect_protos(&dir, &dir, &mut protos);
            protos.sort();
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                dir,
                protos,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(cases.len() >= 7, "golden cases missing: {}", cases.len());
    cases
}

fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "expected") {
            collect_protos(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}
