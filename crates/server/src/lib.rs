//! The gRPC adapter: `AuthService`, `DirectoryService`, `OAuthAppService`,
//! health and reflection on one port.

pub mod admin;
pub mod app_service;
pub mod auth_service;
pub mod directory_service;
pub mod metadata;
pub mod status;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use velocity_domain::Service;
use velocity_proto::pb;

pub use admin::RequireAdmin;
pub use app_service::OAuthAppApi;
pub use auth_service::AuthApi;
pub use directory_service::DirectoryApi;
pub use velocity_domain::admin::AdminToken;

#[derive(Clone, Debug)]
pub struct GrpcConfig {
    pub admin_token: AdminToken,
    /// How often storage is pinged to keep the health status honest.
    pub health_interval: Duration,
    pub concurrency_limit_per_connection: usize,
    /// HTTP/2 streams a client may open at once on one connection.
    pub max_concurrent_streams: u32,
    pub request_timeout: Duration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            admin_token: AdminToken::new(None),
            health_interval: Duration::from_secs(5),
            concurrency_limit_per_connection: 256,
            max_concurrent_streams: 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

const AUTH_SERVICE: &str = "velocity.auth.v1.AuthService";
const DIRECTORY_SERVICE: &str = "velocity.auth.v1.DirectoryService";
const APP_SERVICE: &str = "velocity.auth.v1.OAuthAppService";

/// Serves gRPC on `listener` until `shutdown` resolves. Health reports
/// SERVING while storage answers, and NOT_SERVING once shutdown begins.
pub async fn serve_grpc(
    config: GrpcConfig,
    service: Service,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // Each reflection version lists the other too, so `list` shows both.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(velocity_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(velocity_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha();
    let (Ok(reflection_v1), Ok(reflection_v1alpha)) = (reflection_v1, reflection_v1alpha) else {
        // The descriptor sets are compiled in, so this is a build bug; say
        // so loudly rather than serve a port that `grpcurl list` cannot read.
        tracing::error!("reflection descriptors are invalid (a build bug); gRPC is not served");
        return Ok(());
    };

    let health_task = tokio::spawn(watch_storage(
        reporter.clone(),
        service.clone(),
        config.health_interval,
    ));

    let auth = pb::auth_service_server::AuthServiceServer::new(AuthApi::new(service.clone()));
    // The admin services are wrapped whole, so no RPC of theirs runs unchecked.
    let require_admin = RequireAdmin::new(config.admin_token);
    let directory = pb::directory_service_server::DirectoryServiceServer::with_interceptor(
        DirectoryApi::new(service.clone()),
        require_admin.clone(),
    );
    let apps = pb::o_auth_app_service_server::OAuthAppServiceServer::with_interceptor(
        OAuthAppApi::new(service),
        require_admin,
    );

    Server::builder()
        .concurrency_limit_per_connection(config.concurrency_limit_per_connection)
        .max_concurrent_streams(config.max_concurrent_streams)
        .load_shed(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .timeout(config.request_timeout)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(directory)
        .add_service(apps)
        // Without TCP_NODELAY a reply written in two segments waits for the
        // client's delayed ACK: 40 ms per call.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.await;
                health_task.abort();
                for name in ["", AUTH_SERVICE, DIRECTORY_SERVICE, APP_SERVICE] {
                    reporter
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
            },
        )
        .await
}

/// Keeps health in step with storage: SERVING only while it answers.
async fn watch_storage(
    reporter: tonic_health::server::HealthReporter,
    service: Service,
    every: Duration,
) {
    let mut last = None;
    loop {
        let status = match service.store().ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(err) => {
                tracing::warn!(error = %err, "storage ping failed; reporting NOT_SERVING");
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            for name in ["", AUTH_SERVICE, DIRECTORY_SERVICE, APP_SERVICE] {
                reporter.set_service_status(name, status).await;
            }
            last = Some(status);
        }
        tokio::time::sleep(every).await;
    }
}
