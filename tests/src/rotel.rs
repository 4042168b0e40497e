//! A real OpenTelemetry collector per test: `rotel` (from PyPI, in a venv under the target
//! folder), receiving OTLP over gRPC and HTTP on free 127.0.0.1 ports and forwarding all three
//! signals over OTLP/gRPC to a [`Receiver`](crate::otlp::Receiver), where the test reads what
//! arrived. Killed when dropped; stopped and started again to play a collector that goes away.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::free_ports;
use crate::harness::missing;

/// A running rotel, forwarding to one receiver.
pub struct Rotel {
    agent: PathBuf,
    child: Option<Child>,
    grpc_port: u16,
    http_port: u16,
    forward_to: String,
    log: PathBuf,
}

impl Rotel {
    /// Starts rotel forwarding to `forward_to` (a receiver's `http://` endpoint); `venvs` is
    /// the test's `CARGO_TARGET_TMPDIR`. Waits until it accepts connections.
    pub fn start(venvs: &str, forward_to: &str) -> Self {
        let python = crate::python::venv(venvs, "rotel-venv", &["rotel"], "import rotel");
        let dir = Command::new(&python)
            .args([
                "-c",
                "import rotel, os; print(os.path.dirname(rotel.__file__))",
            ])
            .output()
            .expect("python runs");
        let agent = PathBuf::from(String::from_utf8_lossy(&dir.stdout).trim()).join("rotel-agent");
        if !agent.exists() {
            missing(&format!("rotel-agent not found at {}", agent.display()));
        }
        let (grpc_port, http_port) = free_ports();
        let mut rotel = Self {
            agent,
            child: None,
            grpc_port,
            http_port,
            forward_to: forward_to.to_owned(),
            log: std::path::Path::new(venvs).join(format!("rotel-{grpc_port}.log")),
        };
        rotel.spawn();
        rotel
    }

    /// `http://127.0.0.1:PORT` of its OTLP/gRPC receiver.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:PORT` of its OTLP/HTTP receiver (the base: `/v1/traces`...).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the agent (again) on the same ports, and waits until it listens.
    pub fn spawn(&mut self) {
        let child = Command::new(&self.agent)
            .args(["start", "--otlp-grpc-endpoint"])
            .arg(format!("127.0.0.1:{}", self.grpc_port))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .args(["--exporter", "otlp", "--otlp-exporter-protocol", "grpc"])
            .args(["--otlp-exporter-endpoint", &self.forward_to])
            .stdout(log(&self.log))
            .stderr(log(&self.log))
            .spawn()
            .unwrap_or_else(|e| missing(&format!("rotel-agent did not start: {e}")));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.grpc_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rotel did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the agent logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the agent (the collector goes down).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Appends to the agent's log file (or discards, if it cannot be opened).
fn log(path: &std::path::Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

impl Drop for Rotel {
    fn drop(&mut self) {
        self.stop();
    }
}
