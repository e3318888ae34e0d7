//! The engine's errors, and what the restart strategy does with each (`ErrorKind`).

use std::time::Duration;

use crate::checkpoint;
use crate::checkpoint::savepoint;
use crate::kafka;
use crate::position::{NextOffset, Partition};
use crate::state;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{topic}/{partition} offset {offset}: {stage}: {message}")]
    Record {
        topic: String,
        partition: i32,
        offset: i64,
        stage: &'static str,
        message: String,
        /// The failing operator's `on_error` override, if it has one.
        policy: Option<crate::config::OnError>,
    },
    /// A closing window's result could not be made or produced (no input record to skip:
    /// the pipeline stops, naming the window).
    #[error("{partition}: window [{start}, {end}) of key {key:?}: {message}")]
    Window {
        partition: Partition,
        key: String,
        start: i64,
        end: i64,
        message: String,
    },
    /// A custom operator's timer failed (no input record to skip: the pipeline stops).
    #[error("{partition}: timer at {at} of key {key:?}: {message}")]
    Timer {
        partition: Partition,
        key: String,
        at: i64,
        message: String,
    },
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::store::Error),
    #[error(transparent)]
    Remote(#[from] checkpoint::remote::Error),
    #[error(transparent)]
    Savepoint(#[from] savepoint::Error),
    #[error("{0}")]
    PipelineRunning(String),
    #[error("{0}")]
    StateChoice(String),
    #[error("online savepoint: {0}")]
    Cut(String),
    #[error("cannot restore savepoint {}: {message}", dir.display())]
    SavepointMismatch {
        dir: std::path::PathBuf,
        message: String,
    },
    #[error(
        "{partition}: the group committed offset {committed}, but no checkpoint in {dir} has a snapshot at that offset (newest: {newest}); \
         refusing to start, as that would lose or double state. Restore the checkpoint directory, or pass --allow-empty-state to start this partition empty"
    )]
    NoMatchingSnapshot {
        partition: Partition,
        committed: NextOffset,
        newest: String,
        dir: String,
    },
    #[error(
        "{partition}: the group's committed offset {committed} is below the log start {log_start} (log end {log_end}): \
         records {committed}..{log_start} were deleted (retention, or delete-records) before this pipeline processed them. \
         Nothing was skipped; the pipeline stops. {remedy}"
    )]
    OffsetOutOfRange {
        partition: Partition,
        committed: NextOffset,
        log_start: i64,
        log_end: i64,
        /// What the operator can do, with the command.
        remedy: String,
    },
    #[error(
        "{partition}: the group's committed offset {committed} is beyond the log end {log_end} (log start {log_start}): \
         the broker no longer has records this pipeline processed and committed (an unclean leader election, a broker \
         whose disk lost its latest writes, a topic deleted and created again). Nothing is read past them; the pipeline \
         stops. {remedy}"
    )]
    OffsetBeyondLogEnd {
        partition: Partition,
        committed: NextOffset,
        log_start: i64,
        log_end: i64,
        remedy: String,
    },
    #[error(
        "{partition}: {message}; refusing to start, as any other snapshot would lose or repeat that checkpoint's work. \
         Restore the checkpoint directory, or pass --allow-empty-state to start this partition empty"
    )]
    NamedCheckpointMissing {
        partition: Partition,
        /// Which checkpoint the commit names, and why it cannot be restored.
        message: String,
    },
    #[error(
        "the outcome of committing checkpoint {0} is unknown after retries; restarting to settle it"
    )]
    UnknownCommitOutcome(checkpoint::CheckpointId),
    #[error(
        "the transactional producer failed fatally (fenced by another instance, or a fatal broker error): {0}"
    )]
    Fatal(kafka::Error),
    /// The process was frozen longer than the group session (`freeze.rs`) and then failed:
    /// another instance may own this pipeline thread's partitions and transactional id now.
    #[error(
        "this process was frozen for {frozen:?}, longer than the group session timeout: another instance may own its partitions and transactional id now, so it stops instead of restarting in-process; the failure after the freeze: {error}"
    )]
    Frozen { frozen: Duration, error: Box<Error> },
    /// The consumer's static membership was taken by its own rejoin after its session
    /// expired (librdkafka issue 3437), not by a newer instance: the producer still owns the
    /// transactional id (`Producer::ownership`). Restarts in-process.
    #[error(
        "the consumer was fenced by its own rejoin after its session expired (the producer still owns transactional id {transactional_id}, so no other instance has taken over): {error}"
    )]
    Rejoined {
        transactional_id: String,
        error: Box<Error>,
    },
    /// The consumer's static membership was taken and the producer no longer owns its
    /// transactional id, or cannot tell: stop (rule 3).
    #[error(
        "fenced as a static member of the group, and for transactional id {transactional_id} {verdict}: {error}"
    )]
    Fenced {
        transactional_id: String,
        verdict: &'static str,
        error: Box<Error>,
    },
    /// A panic outside the processing of one record (which is that record's error): the
    /// daemon stops non-zero, never silently with one pipeline less.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The schema registry cannot be reached: restart with backoff and ask again.
    #[error("{0}")]
    SchemaRegistry(String),
    /// A sink's schema is refused by the schema registry, or has another id there.
    #[error("sink {topic}: {message}")]
    SinkSchema { topic: String, message: String },
}

