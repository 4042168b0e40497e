//! Real-world proto corpora for tests and benchmarks: the `.proto` files that the
//! `googleapis-common-protos` package on PyPI ships.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A folder of protos (also the include path) and the files in it, relative and sorted.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Name for reports.
    pub name: String,
    /// Include path.
    pub root: PathBuf,
    /// Proto files relative to `root`.
    pub files: Vec<String>,
}

/// Downloads (once, with pip) and unpacks googleapis-common-protos under `root`.
pub fn googleapis(root: &Path) -> anyhow::Result<Corpus> {
    if !root.join("google").exists() {
        std::fs::create_dir_all(root)?;
        let download = root.join("wheel");
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "googleapis-common-protos",
                "-d",
            ])
            .arg(&download)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "pip download googleapis-common-protos failed"
        );
        let script = "import sys, zipfile, glob\nfor w in glob.glob(sys.argv[1] + '/*.whl'):\n    z = zipfile.ZipFile(w)\n    for n in z.namelist():\n        if n.endswith('.proto'):\n            z.extract(n, sys.argv[2])\n";
        let status = Command::new("python3")
            .args(["-c", script])
            .arg(&download)
            .arg(root)
            .status()?;
        anyhow::ensure!(status.success(), "extracting the wheel failed");
    }
    let mut files = Vec::new();
    collect(root, root, &mut files);
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no .proto files in {}", root.display());
    Ok(Corpus {
        name: format!("googleapis-common-protos ({} files)", files.len()),
        root: root.to_path_buf(),
        files,
    })
}

/// Every `.proto` under `dir`, relative to `root`.
pub fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(
                path.strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
            );
        }
    }
}
