//! The HTTP listener of `[admin]`, on the daemon's async runtime (never a pipeline thread):
//!
//! - `GET /metrics`: every metric in the OpenMetrics text format, which Prometheus scrapes.
//! - `GET /livez`, `GET /readyz`: 200 or 503, with a JSON body giving each pipeline thread's
//!   verdict and, when it fails, why (`metrics::health`).
//!
//! Requests carry no body worth reading: bodies over [`MAX_BODY`] are refused, and every
//! request is answered within [`REQUEST_TIMEOUT`] or dropped. Connections are served
//! concurrently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::config::AdminConfig;
use crate::metrics::{Metrics, health};

/// The largest request body taken.
pub const MAX_BODY: usize = 64 * 1024;
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("admin.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct Shared {
    metrics: Arc<Metrics>,
    liveness_timeout: Duration,
}

/// The bound listener: binding happens before the pipelines start, so a taken port stops the
/// daemon at once.
pub struct Listener {
    listener: tokio::net::TcpListener,
}

impl Listener {
    pub async fn bind(config: &AdminConfig) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        Ok(Self { listener })
    }

    /// The address bound (the port, when `listen` asked for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(within_timeout))
        .with_state(shared)
}

/// Serves until `cancel`.
pub async fn serve(
    listener: Listener,
    config: &AdminConfig,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let shared = Arc::new(Shared {
        metrics,
        liveness_timeout: config.liveness_timeout,
    });
    let served = axum::serve(listener.listener, router(shared))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the admin listener stopped");
    }
}

async fn within_timeout(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn livez(State(shared): State<Arc<Shared>>) -> Response {
    probe(&health::liveness(
        &shared.metrics.threads(),
        shared.liveness_timeout,
    ))
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    probe(&health::readiness(&shared.metrics.threads()))
}

fn probe(report: &health::Report) -> Response {
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}
