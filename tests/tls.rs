//! TLS on both listeners with certificates the test makes (rcgen): a
//! client trusting the right CA gets in, one trusting another does not; a
//! certificate written over the files is served from a later handshake on;
//! gRPC mTLS takes a client certificate from its CA and refuses none or a
//! foreign one. On SQLite only: TLS is the same over either backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use velocity_auth::{RunningServer, ServeConfig};
use velocity_domain::SystemClock;
use velocity_testkit::TestDatabase;

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate and key (PEM) for `names`, issued by `ca`.
struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

fn leaf(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

fn server_leaf(ca: &Ca) -> Leaf {
    leaf(
        ca,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

struct Tls {
    dir: PathBuf,
    _db: TestDatabase,
    server: Option<RunningServer>,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Tls {
    async fn start(served: &Leaf, client_ca: Option<&Ca>) -> Tls {
        let dir = std::env::temp_dir().join(format!("velocity-tls-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = TestDatabase::sqlite();
        let mut config = ServeConfig::for_tests(&db.url);
        write(&dir.join("cert.pem"), &served.cert);
        write(&dir.join("key.pem"), &served.key);
        config.tls_cert = Some(dir.join("cert.pem"));
        config.tls_key = Some(dir.join("key.pem"));
        config.tls_reload_ms = 50;
        if let Some(ca) = client_ca {
            write(&dir.join("client-ca.pem"), &ca.pem());
            config.grpc_client_ca = Some(dir.join("client-ca.pem"));
        }
        let server = velocity_auth::start(config, Arc::new(SystemClock))
            .await
            .unwrap();
        server.ready().await;
        Tls {
            dir,
            _db: db,
            server: Some(server),
        }
    }

    fn grpc_addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().grpc_addr
    }

    fn http_addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().http_addr
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

fn write(path: &Path, contents: &str) {
    // Written beside and renamed, as a certificate manager would: the
    // reloader never reads a half-written file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, contents).unwrap();
    std::fs::rename(&partial, path).unwrap();
}

/// Health over gRPC with TLS trusting `ca`, optionally presenting a client
/// certificate; the error's text when the connection or call fails.
async fn grpc_health(addr: SocketAddr, ca: &Ca, client: Option<&Leaf>) -> Result<i32, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    // Readiness reaches the health service a moment after `ready()`
    // returns: wait it out (a deadline, not a timing assertion).
    let mut client = HealthClient::new(channel);
    for _ in 0..200 {
        let status = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status)
            .map_err(|e| format!("call: {e:?}"))?;
        if status != ServingStatus::NotServing as i32 {
            return Ok(status);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(ServingStatus::NotServing as i32)
}

async fn http_readyz(addr: SocketAddr, ca: &Ca) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    client
        .get(format!("https://localhost:{}/readyz", addr.port()))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// The certificate a bare TLS handshake is answered with, trusting `ca`.
async fn served_certificate(addr: SocketAddr, ca: &Ca) -> Result<CertificateDer<'static>, String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(stream.get_ref().1.peer_certificates().unwrap()[0].clone())
}

#[tokio::test]
async fn both_listeners_speak_tls_to_clients_that_trust_the_ca() {
    let (ours, theirs) = (ca("velocity test CA"), ca("some other CA"));
    let tls = Tls::start(&server_leaf(&ours), None).await;

    assert_eq!(
        grpc_health(tls.grpc_addr(), &ours, None).await,
        Ok(ServingStatus::Serving as i32)
    );
    assert_eq!(http_readyz(tls.http_addr(), &ours).await, Ok(200));

    let refused = grpc_health(tls.grpc_addr(), &theirs, None).await;
    assert!(refused.is_err(), "{refused:?}");
    let refused = http_readyz(tls.http_addr(), &theirs).await;
    assert!(refused.is_err(), "{refused:?}");

    // Plain text to a TLS port gets no HTTP answer.
    let plain = reqwest::get(format!("http://{}/readyz", tls.http_addr())).await;
    assert!(plain.is_err(), "{plain:?}");
    tls.stop().await;
}

#[tokio::test]
async fn a_certificate_written_over_the_files_is_served_from_then_on() {
    let (first_ca, second_ca) = (ca("first CA"), ca("second CA"));
    let first = server_leaf(&first_ca);
    let tls = Tls::start(&first, None).await;
    assert_eq!(
        served_certificate(tls.grpc_addr(), &first_ca).await,
        Ok(first.der.clone())
    );

    let second = server_leaf(&second_ca);
    // Key first, then certificate: in between the pair does not match and
    // the old certificate must stay in use.
    write(&tls.dir.join("key.pem"), &second.key);
    write(&tls.dir.join("cert.pem"), &second.cert);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for addr in [tls.grpc_addr(), tls.http_addr()] {
        loop {
            if served_certificate(addr, &second_ca).await.as_ref() == Ok(&second.der) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new certificate was never served on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        grpc_health(tls.grpc_addr(), &second_ca, None).await,
        Ok(ServingStatus::Serving as i32)
    );
    assert_eq!(http_readyz(tls.http_addr(), &second_ca).await, Ok(200));
    assert!(
        served_certificate(tls.grpc_addr(), &first_ca)
            .await
            .is_err(),
        "the old certificate is gone"
    );
    tls.stop().await;
}

#[tokio::test]
async fn grpc_mtls_takes_client_certificates_from_its_ca_only() {
    let (server_ca, client_ca, foreign_ca) = (ca("server CA"), ca("client CA"), ca("foreign CA"));
    let tls = Tls::start(&server_leaf(&server_ca), Some(&client_ca)).await;
    let caller = leaf(
        &client_ca,
        &["issues-service"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let stranger = leaf(
        &foreign_ca,
        &["issues-service"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    assert_eq!(
        grpc_health(tls.grpc_addr(), &server_ca, Some(&caller)).await,
        Ok(ServingStatus::Serving as i32)
    );
    let none = grpc_health(tls.grpc_addr(), &server_ca, None).await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let foreign = grpc_health(tls.grpc_addr(), &server_ca, Some(&stranger)).await;
    assert!(
        foreign.is_err(),
        "a foreign client certificate: {foreign:?}"
    );

    // HTTP asks browsers for no certificate.
    assert_eq!(http_readyz(tls.http_addr(), &server_ca).await, Ok(200));
    tls.stop().await;
}

#[test]
fn tls_settings_go_together() {
    let mut config = ServeConfig::for_tests("sqlite://unused.db");
    assert!(config.tls_files().unwrap().is_none());
    config.tls_cert = Some("cert.pem".into());
    assert!(config.tls_files().is_err(), "a certificate without a key");
    config.tls_key = Some("key.pem".into());
    assert!(config.tls_files().unwrap().is_some());
    config.tls_cert = None;
    config.tls_key = None;
    config.grpc_client_ca = Some("ca.pem".into());
    assert!(config.tls_files().is_err(), "mTLS without TLS");
}
