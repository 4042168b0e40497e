//! TLS for the tests: a private CA with a server and a client certificate, made with rcgen
//! and written as PEM files, and a TLS-terminating proxy that puts a plain-text server (a
//! collector) behind TLS, mutual or not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA, a server certificate for `localhost` and `127.0.0.1`, and a client certificate
/// (common name `test-client`), as PEM files in a folder of their own.
pub struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    /// Makes them.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "micro-otel test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a key"))
            .expect("the CA certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("ca.pem written");
        for (name, alt_names, common_name) in [
            (
                "server",
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
                "localhost",
            ),
            ("client", vec!["test-client".to_owned()], "test-client"),
        ] {
            let key = KeyPair::generate().expect("a key");
            let mut params = CertificateParams::new(alt_names).expect("parameters");
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            let certificate = params.signed_by(&key, &ca).expect("signed by the CA");
            std::fs::write(dir.path().join(format!("{name}.pem")), certificate.pem())
                .expect("certificate written");
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem())
                .expect("key written");
        }
        Self { dir }
    }

    /// A file of the folder: `ca.pem`, `server.pem`, `server.key`, `client.pem`,
    /// `client.key`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A rustls server configuration with the server certificate, offering h2 and
    /// HTTP/1.1, and requiring a client certificate from the CA when `mutual`.
    pub fn server_config(&self, mutual: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = if mutual {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(certificates(&self.path("ca.pem")));
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::from_pem_file(self.path("server.key")).expect("the server key");
        let mut config = builder
            .with_single_cert(certificates(&self.path("server.pem")), key)
            .expect("the server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Default for Certificates {
    fn default() -> Self {
        Self::new()
    }
}

fn certificates(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("a PEM file")
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// Accepts TLS on a free 127.0.0.1 port and relays each connection's plain bytes to
/// `upstream`. Stops when dropped.
pub struct TlsProxy {
    address: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    /// Starts relaying to `upstream` with `config`.
    pub async fn start(upstream: SocketAddr, config: Arc<rustls::ServerConfig>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("its address");
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (handshakes, refused) = (Arc::default(), Arc::default());
        let counts: (Arc<AtomicUsize>, Arc<AtomicUsize>) =
            (Arc::clone(&handshakes), Arc::clone(&refused));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counts) = (acceptor.clone(), counts.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        counts.1.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    counts.0.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Self {
            address,
            handshakes,
            refused,
            task,
        }
    }

    /// `https://localhost:PORT`.
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.address.port())
    }

    /// Connections whose handshake succeeded.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Connections whose handshake failed (no or a wrong client certificate...).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
