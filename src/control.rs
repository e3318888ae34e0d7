//! The daemon's control socket, for `flumen savepoint trigger` and `flumen stop`, and the
//! locks that keep two daemons from sharing one state directory or one pipeline's writer.
//!
//! A Unix domain socket at `<state.dir>/control/flumen.sock`, inside a directory of mode 0700
//! (so there is no moment in which another user could connect) and itself 0600; nothing
//! listens on the network. The daemon holds `control/daemon.lock` (`flock`) for as long as it
//! runs, so a second daemon on the same state directory is refused before it touches the
//! socket. One JSON request per connection (at most `MAX_REQUEST` bytes, within
//! `REQUEST_TIMEOUT`), one JSON response; connections are served concurrently, so a silent
//! client holds up nobody. The server forwards a request to every pipeline thread over a
//! bounded channel; each thread answers when its savepoint is durable and committed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub const SOCKET: &str = "flumen.sock";
/// The directory of the socket and the daemon's lock, under `state.dir`.
const CONTROL_DIR: &str = "control";
/// How long a client may take to send its request, and the daemon to send its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request taken (a request is a directory path and a flag).
const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no running Flumen daemon answers at {}: {source}", path.display())]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another Flumen daemon already runs with this state directory (it holds {})", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("another Flumen daemon already runs pipeline {pipeline:?} as {writer:?} (it holds {}); two writers of one pipeline must have different instance_id", path.display())]
    PipelineLocked {
        pipeline: String,
        writer: String,
        path: PathBuf,
    },
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
    /// Only this pipeline; every one without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
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

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CONTROL_DIR).join(SOCKET)
}

/// The bound control socket, and the lock that makes it this daemon's.
pub struct Listener {
    listener: tokio::net::UnixListener,
    _lock: std::fs::File,
}

/// An exclusive `flock` on `path`, held until the returned file is dropped (or the process
/// ends, however it ends); `None` when another process holds it.
fn try_lock(path: &Path) -> Result<Option<std::fs::File>, Error> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| Error::Io {
            op: "open lock file",
            path: path.to_path_buf(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
            op: "lock",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Locks `pipeline` for `writer` (its transactional id) on this state directory, for as long
/// as the returned file lives: a second daemon running the same pipeline as the same writer
/// would fence the first and share its live state.
pub fn lock_pipeline(
    state_dir: &Path,
    pipeline: &str,
    writer: &str,
) -> Result<std::fs::File, Error> {
    let dir = state_dir.join(pipeline);
    crate::checkpoint::store::private_dir(&dir).map_err(|source| Error::Io {
        op: "create state dir",
        path: dir.clone(),
        source,
    })?;
    let path = dir.join(format!(
        "{}.lock",
        crate::checkpoint::tag::file_safe(writer)
    ));
    try_lock(&path)?.ok_or_else(|| Error::PipelineLocked {
        pipeline: pipeline.to_string(),
        writer: writer.to_string(),
        path,
    })
}

/// Binds the socket in its 0700 directory under `state_dir`, refusing when another daemon
/// holds the state directory's lock; a socket left by a crash is replaced.
pub fn bind(state_dir: &Path) -> Result<Listener, Error> {
    let dir = state_dir.join(CONTROL_DIR);
    crate::checkpoint::store::private_dir(&dir).map_err(|source| Error::Io {
        op: "create control dir",
        path: dir.clone(),
        source,
    })?;
    let lock_path = dir.join("daemon.lock");
    let lock = try_lock(&lock_path)?.ok_or(Error::AlreadyRunning(lock_path))?;
    let path = socket_path(state_dir);
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
    Ok(Listener {
        listener,
        _lock: lock,
    })
}

/// Serves requests until `cancel`, each connection on its own task (a client that sends
/// nothing holds up no other); a stop request cancels once every pipeline has answered.
/// Savepoints of one pipeline never overlap: each pipeline takes one command at a time.
pub async fn serve(
    listener: Listener,
    pipelines: Vec<(String, mpsc::Sender<Command>)>,
    cancel: CancellationToken,
) {
    let pipelines = std::sync::Arc::new(pipelines);
    loop {
        let conn = tokio::select! {
            () = cancel.cancelled() => return,
            conn = listener.listener.accept() => conn,
        };
        let stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                continue;
            }
        };
        let pipelines = pipelines.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &pipelines).await {
                tracing::warn!(error = %e, "control request failed");
            }
        });
    }
}

