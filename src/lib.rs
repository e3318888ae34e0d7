//! Flumen: exactly-once stateful stream processing for Apache Kafka.
//!
//! A pipeline reads a Kafka topic, runs a short list of operators (filter and map, by field or
//! by jq expression; key_by; an aggregate, optionally windowed in event time; dedupe; a
//! stream-table join; or a user's own keyed operator) whose keyed state lives in RocksDB or in
//! memory, and writes a Kafka topic. Every
//! `checkpoint.interval` the state is snapshotted to disk and the source offsets commit in the
//! same Kafka transaction as the outputs, so each input's effect reaches the output exactly once,
//! through crashes. `ARCHITECTURE.md` describes the checkpoint protocol and the task model.
//!
//! # Layout
//! - [`cli`]: the `flumen` command line (`run`, `validate`, `stop`, `savepoint`, `checkpoint`);
//!   the only place with `anyhow`.
//! - [`config`]: TOML → raw serde mirror → validated, typed [`config::Config`] (all errors at
//!   once, `key.path (line:col): message`).
//! - [`pipeline`]: the engine: each pipeline thread (`parallelism` per pipeline) runs the
//!   consume → process → checkpoint loop (`pipeline/task/`); [`pipeline::txn`] is the transaction every write goes through,
//!   [`pipeline::topology`] the pipeline's shape and each task's role, [`pipeline::keyed`] one
//!   file per keyed operator kind (`step(state, input) -> Step`), [`pipeline::operator`] the
//!   record-level logic, free of I/O, and [`pipeline::custom`] the API for operators written in
//!   Rust ([`KeyedOperator`], [`register_operator`]).
//! - [`kafka`]: everything that touches rdkafka: client settings, the transactional producer,
//!   the consumer with its rebalance events, topic administration, group-less readers, and the
//!   pipeline's control topic (requests every instance hears: an online savepoint's cut).
//! - [`state`]: the keyed-state API and its backends (RocksDB, memory); the only user of rocksdb.
//! - [`checkpoint`]: the pure protocol decisions ([`checkpoint::protocol`]), the on-disk
//!   snapshot store (manifest, checksums, fsync, garbage collection; a directory per writer,
//!   shared by a pipeline's threads and instances), its copy in an object store
//!   ([`checkpoint::remote`], the only user of object_store) and the portable savepoint format
//!   ([`checkpoint::savepoint`]).
//! - [`codec`]: record formats (json, string, bytes, Avro with `[schemas]` and a schema registry)
//!   between Kafka bytes and records; the only user of apache-avro and the HTTP client.
//! - [`daemon`]: the daemon: a thread per pipeline thread, the control socket, shutdown with a
//!   deadline; [`cli`] runs it.
//! - [`expr`]: jq expressions (`jaq`): checked where the config is validated, run by the
//!   operators; the only user of jaq.
//! - [`control`]: the daemon's control socket (savepoint trigger, stop-with-savepoint); requests
//!   for every instance of a pipeline go through its control topic instead ([`kafka::control`]).
//! - [`metrics`]: the daemon's figures (Prometheus counters, gauges and histograms, labelled by
//!   pipeline, topic and partition) and each pipeline thread's health (heartbeat, phase, last
//!   commit); a leaf the pipeline threads write and [`admin`] reads.
//! - [`admin`]: the opt-in HTTP listener of `[admin]`: `/metrics`, `/livez`, `/readyz`; the only
//!   user of axum.
//! - [`position`]: `Partition`, `NextOffset`, `PartitionOffset`: positions in Kafka, one
//!   vocabulary for every module (a leaf).
//! - [`shutdown`]: signals → `CancellationToken`.
//! - [`telemetry`]: tracing set-up.
//! - [`tools`]: the offline tools (`offsets show|reset`, `doctor`), outside the engine.

pub mod admin;
pub mod checkpoint;
pub mod cli;
pub mod codec;
pub mod config;
pub mod control;
pub mod daemon;
pub mod expr;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod position;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod tools;

pub use pipeline::custom::{Context, KeyedOperator, Operators, register_operator};
