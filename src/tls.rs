//! TLS on both listeners (rustls on ring) from PEM certificate and key
//! files, re-read when they change, so a renewed certificate is served from
//! the next handshake on without a restart. gRPC may also require client
//! certificates from a CA (mTLS); HTTP never does (browsers call it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// A handshake that has not finished by then is dropped, so idle or slow
/// connections cannot pile up handshake tasks.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken but not yet taken by the server.
const BACKLOG: usize = 128;

/// Where the certificate chain and its key are read from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The two server configurations, sharing one reloading certificate.
pub(crate) struct Tls {
    pub grpc: TlsAcceptor,
    pub http: TlsAcceptor,
    certificate: Arc<ReloadingCertificate>,
}

impl Tls {
    /// Reads the files (and the client CA, for gRPC mTLS); any error here
    /// stops the start, as a replica without its certificate is useless.
    pub fn new(files: TlsFiles, grpc_client_ca: Option<&Path>) -> anyhow::Result<Tls> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let (key, contents) = load(&files, &provider)?;
        let certificate = Arc::new(ReloadingCertificate {
            files,
            provider: provider.clone(),
            current: RwLock::new((Arc::new(key), contents)),
        });
        let builder = || {
            ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")
        };
        let mut grpc = match grpc_client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("cannot read the gRPC client CA {}", path.display()))?
                {
                    let cert = cert.with_context(|| {
                        format!("the gRPC client CA {} is not PEM", path.display())
                    })?;
                    roots.add(cert).context("a gRPC client CA certificate")?;
                }
                if roots.is_empty() {
                    bail!("the gRPC client CA {} holds no certificate", path.display());
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .context("the gRPC client certificate verifier")?;
                builder()?.with_client_cert_verifier(verifier)
            }
            None => builder()?.with_no_client_auth(),
        }
        .with_cert_resolver(certificate.clone());
        // gRPC is HTTP/2 only; HTTP serves both.
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        let mut http = builder()?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            grpc: TlsAcceptor::from(Arc::new(grpc)),
            http: TlsAcceptor::from(Arc::new(http)),
            certificate,
        })
    }

    /// Re-reads the files every `every` until `shutdown`.
    pub fn spawn_reloader(&self, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        let certificate = self.certificate.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(every) => certificate.reload_if_changed(),
                }
            }
        })
    }
}

/// The certificate every handshake is answered with, swapped when the
/// files change.
#[derive(Debug)]
struct ReloadingCertificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    /// The key in use and the file contents it came from.
    current: RwLock<(Arc<CertifiedKey>, Vec<u8>)>,
}

impl ReloadingCertificate {
    /// Compares the files' contents, not their mtimes: a few KiB read every
    /// few seconds is nothing, and contents also catch a copy that kept its
    /// mtime or a Kubernetes secret's symlink swap. A pair that does not
    /// load (one file written, the other not yet) keeps the old certificate
    /// and is tried again at the next poll.
    fn reload_if_changed(&self) {
        let Ok((cert, key)) = read_both(&self.files) else {
            tracing::warn!(cert = %self.files.cert.display(), "cannot read the TLS files; keeping the certificate in use");
            return;
        };
        if self
            .current
            .read()
            .map(|current| current.1 == [cert, key].concat())
            .unwrap_or(false)
        {
            return;
        }
        match load(&self.files, &self.provider) {
            Ok((key, contents)) => {
                if let Ok(mut current) = self.current.write() {
                    *current = (Arc::new(key), contents);
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
            }
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "the changed TLS files do not load; keeping the certificate in use"
            ),
        }
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| current.0.clone())
    }
}

fn read_both(files: &TlsFiles) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    Ok((std::fs::read(&files.cert)?, std::fs::read(&files.key)?))
}

/// The certified key from the files, checked to match, with the contents
/// it was made from (parsed from the same bytes that are compared later).
fn load(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<(CertifiedKey, Vec<u8>)> {
    let (cert, key) = read_both(files).context("cannot read the TLS certificate or key")?;
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", files.cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", files.cert.display());
    }
    let private = PrivateKeyDer::from_pem_slice(&key)
        .with_context(|| format!("{} is not a PEM private key", files.key.display()))?;
    let certified = CertifiedKey::from_der(chain, private, provider)
        .context("the TLS key does not match the certificate, or is of an unsupported kind")?;
    Ok((certified, [cert, key].concat()))
}

/// Accepts TCP connections on `listener` and hands each one over once its
/// TLS handshake is done. Handshakes run on their own tasks, so a slow one
/// holds up no other; failed ones (a client that does not trust us, or
/// lacks a client certificate) are logged at debug and dropped.
pub(crate) fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of descriptors and the like: pause, do not spin.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Without TCP_NODELAY a reply written in two segments waits for
            // the client's delayed ACK: 40 ms per call.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}