async fn handle(
    stream: tokio::net::UnixStream,
    pipelines: &[(String, mpsc::Sender<Command>)],
) -> Result<(), Error> {
    use tokio::io::AsyncReadExt as _;
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => {
            return Err(Error::Protocol(format!(
                "no request within {REQUEST_TIMEOUT:?}; connection closed"
            )));
        }
        Ok(Err(e)) => return Err(Error::Protocol(e.to_string())),
        Ok(Ok(_)) if !line.ends_with('\n') => Response {
            savepoints: Vec::new(),
            errors: vec![format!(
                "bad request: not one line of at most {MAX_REQUEST} bytes"
            )],
        },
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => dispatch(request, pipelines).await,
            Err(e) => Response {
                savepoints: Vec::new(),
                errors: vec![format!("bad request: {e}")],
            },
        },
    };
    let mut bytes = serde_json::to_vec(&response).map_err(|e| Error::Protocol(e.to_string()))?;
    bytes.push(b'\n');
    tokio::time::timeout(REQUEST_TIMEOUT, write.write_all(&bytes))
        .await
        .map_err(|_| Error::Protocol("the client did not take the answer".into()))?
        .map_err(|e| Error::Protocol(e.to_string()))
}

/// Sends `request` to every pipeline it names and gathers their answers (the control socket
/// and the admin API both).
pub async fn dispatch(request: Request, pipelines: &[(String, mpsc::Sender<Command>)]) -> Response {
    let mut waiting = Vec::new();
    let mut response = Response::default();
    if let Some(only) = &request.pipeline
        && !pipelines.iter().any(|(name, _)| name == only)
    {
        let names: Vec<&str> = pipelines.iter().map(|(n, _)| n.as_str()).collect();
        response.errors.push(format!(
            "no pipeline {only:?} runs here (running: {})",
            names.join(", ")
        ));
        return response;
    }
    let named = |name: &String| request.pipeline.as_ref().is_none_or(|only| only == name);
    for (name, tx) in pipelines.iter().filter(|(name, _)| named(name)) {
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
pub fn request(state_dir: &Path, request: &Request, timeout: Duration) -> Result<Response, Error> {
    let path = socket_path(state_dir);
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

    /// A one-worker runtime and the socket bound in `dir`.
    fn runtime_and_socket(dir: &Path) -> (tokio::runtime::Runtime, Listener) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _g = rt.enter();
            bind(dir).unwrap()
        };
        (rt, listener)
    }

    #[test]
    fn a_request_reaches_every_pipeline_and_their_answers_come_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (rt, listener) = runtime_and_socket(tmp.path());
        // a second daemon on the same state directory is refused
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
            pipeline: None,
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
    fn an_oversized_request_is_refused_and_a_silent_client_is_dropped() {
        use std::io::Read as _;
        let tmp = tempfile::tempdir().unwrap();
        let (rt, listener) = runtime_and_socket(tmp.path());
        let cancel = CancellationToken::new();
        rt.spawn(serve(listener, Vec::new(), cancel.clone()));
        let path = socket_path(tmp.path());
        // a silent client first: the next one is served all the same
        let _silent = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let mut big = std::os::unix::net::UnixStream::connect(&path).unwrap();
        // no newline within the limit (more would stay unread, and closing on it resets)
        big.write_all(&vec![b'x'; usize::try_from(MAX_REQUEST).unwrap()])
            .unwrap();
        big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        big.read_to_string(&mut answer).unwrap();
        assert!(
            answer.contains("not one line of at most 65536 bytes"),
            "{answer}"
        );
        cancel.cancel();
    }

    #[test]
    fn without_a_daemon_the_client_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let request = Request {
            dir: None,
            stop: false,
            pipeline: None,
        };
        let err = super::request(tmp.path(), &request, Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string().contains("no running Flumen daemon"),
            "{err}"
        );
    }
}
