//! Remote-actor sessions over mutual TLS 1.3 (`cluster.tls_dir`).
//!
//! ```text
//! peer ──TCP──▶ actor_listen (transport.rs's listener)
//!               at most MAX_HANDSHAKES at once, each within HANDSHAKE_TIMEOUT
//!               TLS 1.3, both sides present a certificate of the cluster CA
//!           ──▶ NodeServer (ConnectionOpenedExternal): ractor_cluster's cookie handshake, frames
//! ```
//!
//! ractor_cluster can accept TLS itself, but its listener runs each handshake inline, so one
//! connection that never finishes its handshake would stop every later session from being
//! accepted. This node accepts and dials every session itself (transport.rs); over TLS, each
//! handshake runs in its own task with a timeout and a bound on handshakes in flight, and only
//! the encrypted stream is handed to ractor_cluster.
//!
//! The files, written by `senti cluster tls --out DIR` ([`create_tls_dir`]): `ca.crt` (the
//! cluster CA, the only root trusted), `node.crt` and `node.key` (a certificate for the name
//! [`SERVER_NAME`], signed by the CA, used by every node as client and server). A node without
//! a certificate of the same CA cannot complete a handshake with this one, whichever side dials.
//! The CA's private key is not kept: another node gets a copy of the folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::transport::Session;

/// The name in every node certificate, checked by the dialing side.
pub const SERVER_NAME: &str = "senti-cluster";
/// A connection that has not completed its TLS handshake by then is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in flight at once; connections beyond are closed at once.
pub const MAX_HANDSHAKES: usize = 64;
/// The files of a TLS folder.
pub const CA_FILE: &str = "ca.crt";
/// The node certificate's file.
pub const CERT_FILE: &str = "node.crt";
/// The node key's file (mode 600).
pub const KEY_FILE: &str = "node.key";

/// What went wrong with a TLS folder; every message names the file and the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsDirError {
    /// A file is missing or unreadable.
    #[error("cannot read {path} (`cluster.tls_dir`; `senti cluster tls --out DIR` writes the folder): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path} (`cluster.tls_dir`) {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The key can be read by others.
    #[error(
        "{path} (`cluster.tls_dir`) is readable by group or others (mode {mode:03o}): run `chmod 600 {path}`",
        path = .path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// `senti cluster tls --out` found files it would overwrite.
    #[error("{path} exists; refusing to overwrite it (remove the folder's files first)", path = .path.display())]
    Exists {
        /// The file that exists.
        path: PathBuf,
    },
    /// The certificate could not be made.
    #[error("cannot make the cluster certificates: {0}")]
    Generate(String),
}

/// A node's TLS setup for sessions, both directions.
#[derive(Clone)]
pub struct SessionTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for SessionTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionTls")
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsDirError> {
    std::fs::read(path).map_err(|source| TlsDirError::Read { path: path.to_owned(), source })
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> TlsDirError {
    TlsDirError::Invalid { path: path.to_owned(), what: what.to_string() }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsDirError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid(path, format!("is not PEM certificates: {err}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "holds no certificate"));
    }
    Ok(certs)
}

impl SessionTls {
    /// Loads `dir`'s CA, certificate and key and builds both TLS configurations.
    pub fn load(dir: &Path) -> Result<SessionTls, TlsDirError> {
        let (ca_path, cert_path, key_path) = (dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE));
        let key_meta =
            std::fs::metadata(&key_path).map_err(|source| TlsDirError::Read { path: key_path.clone(), source })?;
        check_private(&key_path, &key_meta)?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(&ca_path)? {
            roots.add(ca).map_err(|err| invalid(&ca_path, format!("is not a usable CA certificate: {err}")))?;
        }
        let roots = Arc::new(roots);
        let chain = certificates(&cert_path)?;
        let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?)
            .map_err(|err| invalid(&key_path, format!("is not a PEM private key: {err}")))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|err| invalid(&ca_path, format!("cannot verify clients with it: {err}")))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(tls13)
            .map_err(|err| TlsDirError::Generate(err.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|err| invalid(&cert_path, format!("does not go with {KEY_FILE}: {err}")))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(tls13)
            .map_err(|err| TlsDirError::Generate(err.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|err| invalid(&cert_path, format!("does not go with {KEY_FILE}: {err}")))?;
        Ok(SessionTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// The client side of a TLS handshake on `tcp`, connected to `addr`.
    pub(crate) async fn connect(&self, tcp: TcpStream, addr: SocketAddr) -> Result<TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        self.connector.connect(name, tcp).await.map_err(|err| {
            format!("TLS handshake with {addr} failed: {err} (another cluster CA in `cluster.tls_dir`?)")
        })
    }
}

/// Connections refused at the TLS layer, by reason (`senti_session_tls_refused_total`).
pub fn register_metrics() {
    for reason in ["handshake", "timeout", "busy"] {
        metrics::counter!("senti_session_tls_refused_total", "reason" => reason).absolute(0);
    }
}

/// The server side of TLS handshakes: each accepted connection gets [`HANDSHAKE_TIMEOUT`] to
/// complete one with a certificate of the cluster CA, at most [`MAX_HANDSHAKES`] at once;
/// refusals are counted and logged at most every 10 s.
pub(crate) struct Accepting {
    permits: Arc<Semaphore>,
    last_warn: Arc<AtomicU64>,
}

impl Accepting {
    pub(crate) fn new() -> Self {
        register_metrics();
        Self { permits: Arc::new(Semaphore::new(MAX_HANDSHAKES)), last_warn: Arc::default() }
    }

    /// Runs the handshake of `tcp` in its own task and hands the stream to `server` once it
    /// completes; refuses it at once if [`MAX_HANDSHAKES`] are in flight.
    pub(crate) fn accept(
        &self,
        tls: &SessionTls,
        tcp: TcpStream,
        peer: SocketAddr,
        server: &ActorRef<NodeServerMessage>,
    ) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            refused(&self.last_warn, "busy", &format!("{peer}: {MAX_HANDSHAKES} handshakes already in flight"));
            return;
        };
        let (acceptor, server, last_warn) = (tls.acceptor.clone(), server.clone(), self.last_warn.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let stream = Box::new(Session { stream, peer: peer.to_string() });
                    let _ = server.cast(NodeServerMessage::ConnectionOpenedExternal { stream, is_server: true });
                }
                Ok(Err(err)) => refused(&last_warn, "handshake", &format!("{peer}: {err}")),
                Err(_) => refused(&last_warn, "timeout", &format!("{peer}: no handshake within {HANDSHAKE_TIMEOUT:?}")),
            }
        });
    }
}

