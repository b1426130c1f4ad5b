//! The gRPC adapter: `AuthService`, `DirectoryService`, `OAuthAppService`,
//! Envoy's `envoy.service.auth.v3.Authorization` (ext_authz), health and
//! reflection on one port.

mod admin;
mod app_service;
mod auth_service;
mod directory_service;
pub mod ext_authz;
mod in_process;
mod metadata;
pub mod metrics;
mod request_id;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::service::InterceptorLayer;
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::{Request, Status};
use tonic_health::ServingStatus;
use velocity_domain::Service;
use velocity_domain::routes::RouteScopes;
use velocity_proto::pb;

use admin::RequireAdmin;
use app_service::OAuthAppApi;
use auth_service::AuthApi;
use directory_service::DirectoryApi;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use ext_authz::ExtAuthzApi;
pub use in_process::LocalGrpc;
pub use status::ERROR_METADATA_KEY;
pub use velocity_domain::admin::AdminToken;
/// The descriptor set (with `google.api.http` options) the HTTP gateway
/// reads its routes from.
pub use velocity_proto::FILE_DESCRIPTOR_SET;

#[derive(Clone, Debug)]
pub struct GrpcConfig {
    pub admin_token: AdminToken,
    /// How often storage is pinged to keep the health status honest.
    pub health_interval: Duration,
    pub concurrency_limit_per_connection: usize,
    /// HTTP/2 streams a client may open at once on one connection.
    pub max_concurrent_streams: u32,
    pub request_timeout: Duration,
    /// Largest request metadata a call may carry, in bytes, counted as
    /// HTTP/2 does (name + value + 32 per entry); larger calls are refused
    /// with RESOURCE_EXHAUSTED. See docs/limits.md.
    pub max_metadata_bytes: usize,
    /// `true` once start-up work (the known-credential filter) is done;
    /// health is NOT_SERVING until then, whatever storage says.
    pub ready: watch::Receiver<bool>,
    /// Envoy ext_authz passes the credential header upstream when set.
    pub ext_authz_keep_credential: bool,
    /// Scopes per route, for ext_authz checks whose route does not say.
    pub route_scopes: Arc<RouteScopes>,
    /// Latency and codes per RPC are counted here when set.
    pub metrics: Option<Arc<metrics::GrpcStats>>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            admin_token: AdminToken::new(None),
            health_interval: Duration::from_secs(5),
            concurrency_limit_per_connection: 256,
            max_concurrent_streams: 1024,
            request_timeout: Duration::from_secs(10),
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            // Ready from the start: nothing will say otherwise.
            ready: watch::channel(true).1,
            ext_authz_keep_credential: false,
            route_scopes: Arc::default(),
            metrics: None,
        }
    }
}

/// Room for a bearer token many times a Supabase session token (typically
/// 1–2 KiB) plus gRPC's own headers. It is also what hyper's HTTP/2 accepted
/// by default, so no call that was served before is refused now.
pub const DEFAULT_MAX_METADATA_BYTES: usize = 16 * 1024;

/// The header list size HTTP/2 itself is told to accept; why it is so far
/// above `max_metadata_bytes` is explained where it is set.
const HEADER_LIST_CEILING: u32 = 4 * 1024 * 1024;

const AUTH_SERVICE: &str = "velocity.auth.v1.AuthService";
const DIRECTORY_SERVICE: &str = "velocity.auth.v1.DirectoryService";
const APP_SERVICE: &str = "velocity.auth.v1.OAuthAppService";
/// Every name health answers for; "" is the server as a whole.
const SERVICE_NAMES: [&str; 4] = ["", AUTH_SERVICE, DIRECTORY_SERVICE, APP_SERVICE];

