//! The HTTP listener of `[admin]`, on the daemon's async runtime (never a pipeline thread):
//!
//! - `GET /metrics`: every metric in the OpenMetrics text format, which Prometheus scrapes.
//! - `GET /livez`, `GET /readyz`: 200 or 503, with a JSON body giving each pipeline thread's
//!   verdict and, when it fails, why (`metrics::health`).
//! - `GET /api/v1/status` and `POST /api/v1/savepoints` (`admin/api.rs`); `GET /`, the status
//!   page (`admin/page.rs`). `admin/client.rs` is the CLI's side.
//!
//! A request that changes something needs `Authorization: Bearer <token>` with the token of
//! `admin.token_file` or `admin.token_env`, compared in constant time; without a configured
//! token such requests are refused (the control socket serves them). Bodies over [`MAX_BODY`]
//! are refused; a request's headers must arrive within [`REQUEST_TIMEOUT`] and it is answered
//! within it (a savepoint's own wait is the client's `timeout`, up to [`MAX_SAVEPOINT_WAIT`]).
//! Up to [`MAX_CONNECTIONS`] connections are served concurrently, one request each.

mod api;
pub mod client;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::AdminConfig;
use crate::control::Command;
use crate::metrics::{Metrics, health};

/// The largest request body taken.
pub const MAX_BODY: usize = 64 * 1024;
/// How long one request may take, but a savepoint.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a savepoint request may wait for the pipelines.
pub const MAX_SAVEPOINT_WAIT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("admin.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin token: {0}")]
    Token(String),
    #[error("admin API at {url}: {message}")]
    Client { url: String, message: String },
}

struct Shared {
    metrics: Arc<Metrics>,
    liveness_timeout: Duration,
    token: Option<String>,
    /// Each pipeline's control channel (as the control socket has them).
    pipelines: Vec<(String, mpsc::Sender<Command>)>,
    interval: Duration,
}

/// The bound listener: binding happens before the pipelines start, so a taken port stops the
/// daemon at once.
pub struct Listener {
    listener: tokio::net::TcpListener,
    /// The token requests that change something must carry, read at bind: a file or
    /// variable gone since validation stops the daemon at start.
    token: Option<String>,
}

impl Listener {
    pub async fn bind(config: &AdminConfig) -> Result<Self, Error> {
        let token = config
            .token
            .as_ref()
            .map(crate::config::TokenSource::read)
            .transpose()
            .map_err(Error::Token)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        Ok(Self { listener, token })
    }

    /// The address bound (the port, when `listen` asked for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let quick = Router::new()
        .route("/", get(page::status_page))
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(api::status))
        .layer(axum::middleware::from_fn(within_timeout));
    // a savepoint takes as long as the pipelines need; the client's timeout bounds it
    let slow = Router::new().route("/api/v1/savepoints", post(api::savepoints));
    quick
        .merge(slow)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// What the listener serves.
pub struct Served {
    pub metrics: Arc<Metrics>,
    pub pipelines: Vec<(String, mpsc::Sender<Command>)>,
    pub interval: Duration,
}

/// Serves until `cancel`, each connection on its own task: one request per connection, its
/// headers within [`REQUEST_TIMEOUT`], at most [`MAX_CONNECTIONS`] at once (more wait to be
/// accepted).
pub async fn serve(
    listener: Listener,
    config: &AdminConfig,
    served: Served,
    cancel: CancellationToken,
) {
    let shared = Arc::new(Shared {
        metrics: served.metrics,
        liveness_timeout: config.liveness_timeout,
        token: listener.token,
        pipelines: served.pipelines,
        interval: served.interval,
    });
    let service = hyper_util::service::TowerToHyperService::new(router(shared));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let slot = tokio::select! {
            () = cancel.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // out of file descriptors and the like: do not spin
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admin listener: connection ended");
            }
            drop(slot);
        });
    }
    // answers in flight (a `flumen stop` over HTTP) are written before the daemon exits
    connections.close();
    connections.wait().await;
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

/// The refusal, unless `headers` carry the configured token (`Authorization: Bearer …`),
/// compared in constant time.
fn refused(shared: &Shared, headers: &axum::http::HeaderMap) -> Option<Response> {
    use subtle::ConstantTimeEq as _;
    let Some(token) = &shared.token else {
        return Some((
            StatusCode::FORBIDDEN,
            "changes over HTTP need admin.token_file or admin.token_env in the daemon's config; \
             without them, use the control socket (flumen savepoint trigger on the daemon's host)\n",
        )
            .into_response());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(token.as_bytes())) => None,
        Some(_) => Some((StatusCode::FORBIDDEN, "wrong token\n").into_response()),
        None => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "this request needs Authorization: Bearer <token>\n",
            )
                .into_response(),
        ),
    }
}
