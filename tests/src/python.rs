//! Python from PyPI for the tests that talk to other stacks: a virtualenv per set of
//! packages, made once under the target folder and reused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::harness::missing;

/// The python of a venv under `dir` (the test's `CARGO_TARGET_TMPDIR`) named `name`, with
/// `packages` installed; `probe` is an import that shows they are there. Fails the test,
/// saying what went wrong, when python3, venv or pip do.
pub fn venv(dir: &str, name: &str, packages: &[&str], probe: &str) -> PathBuf {
    static MADE: Mutex<Option<HashMap<PathBuf, ()>>> = Mutex::new(None);
    let venv = Path::new(dir).join(name);
    let python = venv.join("bin").join("python");
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let made = made.get_or_insert_with(HashMap::new);
    if made.contains_key(&python) {
        return python;
    }
    let has = |python: &Path| {
        Command::new(python)
            .args(["-c", probe])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has(&python) {
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output();
        if !created.as_ref().is_ok_and(|o| o.status.success()) {
            missing(&format!("python3 -m venv failed: {created:?}"));
        }
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(packages)
            .output();
        if !installed.as_ref().is_ok_and(|o| o.status.success()) || !has(&python) {
            missing(&format!("pip install {packages:?} failed: {installed:?}"));
        }
    }
    made.insert(python.clone(), ());
    python
}

/// Runs `script` (from its standard input) with `python` and `args`; its standard output.
/// Fails the test with its standard error when it fails.
pub fn run(python: &Path, script: &str, args: &[&str]) -> String {
    use std::io::Write as _;
    let mut child = Command::new(python)
        .arg("-")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script written");
    let output = child.wait_with_output().expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
