//! TLS for misim's HTTPS surfaces: a local CA made on first start and kept in the data directory, the
//! server certificate it issues for loopback names, a rustls server config (aws-lc-rs provider), an
//! HTTPS server for an axum router, and a TLS-terminating forwarder to a party's plain-HTTP listener.
//!
//! Certificate validity uses wall-clock time, never the injected [`crate::Clock`]: TLS clients check
//! it against their own clock. Clients trust misim by trusting `<ca dir>/ca.pem`
//! (`REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`); Azure SDK certificate credentials refuse plain-HTTP
//! authorities, hence HTTPS (MSAL Python's authority check,
//! <https://github.com/AzureAD/microsoft-authentication-library-for-python/blob/1.39.0/msal/authority.py>;
//! `test_plain_http_authority_is_refused_by_the_sdk` in tests/python/test_certificate_credential.py).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
pub use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::serve_error::ServeError;

/// File name of the CA certificate (PEM) in the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (PKCS#8 PEM, mode 0600) in the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Names every server certificate covers: `localhost`, `127.0.0.1` and `::1`.
pub const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// Common name of misim's CA.
const CA_COMMON_NAME: &str = "misim local CA";
/// CA validity, seconds (10 years).
const CA_VALIDITY_SECS: i64 = 10 * 365 * 86_400;
/// Server certificate validity, seconds (397 days, the longest browsers accept). A new one is issued
/// on every start.
const LEAF_VALIDITY_SECS: i64 = 397 * 86_400;
/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors making the CA, certificates or the TLS config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Key or certificate generation failed (or a name is not a valid DNS name / IP address).
    #[error("tls certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls rejected the certificate or key.
    #[error("tls config: {0}")]
    Config(#[from] rustls::Error),
    /// A CA file could not be read or written.
    #[error("ca file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A CA file exists but cannot be parsed.
    #[error("ca file {path} is unusable: {reason}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// misim's local certificate authority: ECDSA P-256, kept in a directory as `ca.pem` + `ca.key`.
pub struct LocalCa {
    dir: PathBuf,
    cert_pem: String,
    key: KeyPair,
}

/// The CA's parameters; the same on creation and reload, so the issuer name and key identifier of
/// issued certificates match the stored CA certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "misim");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn now_utc() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

impl LocalCa {
    /// Loads the CA from `dir` (`ca.pem`, `ca.key`), or creates it there on first use. Creation is
    /// atomic (a temporary directory renamed into place), so two processes starting at once end up
    /// with the same CA. Blocking file I/O: call at start-up or from a blocking thread.
    ///
    /// # Errors
    /// [`TlsError::Io`] when the directory cannot be read or written, [`TlsError::BadCa`] when the
    /// files exist but do not parse, [`TlsError::Certificate`] when generation fails.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        if !dir.join(CA_CERT_FILE).exists() {
            Self::create(dir)?;
        }
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::BadCa {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::BadCa {
            path: key_path,
            reason: e.to_string(),
        })?;
        Ok(LocalCa {
            dir: dir.to_path_buf(),
            cert_pem,
            key,
        })
    }

    fn create(dir: &Path) -> Result<(), TlsError> {
        if dir.is_dir() {
            // An existing (empty) directory, e.g. a volume's mount point, which cannot be replaced
            // by a rename: write the files into it, the key first, each through a rename.
            return Self::create_in(dir);
        }
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        let (key_pem, cert_pem) = Self::generate()?;
        let tmp = parent.join(format!(".ca-{}", uuid::Uuid::new_v4()));
        crate::fsperm::create_private_dir(&tmp).map_err(io_err(&tmp))?;
        write_private(&tmp.join(CA_KEY_FILE), &key_pem)?;
        let cert_path = tmp.join(CA_CERT_FILE);
        std::fs::write(&cert_path, cert_pem).map_err(io_err(&cert_path))?;
        match std::fs::rename(&tmp, dir) {
            Ok(()) => {
                info!(ca = %dir.join(CA_CERT_FILE).display(), "created local certificate authority");
                Ok(())
            }
            // Another process created it first (the target exists and is not empty): use theirs.
            Err(_) if dir.join(CA_CERT_FILE).exists() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(TlsError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })
            }
        }
    }

    /// The CA as the issuer of certificates it signs (control-plane party certificates).
    pub(crate) fn issuer(&self) -> Issuer<'static, &KeyPair> {
        Issuer::new(ca_params(), &self.key)
    }

    /// A new CA key and its self-signed certificate (valid from an hour ago for 10 years), PEM.
    fn generate() -> Result<(String, String), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        let now = now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(CA_VALIDITY_SECS);
        let cert = params.self_signed(&key)?;
        Ok((key.serialize_pem(), cert.pem()))
    }

    fn create_in(dir: &Path) -> Result<(), TlsError> {
        let (key_pem, cert_pem) = Self::generate()?;
        crate::fsperm::create_private_dir(dir).map_err(io_err(dir))?;
        let stage = |name: &str| dir.join(format!(".{name}.{}", uuid::Uuid::new_v4()));
        let key_tmp = stage(CA_KEY_FILE);
        write_private(&key_tmp, &key_pem)?;
        let cert_tmp = stage(CA_CERT_FILE);
        std::fs::write(&cert_tmp, cert_pem).map_err(io_err(&cert_tmp))?;
        let key_path = dir.join(CA_KEY_FILE);
        std::fs::rename(&key_tmp, &key_path).map_err(io_err(&key_path))?;
        let cert_path = dir.join(CA_CERT_FILE);
        std::fs::rename(&cert_tmp, &cert_path).map_err(io_err(&cert_path))?;
        info!(ca = %cert_path.display(), "created local certificate authority");
        Ok(())
    }

    /// Path of the CA certificate clients must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a server certificate (ECDSA P-256, valid 397 days from now, `serverAuth`) for
    /// [`LOOPBACK_NAMES`] plus `extra_names` (DNS names or IP addresses, e.g. `aad`, `arm` for
    /// containers) and builds a rustls server config presenting it with the CA (ALPN `http/1.1`).
    ///
    /// # Errors
    /// [`TlsError::Certificate`] for a name that is neither a DNS name nor an IP address or a
    /// generation failure, [`TlsError::Config`] when rustls rejects the result.
    pub fn server_config(&self, extra_names: &[String]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|s| s.to_string()).collect();
        for n in extra_names {
            let n = n.trim();
            if !n.is_empty() && !names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
                names.push(n.to_string());
            }
        }
        let leaf_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "misim");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(LEAF_VALIDITY_SECS);
        let issuer = self.issuer();
        let leaf = params.signed_by(&leaf_key, &issuer)?;
        let ca_der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|e| {
            TlsError::BadCa {
                path: self.ca_file(),
                reason: e.to_string(),
            }
        })?;
        let chain = vec![leaf.der().clone(), ca_der];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        debug!(names = ?names, "issued tls server certificate");
        Ok(Arc::new(config))
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    crate::fsperm::write_private(path, contents.as_bytes()).map_err(io_err(path))
}

