//! Where logs go and in which shape: stderr, plain text for people or one
//! JSON object per line for collectors, filtered by `RUST_LOG`. Built with
//! the `otlp` feature, spans are also exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set (docs/metrics.md).

use clap::ValueEnum;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line: the event's fields at the top level, the
    /// current span (`span`) and every enclosing one (`spans`); a request's
    /// lines also carry its `request_id` at the top level.
    Json,
}

/// Keeps the trace exporter (when there is one) until [`Logging::shutdown`]
/// flushes it.
#[must_use = "call shutdown() at exit, or spans still queued are lost"]
pub struct Logging {
    #[cfg(feature = "otlp")]
    traces: Option<otlp::Traces>,
}

impl Logging {
    /// Sends the spans still queued; call once, at exit.
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(traces) = self.traces {
            traces.shutdown();
        }
    }
}

/// JSON lines with the request's id as a top-level `request_id` too (it is
/// also in `span` and `spans`), so a collector can index every line of a
/// request by one field. Lines outside any request have none.
struct RequestIdFirst<F>(F);

impl<S, N, F> FormatEvent<S, N> for RequestIdFirst<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let own_field = event.metadata().fields().field("request_id").is_some();
        match (line.strip_prefix('{'), own_field) {
            (Some(rest), false) => match request_id(ctx) {
                // Quoted and escaped as JSON: an id may hold `"` or `\`.
                Some(id) => write!(
                    writer,
                    "{{\"request_id\":{},{rest}",
                    serde_json::Value::String(id)
                ),
                None => writer.write_str(&line),
            },
            _ => writer.write_str(&line),
        }
    }
}

/// The `request_id` of the innermost enclosing span that has one, from the
/// fields the JSON layer keeps formatted on each span.
fn request_id<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    ctx.event_scope()?.find_map(|span| {
        let extensions = span.extensions();
        let fields = extensions.get::<FormattedFields<N>>()?;
        let fields: serde_json::Value = serde_json::from_str(fields).ok()?;
        fields.get("request_id")?.as_str().map(str::to_owned)
    })
}

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init(format: LogFormat) -> Logging {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .event_format(RequestIdFirst(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true),
            ))
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt);
    #[cfg(feature = "otlp")]
    {
        let traces = otlp::Traces::from_env();
        let layer = traces.as_ref().map(otlp::Traces::layer);
        registry.with(layer).with(filter).init();
        if let Some(traces) = &traces {
            tracing::info!(
                endpoint = traces.endpoint(),
                "exporting spans over OTLP/HTTP"
            );
        }
        Logging { traces }
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.with(filter).init();
        Logging {}
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    //! Spans over OTLP/HTTP (protobuf), configured by the standard
    //! `OTEL_EXPORTER_OTLP_*` and `OTEL_SERVICE_NAME` variables.

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Registry;
    use tracing_subscriber::layer::Layered;

    const ENDPOINT_VARS: [&str; 2] = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ];

    pub(super) struct Traces {
        provider: SdkTracerProvider,
        endpoint: String,
    }

    type Inner = Layered<Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>, Registry>;

    impl Traces {
        /// `None` unless an endpoint variable is set (or the exporter cannot
        /// be built, which is said on stderr: logging is not up yet).
        pub(super) fn from_env() -> Option<Traces> {
            let endpoint = ENDPOINT_VARS
                .iter()
                .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))?;
            // The exporter's blocking HTTP client must not be built (or
            // dropped) on the async runtime's threads.
            let built = std::thread::spawn(|| {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .build()
            })
            .join();
            let exporter = match built {
                Ok(Ok(exporter)) => exporter,
                Ok(Err(err)) => {
                    eprintln!("OTLP span export is off: {err}");
                    return None;
                }
                Err(_) => {
                    eprintln!("OTLP span export is off: building the exporter panicked");
                    return None;
                }
            };
            let mut resource = Resource::builder();
            if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
                resource = resource.with_service_name("velocity-auth");
            }
            let provider = SdkTracerProvider::builder()
                .with_resource(resource.build())
                .with_batch_exporter(exporter)
                .build();
            Some(Traces { provider, endpoint })
        }

        pub(super) fn endpoint(&self) -> &str {
            &self.endpoint
        }

        pub(super) fn layer(
            &self,
        ) -> tracing_opentelemetry::OpenTelemetryLayer<Inner, opentelemetry_sdk::trace::Tracer>
        {
            tracing_opentelemetry::layer().with_tracer(self.provider.tracer("velocity-auth"))
        }

        /// Flushes queued spans; off the async runtime, as the exporter's
        /// client blocks.
        pub(super) fn shutdown(self) {
            let provider = self.provider;
            let done = std::thread::spawn(move || provider.shutdown()).join();
            if let Ok(Err(err)) = done {
                eprintln!("flushing OTLP spans failed: {err}");
            }
        }
    }
}