/// Plain TCP connections from `listener`, with TCP_NODELAY: without it a
/// reply written in two segments waits for the client's delayed ACK, 40 ms
/// per call.
pub fn plaintext(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves gRPC on the connections of `incoming` ([`plaintext`], or TLS
/// streams) until `shutdown` resolves. Health reports SERVING once ready
/// and while storage answers, and NOT_SERVING once shutdown begins.
pub async fn serve_grpc<I, IO, IE>(
    config: GrpcConfig,
    service: Service,
    incoming: I,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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

    // tonic-health starts "" at SERVING; nothing may be reported serving
    // before the first look at readiness and storage.
    for name in SERVICE_NAMES {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let health_task = tokio::spawn(watch_storage(
        reporter.clone(),
        service.clone(),
        config.health_interval,
        config.ready.clone(),
    ));

    let auth = pb::auth_service_server::AuthServiceServer::new(AuthApi::new(service.clone()));
    let ext_authz = AuthorizationServer::new(ExtAuthzApi::new(
        service.clone(),
        config.ext_authz_keep_credential,
        config.route_scopes.clone(),
    ));
    // The admin service is wrapped whole, so no RPC of its runs unchecked.
    // Apps are managed by the operator or by workspace admins, so that
    // service tells which one calls, per call.
    let apps = pb::o_auth_app_service_server::OAuthAppServiceServer::new(OAuthAppApi::new(
        service.clone(),
        config.admin_token.clone(),
    ));
    let directory = pb::directory_service_server::DirectoryServiceServer::with_interceptor(
        DirectoryApi::new(service),
        RequireAdmin::new(config.admin_token),
    );

    // Two limits, because HTTP/2 cannot refuse a large header block cheaply.
    // HPACK state belongs to the connection, so h2 (0.4) must read and decode
    // every header block to its end, and it bounds that work by tearing the
    // connection down (GOAWAY ENHANCE_YOUR_CALM, failing every call on it)
    // once the decoded list passes 4 × SETTINGS_MAX_HEADER_LIST_SIZE
    // (frame/headers.rs), or the block needs more than max(5, 1.25 × that /
    // max_frame_size) CONTINUATION frames (codec/framed_read.rs). Only from
    // 1× to 4× does it refuse the stream alone (HTTP 431 and a reset, which
    // tonic reports as UNKNOWN; proto/streams/recv.rs). At hyper's default of
    // 16 KiB the connection went at 64 KiB: one relayed hostile header cost
    // the caller its whole channel. So h2 gets a 4 MiB ceiling (the largest
    // request message tonic decodes), every block below it reaches
    // `refuse_oversized_metadata`, and the real limit is a RESOURCE_EXHAUSTED
    // for that one call. Past the ceiling h2 still answers 431 alone until the
    // block passes 322 frames of 16 KiB (about 5 MiB on the wire); beyond
    // that the connection goes, within about a second (docs/limits.md).
    // The ceiling is not higher because a header block is read whole before
    // any other frame of its connection, stalling the other calls meanwhile;
    // max_frame_size stays at 16 KiB because a larger one would only move the
    // wire bound towards the 16 MiB decoded one, with larger read buffers for
    // every frame. A configured limit above the ceiling raises it.
    let max_metadata = config.max_metadata_bytes;
    let header_list_ceiling = u32::try_from(max_metadata)
        .unwrap_or(u32::MAX)
        .max(HEADER_LIST_CEILING);

    Server::builder()
        .http2_max_header_list_size(header_list_ceiling)
        .concurrency_limit_per_connection(config.concurrency_limit_per_connection)
        .max_concurrent_streams(config.max_concurrent_streams)
        .load_shed(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .timeout(config.request_timeout)
        .layer(request_id::RequestIdLayer)
        .layer(tower::util::option_layer(
            config.metrics.map(|stats| metrics::MetricsLayer { stats }),
        ))
        .layer(InterceptorLayer::new(move |request| {
            refuse_oversized_metadata(request, max_metadata)
        }))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(ext_authz)
        .add_service(directory)
        .add_service(apps)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            health_task.abort();
            for name in SERVICE_NAMES {
                reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        })
        .await
}

/// Refuses a call whose metadata is over `max` bytes, counted as the HTTP/2
/// header list size (name + value + 32 per entry; pseudo-headers excluded).
fn refuse_oversized_metadata(request: Request<()>, max: usize) -> Result<Request<()>, Status> {
    let size: usize = request
        .metadata()
        .as_ref()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    if size <= max {
        return Ok(request);
    }
    tracing::debug!(size, max, "request metadata over the limit; call refused");
    Err(Status::resource_exhausted(format!(
        "request metadata is {size} bytes; this server accepts at most {max} \
         (name + value + 32 bytes per entry)"
    )))
}

/// Keeps health in step with start-up and storage: SERVING only once
/// ready and while storage answers. A change of readiness is reported at
/// once, not at the next ping.
async fn watch_storage(
    reporter: tonic_health::server::HealthReporter,
    service: Service,
    every: Duration,
    mut ready: watch::Receiver<bool>,
) {
    let mut last = None;
    // Once the sender is gone readiness cannot change; stop waiting on it.
    let mut readiness_open = true;
    loop {
        let status = if !*ready.borrow_and_update() {
            ServingStatus::NotServing
        } else {
            match service.store().ping().await {
                Ok(()) => ServingStatus::Serving,
                Err(err) => {
                    tracing::warn!(error = %err, "storage ping failed; reporting NOT_SERVING");
                    ServingStatus::NotServing
                }
            }
        };
        if last != Some(status) {
            for name in SERVICE_NAMES {
                reporter.set_service_status(name, status).await;
            }
            last = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = ready.changed(), if readiness_open => readiness_open = changed.is_ok(),
        }
    }
}
