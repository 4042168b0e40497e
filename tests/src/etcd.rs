//! A real etcd per test: started on free 127.0.0.1 ports in a temporary folder (Debian
//! `etcd-server`, installed by `.ci/run`), killed when dropped. The tests that start one
//! are ignored where the build finds no etcd (`tools.rs`), and fail without it in CI.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use micro_otel::discovery::EtcdRegistry;

use crate::harness::missing;

/// An etcd server of one test, killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd on free ports and waits until it answers.
    pub async fn start() -> Self {
        if Command::new("etcd").arg("--version").output().is_err() {
            missing("etcd not found; `apt-get install etcd-server`");
        }
        let (client_port, peer_port) = free_ports();
        let mut etcd = Self {
            child: None,
            dir: tempfile::tempdir().expect("a temporary folder"),
            client_port,
            peer_port,
        };
        etcd.spawn().await;
        etcd
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// A registry connected to this etcd.
    pub async fn registry(&self) -> EtcdRegistry {
        EtcdRegistry::connect([self.endpoint()])
            .await
            .expect("the endpoint is well formed")
    }

    /// A plain etcd client, to look behind the registry.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("the endpoint is well formed")
    }

    /// Starts the server (on this etcd's ports and data folder) and polls until it answers.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("log file");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "--listen-client-urls",
                &self.endpoint(),
                "--advertise-client-urls",
                &self.endpoint(),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", self.peer_port),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);

        let started = Instant::now();
        let client = self.client().await;
        loop {
            let mut client = client.clone();
            let status = tokio::time::timeout(Duration::from_secs(1), client.status()).await;
            if let Ok(Ok(_)) = status {
                eprintln!("etcd ready in {:?}", started.elapsed());
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(30),
                "etcd did not come up (exit: {exited:?}); its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Kills the server and starts it again on the same ports with no data: everything,
    /// leases included, is lost.
    pub async fn restart_empty(&mut self) {
        self.stop();
        std::fs::remove_dir_all(self.data_dir()).expect("data folder removed");
        self.spawn().await;
    }

    /// The ids of the leases etcd holds.
    pub async fn leases(&self) -> Vec<i64> {
        let answer = self.client().await.leases().await.expect("leases listed");
        answer.leases().iter().map(|l| l.id()).collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two ports nothing listens on now.
pub fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = |l: &std::net::TcpListener| l.local_addr().expect("bound").port();
    (port(&a), port(&b))
}
