//! TLS with rustls (the `tls` feature): what a client trusts and the identity it presents
//! ([`ClientTls`]). PEM is checked when it is read, so a wrong file is named at start-up
//! rather than at the first handshake.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file or PEM text that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct TlsError {
    what: String,
    reason: String,
}

impl TlsError {
    fn new(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// What was refused: a file's path, or which PEM text.
    pub fn what(&self) -> &str {
        &self.what
    }
}

/// PEM text, and where it came from (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pem {
    origin: String,
    text: Vec<u8>,
}

impl Pem {
    fn read(path: &Path, kind: &str) -> Result<Self, TlsError> {
        let origin = format!("{kind} {}", path.display());
        let text = std::fs::read(path).map_err(|e| TlsError::new(&origin, e))?;
        Ok(Self { origin, text })
    }

    fn given(text: impl Into<Vec<u8>>, kind: &str) -> Self {
        Self {
            origin: format!("{kind} (PEM)"),
            text: text.into(),
        }
    }

    /// Every certificate in it; at least one.
    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certificates = CertificateDer::pem_slice_iter(&self.text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::new(&self.origin, e))?;
        if certificates.is_empty() {
            return Err(TlsError::new(
                &self.origin,
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            ));
        }
        Ok(certificates)
    }

    /// Its private key, one rustls can sign with.
    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let key = PrivateKeyDer::from_pem_slice(&self.text).map_err(|e| {
            TlsError::new(
                &self.origin,
                format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
            )
        })?;
        provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| TlsError::new(&self.origin, e))?;
        Ok(key)
    }
}

/// A certificate chain and its private key, both checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPair {
    chain: Pem,
    key: Pem,
}

impl KeyPair {
    fn new(chain: Pem, key: Pem) -> Result<Self, TlsError> {
        chain.certificates()?;
        key.private_key()?;
        Ok(Self { chain, key })
    }

    fn tonic(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.chain.text, &self.key.text)
    }
}

/// The crypto provider every TLS config here is built with (ring, as tonic's `tls-ring`),
/// named explicitly so another provider elsewhere in the build cannot make rustls guess.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a client trusts and, for mutual TLS, the certificate it presents.
///
/// [`ClientTls::new`] trusts the system's roots; [`ClientTls::ca_file`] trusts only the
/// given certificates instead (a private CA).
///
/// ```
/// # fn main() -> Result<(), micro_otel::tls::TlsError> {
/// use micro_otel::tls::ClientTls;
/// let tls = ClientTls::new().server_name("users.internal");
/// # let _ = tls; Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    roots: Option<Pem>,
    identity: Option<KeyPair>,
    server_name: Option<String>,
}

impl ClientTls {
    /// Trusts the system's root certificates, presents no certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts only the certificates in the PEM file at `path`.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self, TlsError> {
        self.ca(Pem::read(path.as_ref(), "CA certificates")?)
    }

    /// Trusts only the certificates in `pem`.
    pub fn ca_pem(self, pem: impl Into<Vec<u8>>) -> Result<Self, TlsError> {
        self.ca(Pem::given(pem, "CA certificates"))
    }

    fn ca(mut self, roots: Pem) -> Result<Self, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        for certificate in roots.certificates()? {
            store
                .add(certificate)
                .map_err(|e| TlsError::new(&roots.origin, e))?;
        }
        self.roots = Some(roots);
        Ok(self)
    }

    /// Presents the certificate chain and private key in these PEM files (mutual TLS).
    pub fn identity_files(
        mut self,
        certificate: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        self.identity = Some(KeyPair::new(
            Pem::read(certificate.as_ref(), "client certificate")?,
            Pem::read(key.as_ref(), "client key")?,
        )?);
        Ok(self)
    }

    /// Presents the certificate chain and private key in this PEM text (mutual TLS).
    pub fn identity_pem(
        mut self,
        certificate: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, TlsError> {
        self.identity = Some(KeyPair::new(
            Pem::given(certificate, "client certificate"),
            Pem::given(key, "client key"),
        )?);
        Ok(self)
    }

    /// Checks the server's certificate against `name` rather than the host it connects to.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// As tonic's channel configuration.
    pub(crate) fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let mut config = tonic::transport::ClientTlsConfig::new();
        config = match &self.roots {
            Some(roots) => {
                config.ca_certificate(tonic::transport::Certificate::from_pem(&roots.text))
            }
            None => config.with_native_roots(),
        };
        if let Some(identity) = &self.identity {
            config = config.identity(identity.tonic());
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }

    /// As a rustls client configuration (for clients other than tonic's).
    #[cfg(feature = "otlp")]
    pub(crate) fn rustls(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        match &self.roots {
            Some(roots) => {
                store.add_parsable_certificates(roots.certificates()?);
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(native.certs);
                if store.is_empty() {
                    return Err(TlsError::new(
                        "the system's root certificates",
                        "none found; give the CA certificates explicitly",
                    ));
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("TLS versions", e))?
            .with_root_certificates(store);
        Ok(match &self.identity {
            Some(pair) => builder
                .with_client_auth_cert(pair.chain.certificates()?, pair.key.private_key()?)
                .map_err(|e| TlsError::new(&pair.chain.origin, e))?,
            None => builder.with_no_client_auth(),
        })
    }

    /// The name the server's certificate must carry, when set.
    #[cfg(feature = "otlp")]
    pub(crate) fn checked_server_name(
        &self,
    ) -> Result<Option<rustls::pki_types::ServerName<'static>>, TlsError> {
        self.server_name
            .as_ref()
            .map(|name| {
                rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| TlsError::new(format!("server name {name:?}"), e))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_a_certificate_is_refused_naming_it() {
        let error = ClientTls::new().ca_pem("hello").unwrap_err();
        assert_eq!(error.what(), "CA certificates (PEM)");
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
    }

    #[test]
    fn a_missing_file_is_refused_naming_its_path() {
        let error = ClientTls::new().ca_file("/nonexistent/ca.pem").unwrap_err();
        assert_eq!(error.what(), "CA certificates /nonexistent/ca.pem");
    }

    #[test]
    fn a_key_that_is_not_a_key_is_refused() {
        let error = ClientTls::new()
            .identity_pem(certificate(), certificate())
            .unwrap_err();
        assert_eq!(error.what(), "client key (PEM)");
        assert!(error.to_string().contains("private key"), "{error}");
    }

    #[test]
    fn a_valid_certificate_is_accepted() {
        let tls = ClientTls::new().ca_pem(certificate()).unwrap();
        assert!(tls.roots.is_some());
    }

    /// A self-signed certificate for `localhost`.
    fn certificate() -> String {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        made.cert.pem()
    }
}
