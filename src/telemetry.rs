//! Logs, Prometheus metrics and the health endpoint of the operator process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// `text` for people, `json` for log collectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

/// The operator's Prometheus metrics.
pub struct Metrics {
    pub reconciliations: Counter,
    pub failures: Family<StageLabel, Counter>,
    pub duration: Histogram,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("popup_operator");
        let reconciliations = Counter::default();
        let failures = Family::<StageLabel, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register("reconciliations", "Reconciles started", reconciliations.clone());
        registry.register("reconcile_failures", "Reconciles that failed, by stage", failures.clone());
        registry.register("reconcile_duration_seconds", "Time one reconcile took", duration.clone());
        Self { reconciliations, failures, duration, registry }
    }
}

impl Metrics {
    pub fn observe(&self, elapsed: Duration, failed_stage: Option<&str>) {
        self.reconciliations.inc();
        self.duration.observe(elapsed.as_secs_f64());
        if let Some(stage) = failed_stage {
            self.failures.get_or_create(&StageLabel { stage: stage.to_string() }).inc();
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("metrics encode");
        out
    }
}

/// Shared with the HTTP server: metrics, and whether the controller is running.
#[derive(Clone, Default)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], h.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_count_reconciles_and_failures_by_stage() {
        let m = Metrics::default();
        m.observe(Duration::from_millis(20), None);
        m.observe(Duration::from_millis(30), Some("apply"));
        let text = m.render();
        assert!(text.contains("popup_operator_reconciliations_total 2"), "{text}");
        assert!(text.contains(r#"popup_operator_reconcile_failures_total{stage="apply"} 1"#), "{text}");
        assert!(text.contains("popup_operator_reconcile_duration_seconds_count 2"), "{text}");
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn health_endpoints_answer_over_http() {
        let health = Health::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(health.clone())).into_future());
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"), "not ready before the controller runs");
        health.ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        health.metrics.observe(Duration::from_millis(5), None);
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.contains("popup_operator_reconciliations_total 1"), "{metrics}");
    }
}
