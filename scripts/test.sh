#!/usr/bin/env bash
# scripts/test.sh — the one test command: installs what is missing (as root), checks format and
# lints, starts the local Kafka broker and the S3-compatible object store (S3Proxy), runs every
# test against them, stops them, and runs the chaos suite's quick set (scripts/chaos.sh).
#
# Integration tests need the broker (and the object-store tests, the store); they FAIL when it
# does not answer. This script never sets
# FLUMEN_SKIP_KAFKA_TESTS. Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# one persistent build cache for every clone: RocksDB and librdkafka take many minutes to build
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${FLUMEN_CACHE:-$HOME/.cache/flumen}/target}"

scripts/setup.sh --test

step() { echo; echo "==> $*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets --all-features -- -D warnings"
cargo clippy --all-targets --all-features -- -D warnings

step "cargo build --all-targets --all-features"
cargo build --all-targets --all-features

step "deployment files (docker/check-packaging.sh: configs, systemd unit, Kubernetes schemas)"
docker/check-packaging.sh

# the build just wrote gigabytes of test binaries: let the disk take them before the broker
# starts, or its fsyncs wait behind that writeback (seen: the controller stalled 15-45 s and
# fenced its own broker, failing time-sensitive tests)
sync

step "starting Kafka (scripts/kafka.sh start)"
# and even after the sync, twice in CI (bb5e4b8, d1ce556) the controller fenced its own broker
# for heartbeats missed during the first integration tests (2 cores, writeback): with one node
# that fence protects nothing and only fails tests, so the test broker waits 30 s, not 9
# (the chaos suite sets its own brokers' timeout: 3 s, CHAOS.md finding 11)
export FLUMEN_KAFKA_BROKER_SESSION_MS=30000
source scripts/broker-session.sh
broker_session test.sh
export FLUMEN_TEST_BOOTSTRAP="$BROKER_BOOTSTRAP"

step "starting the object store (scripts/s3.sh start)"
object_store_session test.sh
export FLUMEN_TEST_S3="$S3_ENDPOINT"
unset FLUMEN_SKIP_KAFKA_TESTS

step "cargo test --all-features (broker at $FLUMEN_TEST_BOOTSTRAP, object store at $FLUMEN_TEST_S3)"
if ! cargo test --all-features -- "$@"; then
  echo
  echo "test.sh: tests failed; the broker's log: $(dirname "$0")/kafka.sh log 200" >&2
  exit 1
fi

# the chaos suite's quick set: its own broker (port 19400) behind fault proxies, faults under
# live input, every output checked (CHAOS.md); the full set is run by hand
# broker-kill runs beside a dedicated KRaft controller (Kafka's production layout): on combined
# broker-controller nodes Kafka itself drops transaction markers after a restart now and then
# (CHAOS.md, finding 11; it failed CI's quick set of d3c3653), which the full set by hand still
# runs into and reports
step "chaos suite, quick set (scripts/chaos.sh --quick; broker-kill with --dedicated-controller)"
if ! scripts/chaos.sh --quick --scenarios sigkill,failpoints,blackhole,lost-commit-response,zombie,txn-timeout,corrupt-checkpoint,disk-full,sasl-ssl,at-least-once \
  || ! scripts/chaos.sh --quick --dedicated-controller --scenarios broker-kill; then
  echo
  echo "test.sh: the chaos suite failed; its table and logs are named above" >&2
  exit 1
fi
echo
echo "test.sh: all checks passed"