fn refused(last_warn: &AtomicU64, reason: &'static str, detail: &str) {
    metrics::counter!("senti_session_tls_refused_total", "reason" => reason).increment(1);
    let now = crate::keys::unix_ms_now();
    let last = last_warn.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000
        && last_warn.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(reason, detail, "refused a remote-actor connection (TLS; at most one such line per 10 s)");
    }
}

/// `senti cluster tls --out DIR`: creates `dir` (mode 700) with a new cluster CA certificate
/// and a node certificate and key signed by it (key mode 600); never overwrites a file.
pub fn create_tls_dir(dir: &Path) -> Result<(), TlsDirError> {
    use std::io::Write;
    let paths = [dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE)];
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(TlsDirError::Exists { path: existing.clone() });
    }
    let generate = |err: rcgen::Error| TlsDirError::Generate(err.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.distinguished_name.push(rcgen::DnType::CommonName, "senti cluster CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(generate)?;
    let node_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut node = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).map_err(generate)?;
    node.distinguished_name.push(rcgen::DnType::CommonName, SERVER_NAME);
    node.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let node_cert = node.signed_by(&node_key, &ca_cert, &ca_key).map_err(generate)?;

    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsDirError::Read { path, source }
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io(dir))?;
    for (path, text, private) in [
        (&paths[0], ca_cert.pem(), false),
        (&paths[1], node_cert.pem(), false),
        (&paths[2], node_key.serialize_pem(), true),
    ] {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
        let mut file = options.open(path).map_err(io(path))?;
        file.write_all(text.as_bytes()).map_err(io(path))?;
    }
    Ok(())
}

fn check_private(path: &Path, metadata: &std::fs::Metadata) -> Result<(), TlsDirError> {
    match crate::key_file::open_to_others(metadata) {
        Some(mode) => Err(TlsDirError::Permissions { path: path.to_owned(), mode }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("senti-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_new_folder_loads_and_is_never_overwritten() {
        let dir = temp_dir("new");
        create_tls_dir(&dir).unwrap();
        SessionTls::load(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        let err = create_tls_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_others_can_read_or_a_missing_file_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        create_tls_dir(&dir).unwrap();
        std::fs::set_permissions(dir.join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SessionTls::load(&dir).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("`cluster.tls_dir`"), "{err}");
        std::fs::set_permissions(dir.join(KEY_FILE), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(dir.join(CA_FILE)).unwrap();
        let err = SessionTls::load(&dir).unwrap_err().to_string();
        assert!(err.contains("ca.crt") && err.contains("senti cluster tls --out"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Two folders are two clusters: a handshake between them fails both ways; within one it
    /// succeeds. (Plain TCP on loopback; the sessions on top are tests/tests/session_tls.rs's.)
    #[tokio::test]
    async fn only_certificates_of_the_same_ca_complete_a_handshake() {
        let (one, other) = (temp_dir("one"), temp_dir("other"));
        create_tls_dir(&one).unwrap();
        create_tls_dir(&other).unwrap();
        let (a, b) = (SessionTls::load(&one).unwrap(), SessionTls::load(&other).unwrap());
        async fn handshake(server: &SessionTls, client: &SessionTls) -> bool {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let acceptor = server.acceptor.clone();
            let accept = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                acceptor.accept(tcp).await.is_ok()
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let dialed = client.connect(tcp, addr).await;
            // TLS 1.3: the client finishes before the server has checked its certificate.
            let accepted = accept.await.unwrap();
            dialed.is_ok() && accepted
        }
        assert!(handshake(&a, &a).await);
        assert!(!handshake(&a, &b).await);
        assert!(!handshake(&b, &a).await);
        std::fs::remove_dir_all(&one).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }
}
