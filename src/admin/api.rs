//! The admin API's JSON: the daemon's status, and savepoints (with or without a stop) through
//! the same channels as the control socket (`control::dispatch`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{MAX_BODY, MAX_SAVEPOINT_WAIT, REQUEST_TIMEOUT, Shared, refused};
use crate::metrics::status::Status;

/// `GET /api/v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub checkpoint_interval_ms: u64,
    pub pipelines: Vec<ThreadStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ThreadStatus {
    pub pipeline: String,
    pub thread: u32,
    pub phase: String,
    pub live: Verdict,
    pub ready: Verdict,
    #[serde(flatten)]
    pub status: StatusBody,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Verdict {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<Result<(), String>> for Verdict {
    fn from(r: Result<(), String>) -> Self {
        Self {
            ok: r.is_ok(),
            reason: r.err(),
        }
    }
}

/// [`Status`] as the API shows it (read back by the CLI and the tests).
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusBody {
    pub partitions: Vec<serde_json::Value>,
    pub checkpoints: Vec<serde_json::Value>,
    pub records_committed: u64,
    /// Records per second, one figure per 5 s sample: (Unix seconds, rate).
    pub throughput: Vec<(f64, f64)>,
    pub restarts: u64,
    pub last_error: Option<String>,
}

impl From<&Status> for StatusBody {
    fn from(s: &Status) -> Self {
        fn json<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).unwrap_or_default()
        }
        Self {
            partitions: s.partitions.iter().map(json).collect(),
            checkpoints: s.checkpoints.iter().map(json).collect(),
            records_committed: s.records_committed,
            throughput: s.rates(),
            restarts: s.restarts,
            last_error: s.last_error.clone(),
        }
    }
}

pub(super) fn daemon_status(shared: &Shared) -> DaemonStatus {
    let pipelines = shared
        .metrics
        .threads()
        .iter()
        .map(|h| {
            let (live, ready) = h.verdicts(shared.liveness_timeout);
            let status = h.status();
            ThreadStatus {
                pipeline: h.pipeline.clone(),
                thread: h.thread,
                phase: serde_json::to_value(h.phase())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                live: live.into(),
                ready: ready.into(),
                status: (&status).into(),
            }
        })
        .collect();
    DaemonStatus {
        checkpoint_interval_ms: u64::try_from(shared.interval.as_millis()).unwrap_or(u64::MAX),
        pipelines,
    }
}

pub(super) async fn status(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(daemon_status(&shared)).into_response()
}

/// `POST /api/v1/savepoints`: `{"dir": …, "stop": bool, "pipeline": …, "timeout_s": …}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavepointRequest {
    /// Savepoints go to `<dir>/<pipeline>` (a path on the daemon's host); without it, under
    /// `checkpoint.savepoint_dir`.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    /// Stop each pipeline once its savepoint is taken.
    #[serde(default)]
    pub stop: bool,
    /// Only this pipeline.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// How long to wait for the savepoints (default 120 s).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// The token is checked before the body is read; the body must arrive within
/// [`REQUEST_TIMEOUT`] and hold at most [`MAX_BODY`] bytes.
pub(super) async fn savepoints(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Some(refusal) = refused(&shared, &headers) {
        return refusal;
    }
    let body =
        match tokio::time::timeout(REQUEST_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a request body holds at most {MAX_BODY} bytes\n"),
                )
                    .into_response();
            }
            Err(_) => {
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    "the body did not arrive in time\n",
                )
                    .into_response();
            }
        };
    let asked: SavepointRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad request: {e}\n")).into_response();
        }
    };
    let wait = Duration::from_secs(asked.timeout_s.unwrap_or(120)).min(MAX_SAVEPOINT_WAIT);
    let request = crate::control::Request {
        dir: asked.dir,
        stop: asked.stop,
        pipeline: asked.pipeline,
    };
    let dispatched = crate::control::dispatch(request, &shared.pipelines);
    match tokio::time::timeout(wait, dispatched).await {
        Ok(response) => {
            let status = if response.errors.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (status, axum::Json(response)).into_response()
        }
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("the savepoints were not all taken within {wait:?}\n"),
        )
            .into_response(),
    }
}
