//! TLS between Tribune's processes, on rustls with the ring provider: what
//! a peer is trusted for ([`Trust`]: a CA file and roots learnt at run
//! time), the certificate this process presents ([`Identity`], replaced
//! on renewal without new connections failing), how a server is checked
//! ([`ServerCheck`]), and the connector tonic dials through
//! ([`TlsConnector`]). Servers accept with the same pieces
//! ([`server_config`]).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tribune_certs::{AgentRole, agent_identity, server_tls_name};

/// How long a connection may take to connect and finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM text or a name was not what it should be.
    #[error("{what}: {message}")]
    Pem {
        /// Which input.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused a certificate or key.
    #[error("{what}: {source}")]
    Rustls {
        /// Which input.
        what: &'static str,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The ring provider, built once: every handshake's verifier uses it.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Every certificate in a PEM text.
pub fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.into(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            message: "holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// A certificate chain and its key, ready to present.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs_from_pem(chain_pem, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: "private key".into(),
        message: e.to_string(),
    })?;
    let ck = CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Rustls {
        what: "certificate and key",
        source,
    })?;
    Ok(Arc::new(ck))
}

/// The CAs a process trusts: those of a file the operator gave it, and
/// those it learnt since (the servers' current roots: a rotation's new
/// root is trusted as soon as it is learnt). The store is rebuilt only
/// when the learnt roots change.
#[derive(Debug)]
pub struct Trust {
    fixed: Vec<CertificateDer<'static>>,
    learnt: RwLock<(u64, Vec<CertificateDer<'static>>)>,
    store: Mutex<(u64, Arc<RootCertStore>)>,
}

impl Trust {
    /// Trusts `fixed` (may be empty until roots are learnt).
    pub fn new(fixed: Vec<CertificateDer<'static>>) -> Arc<Self> {
        let store = Arc::new(build_store(&fixed, &[]));
        Arc::new(Trust {
            fixed,
            learnt: RwLock::new((0, Vec::new())),
            store: Mutex::new((0, store)),
        })
    }

    /// Trusts the CAs in the PEM file at `path`.
    pub fn from_file(path: &str) -> Result<Arc<Self>, TlsError> {
        let pem = std::fs::read_to_string(path).map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })?;
        Ok(Self::new(certs_from_pem(&pem, path)?))
    }

    /// Replaces the learnt roots; `version` changes whenever they do.
    pub fn learn(&self, version: u64, roots: Vec<CertificateDer<'static>>) {
        let mut l = self.learnt.write().unwrap_or_else(|e| e.into_inner());
        if l.0 != version {
            *l = (version, roots);
        }
    }

    /// The version of the learnt roots (0: none yet).
    pub fn learnt_version(&self) -> u64 {
        self.learnt.read().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The store to verify against now.
    pub fn store(&self) -> Arc<RootCertStore> {
        let l = self.learnt.read().unwrap_or_else(|e| e.into_inner());
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 != l.0 {
            *s = (l.0, Arc::new(build_store(&self.fixed, &l.1)));
        }
        s.1.clone()
    }
}

fn build_store(a: &[CertificateDer<'static>], b: &[CertificateDer<'static>]) -> RootCertStore {
    let mut store = RootCertStore::empty();
    for c in a.iter().chain(b) {
        if let Err(e) = store.add(c.clone()) {
            tracing::warn!(error = %e, "a trusted CA certificate was not usable");
        }
    }
    store
}

/// The certificate this process presents, replaced when it is renewed.
#[derive(Debug, Default)]
pub struct Identity {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl Identity {
    /// Presents `key` on every handshake from now on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    /// The certificate presented now, if any.
    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.get().is_some()
    }
}

/// What a server must prove besides a chain to a trusted CA.
#[derive(Clone, Debug)]
pub enum ServerCheck {
    /// The host (DNS name or IP) it was dialled at, as any TLS client checks.
    Dialled,
    /// A given name, whatever address was dialled (`server.dc1.tribune`).
    Name(ServerName<'static>),
    /// That it is a Tribune server of any datacenter of this trust: what
    /// servers check of each other, whatever address they dial.
    AnyServer,
}

impl ServerCheck {
    /// `name` when given (e.g. `server.dc1.tribune`), else the host dialled.
    pub fn named(name: Option<&str>) -> Result<Self, TlsError> {
        let Some(name) = name else {
            return Ok(ServerCheck::Dialled);
        };
        ServerName::try_from(name.to_string())
            .map(ServerCheck::Name)
            .map_err(|e| TlsError::Pem {
                what: format!("server name {name:?}"),
                message: e.to_string(),
            })
    }
}

#[derive(Debug)]
struct ServerVerifier {
    trust: Arc<Trust>,
    check: ServerCheck,
}

impl ServerVerifier {
    fn inner(&self) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        WebPkiServerVerifier::builder_with_provider(self.trust.store(), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = match &self.check {
            ServerCheck::Dialled => server_name.to_owned(),
            ServerCheck::Name(n) => n.clone(),
            ServerCheck::AnyServer => {
                let id = agent_identity(end_entity)
                    .filter(|i| i.role == AgentRole::Server)
                    .ok_or_else(|| {
                        rustls::Error::General("the peer's certificate is not a Tribune server's".into())
                    })?;
                ServerName::try_from(server_tls_name(&id.datacenter))
                    .map_err(|e| rustls::Error::General(e.to_string()))?
            }
        };
        self.inner()?
            .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes()
    }
}

/// Handshake signatures, checked the same way by both verifiers: with the
/// ring provider's algorithms, whatever the roots.
mod signatures {
    use rustls::client::danger::HandshakeSignatureValid;
    use rustls::pki_types::CertificateDer;
    use rustls::{DigitallySignedStruct, SignatureScheme};

    fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
        super::provider().signature_verification_algorithms
    }

    pub(super) fn tls12(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    pub(super) fn tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    pub(super) fn schemes() -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// A rustls client configuration: verify the server with `trust` and
/// `check`, present `identity` when the server asks and it holds one.
pub fn client_config(
    trust: Arc<Trust>,
    check: ServerCheck,
    identity: Option<Arc<Identity>>,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier { trust, check }));
    let mut config = match identity {
        Some(id) => builder.with_client_cert_resolver(id),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Checks client certificates against a [`Trust`] whose roots may change;
/// a client without one is let through to the application, which decides
/// what it may do (only some calls need no certificate).
#[derive(Debug)]
struct ClientVerifier {
    trust: Arc<Trust>,
}

impl ClientVerifier {
    fn inner(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        WebPkiClientVerifier::builder_with_provider(self.trust.store(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner()?.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes()
    }
}

/// A rustls server configuration presenting `identity`; with `clients`,
/// client certificates are asked for and verified against it.
pub fn server_config(identity: Arc<Identity>, clients: Option<Arc<Trust>>) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions");
    let builder = match clients {
        Some(trust) => builder.with_client_cert_verifier(Arc::new(ClientVerifier { trust })),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A tonic connector that dials TCP and does TLS itself, so that the
/// certificate presented and the roots trusted can change between
/// connections (tonic's own TLS settings are fixed per endpoint). Give
/// tonic an `http://` URI: the TLS is here.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    source: Option<IpAddr>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("source", &self.source)
            .finish()
    }
}

impl TlsConnector {
    /// Dials with `config`, from `source` when given.
    pub fn new(config: Arc<rustls::ClientConfig>, source: Option<IpAddr>) -> Self {
        TlsConnector { config, source }
    }

    /// Connects to `addr` (`HOST:PORT`) and completes a handshake, then
    /// drops the connection: for benchmarks and probes.
    pub async fn handshake(&self, addr: &str) -> Result<(), std::io::Error> {
        let uri: tonic::codegen::http::Uri = format!("http://{addr}")
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        self.clone().connect(uri).await.map(drop)
    }

    async fn connect(
        self,
        uri: tonic::codegen::http::Uri,
    ) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, std::io::Error> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let host = uri.host().ok_or_else(|| invalid(format!("{uri}: no host")))?;
        let port = uri.port_u16().ok_or_else(|| invalid(format!("{uri}: no port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let work = async {
            let tcp = match self.source {
                Some(ip) => {
                    let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
                        .await?
                        .next()
                        .ok_or_else(|| invalid(format!("{host}: no address")))?;
                    let sock = if addr.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    if ip.is_ipv4() == addr.is_ipv4() {
                        sock.bind(SocketAddr::new(ip, 0))?;
                    }
                    sock.connect(addr).await?
                }
                None => TcpStream::connect((host.as_str(), port)).await?,
            };
            tcp.set_nodelay(true)?;
            // The verifier decides what name is checked; this one is only
            // sent as SNI when it is a DNS name.
            let name = ServerName::try_from(host.clone()).map_err(|e| invalid(e.to_string()))?;
            tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(name, tcp)
                .await
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, work).await {
            Ok(r) => r.map(TokioIo::new),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("TLS connection to {host}:{port} timed out"),
            )),
        }
    }
}

type ConnectFuture = Pin<
    Box<
        dyn Future<Output = Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, std::io::Error>>
            + Send,
    >,
>;

impl tower_service::Service<tonic::codegen::http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        assert!(certs_from_pem("nothing here", "ca.pem").is_err());
        assert!(ServerCheck::named(Some("server.dc1.tribune")).is_ok());
        assert!(ServerCheck::named(Some("bad name!")).is_err());
    }
}
