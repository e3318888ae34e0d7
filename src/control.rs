//! The daemon's control socket, for `flumen savepoint trigger` and `flumen stop`.
//!
//! A Unix domain socket at `<checkpoint.dir>/flumen.sock`, created with mode 0600: only the
//! daemon's own user can connect, and nothing listens on the network. One JSON request per
//! connection, one JSON response. The server forwards a request to every pipeline thread over
//! a bounded channel; each thread answers when its savepoint is durable and committed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub const SOCKET: &str = "flumen.sock";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no running Flumen daemon answers at {}: {source}", path.display())]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another Flumen daemon already runs with this checkpoint directory (it answers at {})", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad control message: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Savepoints go to `<dir>/<pipeline>`; without it, under `checkpoint.savepoint_dir`.
    pub dir: Option<PathBuf>,
    /// Stop each pipeline once its savepoint is taken.
    pub stop: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub savepoints: Vec<Taken>,
    /// One line per pipeline that could not take its savepoint.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Taken {
    pub pipeline: String,
    pub path: PathBuf,
    pub checkpoint: u64,
    pub keys: u64,
    pub pending: u64,
}

/// A request as one pipeline thread receives it.
#[derive(Debug)]
pub struct Command {
    pub dir: Option<PathBuf>,
    pub stop: bool,
    pub reply: oneshot::Sender<Result<Taken, String>>,
}

pub fn socket_path(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir.join(SOCKET)
}

/// Binds the socket, refusing when another daemon answers on it (two daemons must never share
/// a checkpoint directory) and replacing a stale one left by a crash.
pub fn bind(checkpoint_dir: &Path) -> Result<tokio::net::UnixListener, Error> {
    let path = socket_path(checkpoint_dir);
    std::fs::create_dir_all(checkpoint_dir).map_err(|source| Error::Io {
        op: "create checkpoint dir",
        path: checkpoint_dir.to_path_buf(),
        source,
    })?;
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(Error::AlreadyRunning(path));
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                op: "remove stale socket",
                path,
                source,
            });
        }
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(|source| Error::Io {
        op: "bind control socket",
        path: path.clone(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        Error::Io {
            op: "restrict control socket",
            path: path.clone(),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves requests until `cancel`; a stop request cancels once every pipeline has answered.
pub async fn serve(
    listener: tokio::net::UnixListener,
    pipelines: Vec<(String, mpsc::Sender<Command>)>,
    cancel: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            () = cancel.cancelled() => return,
            conn = listener.accept() => conn,
        };
        let stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                continue;
            }
        };
        // one request at a time: savepoints of one daemon never overlap
        if let Err(e) = handle(stream, &pipelines).await {
            tracing::warn!(error = %e, "control request failed");
        }
    }
}

async fn handle(
    stream: tokio::net::UnixStream,
    pipelines: &[(String, mpsc::Sender<Command>)],
) -> Result<(), Error> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read);
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => dispatch(request, pipelines).await,
        Err(e) => Response {
            savepoints: Vec::new(),
            errors: vec![format!("bad request: {e}")],
        },
    };
    let mut bytes = serde_json::to_vec(&response).map_err(|e| Error::Protocol(e.to_string()))?;
    bytes.push(b'\n');
    write
        .write_all(&bytes)
        .await
        .map_err(|e| Error::Protocol(e.to_string()))
}

async fn dispatch(request: Request, pipelines: &[(String, mpsc::Sender<Command>)]) -> Response {
    let mut waiting = Vec::new();
    let mut response = Response::default();
    for (name, tx) in pipelines {
        let (reply, rx) = oneshot::channel();
        let command = Command {
            dir: request.dir.clone(),
            stop: request.stop,
            reply,
        };
        if tx.send(command).await.is_err() {
            response
                .errors
                .push(format!("pipeline {name}: not running"));
        } else {
            waiting.push((name, rx));
        }
    }
    for (name, rx) in waiting {
        match rx.await {
            Ok(Ok(taken)) => response.savepoints.push(taken),
            Ok(Err(e)) => response.errors.push(format!("pipeline {name}: {e}")),
            Err(_) => response.errors.push(format!(
                "pipeline {name}: stopped before taking the savepoint"
            )),
        }
    }
    response
}

/// The client side (blocking): sends `request` and waits up to `timeout` for the answer.
pub fn request(
    checkpoint_dir: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, Error> {
    let path = socket_path(checkpoint_dir);
    let mut stream =
        std::os::unix::net::UnixStream::connect(&path).map_err(|source| Error::NotRunning {
            path: path.clone(),
            source,
        })?;
    let io = |op: &'static str| {
        let path = path.clone();
        move |source| Error::Io { op, path, source }
    };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(io("configure"))?;
    let mut bytes = serde_json::to_vec(request).map_err(|e| Error::Protocol(e.to_string()))?;
    bytes.push(b'\n');
    stream.write_all(&bytes).map_err(io("send request to"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(io("read the answer of"))?;
    serde_json::from_str(&line).map_err(|e| Error::Protocol(format!("{e}: {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reaches_every_pipeline_and_their_answers_come_back() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _g = rt.enter();
            bind(tmp.path()).unwrap()
        };
        // a second daemon on the same checkpoint directory is refused
        {
            let _g = rt.enter();
            assert!(matches!(bind(tmp.path()), Err(Error::AlreadyRunning(_))));
        }
        let (a_tx, mut a_rx) = mpsc::channel(1);
        let (b_tx, mut b_rx) = mpsc::channel(1);
        let cancel = CancellationToken::new();
        rt.spawn(serve(
            listener,
            vec![("a".into(), a_tx), ("b".into(), b_tx)],
            cancel.clone(),
        ));
        let pipeline_a = std::thread::spawn(move || {
            let c = a_rx.blocking_recv().unwrap();
            assert!(c.stop);
            c.reply
                .send(Ok(Taken {
                    pipeline: "a".into(),
                    path: c.dir.unwrap().join("a"),
                    checkpoint: 3,
                    keys: 10,
                    pending: 1,
                }))
                .unwrap();
        });
        let pipeline_b = std::thread::spawn(move || {
            let c = b_rx.blocking_recv().unwrap();
            c.reply.send(Err("disk full".into())).unwrap();
        });
        let request = Request {
            dir: Some(PathBuf::from("/sp")),
            stop: true,
        };
        let response = super::request(tmp.path(), &request, Duration::from_secs(10)).unwrap();
        pipeline_a.join().unwrap();
        pipeline_b.join().unwrap();
        assert_eq!(response.savepoints.len(), 1);
        assert_eq!(response.savepoints[0].path, PathBuf::from("/sp/a"));
        assert_eq!(response.errors, vec!["pipeline b: disk full".to_string()]);
        cancel.cancel();
    }

    #[test]
    fn without_a_daemon_the_client_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let request = Request {
            dir: None,
            stop: false,
        };
        let err = super::request(tmp.path(), &request, Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string().contains("no running Flumen daemon"),
            "{err}"
        );
    }
}
