//! A child process of the benchmark: this binary again, in `serve` or `receive` mode.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child as Process, ChildStdin, ChildStdout, Command, Stdio};

use crate::usage::Usage;

/// A running child; it exits when dropped (its stdin closes).
pub struct Child {
    process: Process,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The addresses it printed as `listening …`.
    pub addresses: Vec<String>,
}

impl Child {
    /// Starts `bench ARGS…` and waits for its `listening` line.
    pub fn start(args: &[String]) -> anyhow::Result<Self> {
        let mut process = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = process.stdin.take();
        let mut stdout = BufReader::new(process.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addresses = line
            .strip_prefix("listening ")
            .ok_or_else(|| {
                anyhow::anyhow!("child {args:?} said {line:?} instead of `listening …`")
            })?
            .trim()
            .split(',')
            .map(str::to_owned)
            .collect();
        Ok(Self {
            process,
            stdin,
            stdout,
            addresses,
        })
    }

    /// The child's CPU, memory and allocations now.
    pub fn usage(&mut self) -> anyhow::Result<Usage> {
        let stdin = self.stdin.as_mut().expect("stdin open until drop");
        writeln!(stdin, "usage")?;
        stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Usage::decode(line.trim())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.process.wait();
    }
}