/// A listener bound for HTTPS, with the TLS config to serve it with.
pub struct HttpsListener {
    /// The bound TCP listener.
    pub listener: TcpListener,
    /// Server certificate and protocol settings.
    pub tls: Arc<ServerConfig>,
}

/// Accepts TCP connections and completes TLS handshakes concurrently (a slow client does not hold
/// up others); yields finished TLS streams to axum.
struct TlsIncoming {
    streams: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.streams.recv().await {
            Some(s) => s,
            // The acceptor stopped (shutdown): axum stops calling accept once its shutdown fires.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts connections on `listener` until `shutdown`, logging and skipping accept errors.
async fn accept_loop(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    mut on_connection: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => on_connection(tcp, peer),
                Err(e) => {
                    warn!(error = %e, "tls listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn handshake(acceptor: TlsAcceptor, tcp: TcpStream) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            debug!(error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            debug!("tls handshake timed out");
            None
        }
    }
}

/// Serves an axum `router` over HTTPS on `https` until `shutdown` is cancelled (the router sees the
/// peer through `ConnectInfo<SocketAddr>`).
///
/// # Errors
/// [`ServeError::Http`] when the listener's address cannot be read or serving fails.
pub async fn serve_https(
    https: HttpsListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    use axum::serve::ListenerExt;
    let local = https.listener.local_addr()?;
    let acceptor = TlsAcceptor::from(https.tls);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let stop = shutdown.clone();
    let acceptor_task = tokio::spawn(async move {
        accept_loop(&https.listener, &stop, |tcp, peer| {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Some(tls) = handshake(acceptor, tcp).await {
                    let _ = tx.send((tls, peer)).await;
                }
            });
        })
        .await;
    });
    let incoming = TlsIncoming { streams: rx, local }.tap_io(|_| {});
    // Each request continues its caller's trace and is counted (see crate::telemetry).
    let router = router.layer(crate::telemetry::propagation::TraceLayer::new(
        crate::telemetry::propagation::listener_party(Some(local)),
    ));
    let served = axum::serve(
        incoming,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await;
    acceptor_task.abort();
    served?;
    Ok(())
}

/// Terminates TLS on `listener` and pipes each connection's bytes to `upstream` (the same party's
/// plain-HTTP listener on loopback) until `shutdown` is cancelled; open connections are closed then.
///
/// # Errors
/// [`ServeError::Http`] when the listener's address cannot be read.
pub async fn serve_tls_forward(
    listener: TcpListener,
    upstream: SocketAddr,
    tls: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let local = listener.local_addr()?;
    info!(https = %local, upstream = %upstream, "tls forwarder serving");
    let acceptor = TlsAcceptor::from(tls);
    accept_loop(&listener, &shutdown, |tcp, peer| {
        let (acceptor, stop) = (acceptor.clone(), shutdown.clone());
        tokio::spawn(async move {
            let Some(mut tls) = handshake(acceptor, tcp).await else {
                return;
            };
            let mut plain = match TcpStream::connect(upstream).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(upstream = %upstream, error = %e, "tls forwarder cannot reach upstream");
                    return;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                r = tokio::io::copy_bidirectional(&mut tls, &mut plain) => {
                    if let Err(e) = r {
                        debug!(peer = %peer, error = %e, "tls forwarded connection ended");
                    }
                }
            }
        });
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let a = LocalCa::load_or_create(&ca_dir).unwrap();
        let b = LocalCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(a.ca_pem(), b.ca_pem());
        assert!(a.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(a.ca_file(), ca_dir.join("ca.pem"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ca_dir.join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        b.server_config(&["aad".into(), "10.0.0.5".into()]).unwrap();
        assert!(b.server_config(&["nämé".into()]).is_err());
    }

    #[test]
    fn a_ca_is_made_inside_an_existing_directory_such_as_a_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("mounted");
        std::fs::create_dir(&ca_dir).unwrap();
        let a = LocalCa::load_or_create(&ca_dir).unwrap();
        let b = LocalCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(a.ca_pem(), b.ca_pem());
        let names: Vec<_> = std::fs::read_dir(&ca_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no staging files left: {names:?}");
    }

    fn client(ca: &LocalCa) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap())
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn https_router_and_forwarder_answer_with_a_certificate_the_ca_vouches_for() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
        let tls = ca.server_config(&[]).unwrap();
        let shutdown = CancellationToken::new();
        let router = axum::Router::new().route("/hi", axum::routing::get(|| async { "hello" }));

        let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https_addr = https.local_addr().unwrap();
        let served = tokio::spawn(serve_https(
            HttpsListener {
                listener: https,
                tls: tls.clone(),
            },
            router.clone(),
            shutdown.clone(),
        ));
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = plain.local_addr().unwrap();
        tokio::spawn(crate::serve::serve_http(plain, router, shutdown.clone()));
        let fwd = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fwd_addr = fwd.local_addr().unwrap();
        let forwarded = tokio::spawn(serve_tls_forward(fwd, plain_addr, tls, shutdown.clone()));

        let c = client(&ca);
        for url in [
            format!("https://127.0.0.1:{}/hi", https_addr.port()),
            format!("https://localhost:{}/hi", fwd_addr.port()),
        ] {
            let body = c.get(&url).send().await.unwrap().text().await.unwrap();
            assert_eq!(body, "hello", "{url}");
        }
        // A client that does not trust misim's CA is refused.
        let untrusting = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("https://127.0.0.1:{}/hi", https_addr.port());
        assert!(untrusting.get(&url).send().await.is_err());

        shutdown.cancel();
        served.await.unwrap().unwrap();
        forwarded.await.unwrap().unwrap();
    }
}
