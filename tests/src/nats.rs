//! A real `nats-server` with JetStream per test: started on a free 127.0.0.1 port with a
//! temporary store (Debian `nats-server`, installed by `.ci/run`), killed when dropped.
//! The tests that start one are ignored where the build finds no `nats-server`
//! (`tools.rs`), and fail without it in CI.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use micro_otel::broker::{JetStreamConfig, NatsBroker};

use crate::harness::missing;

/// A `nats-server` with JetStream of one test, killed when dropped.
pub struct Nats {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nats {
    /// Starts `nats-server -js` on a free port and waits until JetStream answers.
    pub async fn start() -> Self {
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            missing("nats-server not found; `apt-get install nats-server`");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let child = Self::spawn(dir.path(), port);
        let mut nats = Self { child, dir, port };
        nats.wait_ready().await;
        nats
    }

    /// Runs `nats-server` with JetStream on `port`, storing in (and logging to) `dir`.
    fn spawn(dir: &std::path::Path, port: u16) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("nats.log"))
            .expect("log file");
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("nats-server starts")
    }

    /// Polls until JetStream's API answers.
    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(client) = async_nats::connect(self.url()).await
                && client.request("$JS.API.INFO", "".into()).await.is_ok()
            {
                eprintln!("nats-server ready in {:?}", started.elapsed());
                return;
            }
            let exited = self.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(20),
                "nats-server did not come up (exit: {exited:?}); its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server and starts it again on the same port and store.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), self.port);
        self.wait_ready().await;
    }

    /// Where it listens: `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// A plain client, to look behind the broker.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("connects")
    }

    /// A core NATS broker on it.
    pub async fn core(&self) -> NatsBroker {
        NatsBroker::connect(self.url()).await.expect("connects")
    }

    /// A JetStream broker on it, with `config`.
    pub async fn jetstream(&self, config: JetStreamConfig) -> NatsBroker {
        NatsBroker::connect_jetstream(self.url(), config)
            .await
            .expect("connects and makes the streams")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
