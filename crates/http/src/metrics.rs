//! Latency and statuses per route, and the `/metrics` endpoint (on the
//! HTTP listener, or on a listener of its own). Routes are labelled by
//! their template (axum's `MatchedPath`), never the raw path, so callers
//! cannot mint labels; anything no route matched is `unmatched`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower::{Layer, Service};
use velocity_domain::stats::LatencyHistogram;

/// The label of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The methods counted apart; any other is `OTHER`.
const METHODS: [&str; 4] = ["GET", "POST", "OPTIONS", "OTHER"];

/// Statuses are 100 to 599.
const STATUSES: usize = 500;

/// One route's requests for one method.
#[derive(Debug)]
pub struct MethodStats {
    pub latency: LatencyHistogram,
    statuses: [AtomicU64; STATUSES],
}

impl Default for MethodStats {
    fn default() -> Self {
        MethodStats {
            latency: LatencyHistogram::default(),
            statuses: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl MethodStats {
    /// (status, responses) for every status answered at least once.
    pub fn statuses(&self) -> Vec<(u16, u64)> {
        self.statuses
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.load(Ordering::Relaxed);
                let status = u16::try_from(i + 100).ok()?;
                (n > 0).then_some((status, n))
            })
            .collect()
    }
}

/// A route's requests, per method.
#[derive(Debug, Default)]
pub struct RouteStats {
    methods: [MethodStats; METHODS.len()],
}

impl RouteStats {
    /// Every method and its stats.
    pub fn methods(&self) -> impl Iterator<Item = (&'static str, &MethodStats)> {
        METHODS.iter().copied().zip(self.methods.iter())
    }
}

/// Every route seen so far, by template. The router's templates bound it.
#[derive(Debug, Default)]
pub struct HttpStats {
    routes: RwLock<HashMap<String, Arc<RouteStats>>>,
}

impl HttpStats {
    fn route(&self, template: &str) -> Option<Arc<RouteStats>> {
        if let Some(found) = self.routes.read().ok()?.get(template) {
            return Some(found.clone());
        }
        let mut routes = self.routes.write().ok()?;
        Some(routes.entry(template.to_owned()).or_default().clone())
    }

    /// Every route seen, sorted by template.
    pub fn routes(&self) -> Vec<(String, Arc<RouteStats>)> {
        let mut routes: Vec<_> = self
            .routes
            .read()
            .map(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        routes
    }
}

/// Times each request and counts its status by route template. A tower
/// layer rather than `middleware::from_fn`, which boxes a clone of the
/// route, its `Next` and its future on every request; this future is the
/// route's own, wrapped.
#[derive(Clone)]
pub(crate) struct ObserveLayer(pub Arc<HttpStats>);

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            stats: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    stats: Arc<HttpStats>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let route = self.stats.route(
            request
                .extensions()
                .get::<MatchedPath>()
                .map_or(UNMATCHED_ROUTE, MatchedPath::as_str),
        );
        let method = match *request.method() {
            Method::GET | Method::HEAD => 0,
            Method::POST => 1,
            Method::OPTIONS => 2,
            _ => 3,
        };
        Observed {
            route: self.inner.call(request),
            stats: route.map(|route| (route, method)),
            started,
        }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct Observed<F> {
        #[pin]
        route: F,
        // The route's stats and the method's index in them.
        stats: Option<(Arc<RouteStats>, usize)>,
        started: Instant,
    }
}

impl<F> Future for Observed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.route.poll(cx));
        if let Some((route, method)) = this.stats.take() {
            let stats = &route.methods[method];
            stats.latency.observe(this.started.elapsed());
            let slot = usize::from(response.status().as_u16()).saturating_sub(100);
            if let Some(count) = stats.statuses.get(slot) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        Poll::Ready(Ok(response))
    }
}

/// What `/metrics` serves: the exporter lives with the binary, which knows
/// every source (the service, storage, both adapters).
pub trait Exposition: Send + Sync + 'static {
    /// The scrape's body, or why there is none.
    fn render(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;

    /// The body's `Content-Type`.
    fn content_type(&self) -> &'static str;
}

pub(crate) async fn scrape(exposition: Arc<dyn Exposition>) -> Response {
    match exposition.render().await {
        Ok(body) => ([(header::CONTENT_TYPE, exposition.content_type())], body).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "metrics could not be rendered");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The `/metrics` route, for a router of any state.
pub(crate) fn scrape_route<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    exposition: Arc<dyn Exposition>,
) -> Router<S> {
    router.route("/metrics", get(move || scrape(exposition.clone())))
}

/// Serves `/metrics` alone on `listener` until `shutdown` resolves: the
/// metrics listener of its own (`VELOCITY_METRICS_ADDR`), plain HTTP.
pub async fn serve_metrics(
    exposition: Arc<dyn Exposition>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = scrape_route(Router::new(), exposition)
        .fallback(|| async { crate::not_found().await })
        .layer(crate::request_id::RequestIdLayer)
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
