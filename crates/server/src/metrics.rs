//! Latency and status codes per RPC, for the metrics endpoint. The RPCs
//! are read from the descriptor sets the server is built from, once, into a
//! map that is never written again: a call costs a lookup by its path and a
//! few relaxed increments, no lock and no allocation. A path that names no
//! RPC of ours counts as `other`, so callers cannot mint labels.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use prost::Message;
use tonic::codegen::http;
use tower::{Layer, Service};
use velocity_domain::stats::LatencyHistogram;

/// `google.rpc.Code` has 17 values, 0 (OK) to 16.
pub const GRPC_CODES: usize = 17;

/// The label of calls to paths that are no RPC of ours.
pub const OTHER_RPC: &str = "other";

/// Envoy's ext_authz service, whose descriptors come from envoy-types.
const EXT_AUTHZ_CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// One RPC's latency and answers.
#[derive(Debug, Default)]
pub struct RpcStats {
    pub latency: LatencyHistogram,
    codes: [AtomicU64; GRPC_CODES],
}

impl RpcStats {
    /// Calls answered with each `google.rpc.Code`, indexed by code.
    pub fn codes(&self) -> [u64; GRPC_CODES] {
        std::array::from_fn(|i| self.codes[i].load(Ordering::Relaxed))
    }
}

/// Every RPC this server serves, by path (`/package.Service/Method`).
#[derive(Debug)]
pub struct GrpcStats {
    /// Sorted by path, `other` last.
    rpcs: Vec<(String, RpcStats)>,
    index: HashMap<String, usize>,
}

impl Default for GrpcStats {
    fn default() -> Self {
        let mut paths = vec![EXT_AUTHZ_CHECK.to_owned()];
        for set in [
            velocity_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            paths.extend(rpc_paths(set));
        }
        paths.sort();
        paths.dedup();
        let index = paths
            .iter()
            .enumerate()
            .map(|(i, path)| (path.clone(), i))
            .collect();
        let rpcs = paths
            .into_iter()
            .map(|path| (path.trim_start_matches('/').to_owned(), RpcStats::default()))
            .chain(std::iter::once((OTHER_RPC.to_owned(), RpcStats::default())))
            .collect();
        GrpcStats { rpcs, index }
    }
}

impl GrpcStats {
    /// The slot of the RPC at `path`, `other`'s for anything else.
    fn slot(&self, path: &str) -> usize {
        self.index.get(path).copied().unwrap_or(self.rpcs.len() - 1)
    }

    /// Every RPC (`package.Service/Method`) and its stats, `other` last.
    pub fn rpcs(&self) -> impl Iterator<Item = (&str, &RpcStats)> {
        self.rpcs.iter().map(|(name, stats)| (name.as_str(), stats))
    }
}

/// `/package.Service/Method` of every method in an encoded descriptor set.
fn rpc_paths(encoded: &[u8]) -> Vec<String> {
    let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
        // Compiled in, so a build bug; those RPCs then count as `other`.
        tracing::error!("a compiled-in descriptor set does not decode");
        return Vec::new();
    };
    let mut paths = Vec::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            let full = if package.is_empty() {
                service.name().to_owned()
            } else {
                format!("{package}.{}", service.name())
            };
            for method in &service.method {
                paths.push(format!("/{full}/{}", method.name()));
            }
        }
    }
    paths
}

#[derive(Clone, Debug)]
pub(crate) struct MetricsLayer {
    pub stats: Arc<GrpcStats>,
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            stats: self.stats.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct MetricsService<S> {
    inner: S,
    stats: Arc<GrpcStats>,
}

impl<S, B, R> Service<http::Request<B>> for MetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        ResponseFuture {
            slot: self.stats.slot(request.uri().path()),
            stats: self.stats.clone(),
            started: Instant::now(),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner call's future, timed; not boxed, so counting allocates
    /// nothing per call.
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        inner: F,
        stats: Arc<GrpcStats>,
        slot: usize,
        started: Instant,
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let rpc = &this.stats.rpcs[*this.slot].1;
        rpc.latency.observe(this.started.elapsed());
        // Unary errors are trailers-only responses with the status in the
        // headers; a success's travels in the trailers. A failure below
        // tonic (a timeout layer) has no status: UNKNOWN.
        let code = match &result {
            Ok(response) => response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|c| *c < GRPC_CODES)
                .unwrap_or(0),
            Err(_) => 2,
        };
        rpc.codes[code].fetch_add(1, Ordering::Relaxed);
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_is_known_and_nothing_else() {
        let stats = GrpcStats::default();
        let other = stats.rpcs.len() - 1;
        for path in [
            "/velocity.auth.v1.AuthService/Authenticate",
            "/velocity.auth.v1.DirectoryService/CreateUser",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            EXT_AUTHZ_CHECK,
        ] {
            let slot = stats.slot(path);
            assert_ne!(slot, other, "{path}");
            assert_eq!(format!("/{}", stats.rpcs[slot].0), path);
        }
        assert_eq!(stats.slot("/velocity.auth.v1.AuthService/Nope"), other);
        assert_eq!(stats.rpcs().last().map(|(name, _)| name), Some(OTHER_RPC));
    }
}