impl Error {
    /// A decode error of a record: the registry's outage is the pipeline's (it restarts and
    /// tries again), anything else is the record's (its error policy applies).
    pub(crate) fn decode(e: crate::codec::Error, record: impl FnOnce(String) -> Self) -> Self {
        match e {
            crate::codec::Error::Registry(m) => Self::SchemaRegistry(m),
            other => record(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What the daemon should do with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A record cannot be processed: stop (until the error policy of a later issue).
    BadRecord,
    /// State cannot be restored consistently: stop, the operator must act.
    State,
    /// Fenced or fatal: stop; restarting in-process would only be fenced again.
    Fatal,
    /// Transient: restart the pipeline with backoff.
    Transient,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Record { .. } | Self::Window { .. } | Self::Timer { .. } => ErrorKind::BadRecord,
            Self::NoMatchingSnapshot { .. }
            | Self::NamedCheckpointMissing { .. }
            | Self::OffsetOutOfRange { .. }
            | Self::OffsetBeyondLogEnd { .. }
            | Self::SavepointMismatch { .. }
            | Self::StateChoice(_)
            | Self::Savepoint(_)
            | Self::Checkpoint(checkpoint::store::Error::Corrupt { .. })
            | Self::Remote(checkpoint::remote::Error::Corrupt { .. }) => ErrorKind::State,
            Self::State(state::Error::Corrupt { .. }) => ErrorKind::State,
            Self::Fatal(_)
            | Self::Frozen { .. }
            | Self::Fenced { .. }
            | Self::Panicked(_)
            | Self::PipelineRunning(_)
            | Self::Cut(_)
            | Self::SinkSchema { .. }
            | Self::Remote(
                checkpoint::remote::Error::Open { .. }
                | checkpoint::remote::Error::Collision { .. },
            ) => ErrorKind::Fatal,
            Self::Kafka(e) if e.txn_failure() == checkpoint::protocol::TxnFailure::Fatal => {
                ErrorKind::Fatal
            }
            Self::Kafka(_)
            | Self::State(_)
            | Self::Checkpoint(_)
            | Self::Remote(_)
            | Self::UnknownCommitOutcome(_)
            | Self::Rejoined { .. }
            | Self::SchemaRegistry(_) => ErrorKind::Transient,
        }
    }
}

impl Error {
    /// The consumer's static membership was taken (`kafka::Error::is_static_member_fenced`).
    pub(super) fn is_static_member_fenced(&self) -> bool {
        matches!(self, Self::Kafka(e) if e.is_static_member_fenced())
    }
}

impl From<checkpoint::catalog::Error> for Error {
    fn from(e: checkpoint::catalog::Error) -> Self {
        match e {
            checkpoint::catalog::Error::Local(e) => Self::Checkpoint(e),
            checkpoint::catalog::Error::Remote(e) => Self::Remote(e),
        }
    }
}

impl Error {
    /// The group's commit of `partition` names a checkpoint that cannot be restored from `dir`.
    pub(crate) fn named_checkpoint_missing(
        partition: &Partition,
        refusal: &checkpoint::protocol::Refusal,
        dir: &std::path::Path,
    ) -> Self {
        let checkpoint::protocol::Refusal {
            tag,
            committed,
            why,
        } = refusal;
        Self::NamedCheckpointMissing {
            partition: partition.clone(),
            message: format!(
                "the group's commit (offset {committed}) names checkpoint {} of pipeline {:?} written by {:?}, which cannot be restored from {}: {why}",
                tag.checkpoint,
                tag.pipeline,
                tag.writer,
                dir.display()
            ),
        }
    }
}

/// An error with its sources, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
