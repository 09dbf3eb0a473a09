//! `wss://` for the runtimes: rustls on the ring provider. Clients trust the web's
//! certificate authorities (webpki-roots) unless told otherwise; servers take a certificate
//! chain and a private key in PEM files.

use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn read_certificates(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certificates: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(tls_error(format!("{}: no PEM certificate in it", path.display())));
    }
    Ok(certificates)
}

/// What a client trusts when it connects to a `wss://` URL.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// The web's certificate authorities, as compiled into webpki-roots (the default).
    pub fn webpki_roots() -> Self {
        // Built once: a root store of ~150 authorities is not free to assemble.
        static DEFAULT: OnceLock<ClientTls> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                ClientTls::trusting(roots).expect("ring supports the default protocol versions")
            })
            .clone()
    }

    /// Trust only the certificates in the PEM file at `path` (a private authority, or a
    /// server's self-signed certificate).
    pub fn with_root_certificates(path: impl AsRef<Path>) -> io::Result<Self> {
        let mut roots = RootCertStore::empty();
        for certificate in read_certificates(path.as_ref())? {
            roots.add(certificate).map_err(tls_error)?;
        }
        Self::trusting(roots)
    }

    /// Any rustls client configuration (client certificates, another provider...).
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        ClientTls { config }
    }

    fn trusting(roots: RootCertStore) -> io::Result<Self> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls { config: Arc::new(config) })
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

impl Default for ClientTls {
    fn default() -> Self {
        Self::webpki_roots()
    }
}

/// A server's TLS identity: it then serves `wss://` only.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// The certificate chain (leaf first) and the private key (PKCS#8, PKCS#1 or SEC1), in
    /// PEM files.
    pub fn from_pem_files(
        certificate_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> io::Result<Self> {
        let chain = read_certificates(certificate_chain.as_ref())?;
        let key_path = private_key.as_ref();
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| tls_error(format!("{}: {e}", key_path.display())))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(tls_error)?;
        Ok(ServerTls { config: Arc::new(config) })
    }

    /// Any rustls server configuration (client authentication, certificate resolvers...).
    pub fn from_rustls(config: Arc<ServerConfig>) -> Self {
        ServerTls { config }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

/// Where a client connects: a `ws://` or `wss://` URL, and what it trusts for `wss://`
/// ([`ClientTls::webpki_roots`] unless [`with_tls`](ServerUrl::with_tls) says otherwise).
/// Every client constructor takes a plain URL string too.
#[derive(Clone, Debug)]
pub struct ServerUrl {
    url: String,
    tls: Option<ClientTls>,
}

impl ServerUrl {
    /// `url`, with the default trust.
    pub fn new(url: impl Into<String>) -> Self {
        ServerUrl { url: url.into(), tls: None }
    }

    /// Trust `tls` for `wss://`.
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// What `wss://` trusts.
    pub fn tls(&self) -> ClientTls {
        self.tls.clone().unwrap_or_default()
    }
}

impl From<&str> for ServerUrl {
    fn from(url: &str) -> Self {
        ServerUrl::new(url)
    }
}

impl From<String> for ServerUrl {
    fn from(url: String) -> Self {
        ServerUrl::new(url)
    }
}

impl From<&String> for ServerUrl {
    fn from(url: &String) -> Self {
        ServerUrl::new(url.as_str())
    }
}
