#!/usr/bin/env bash
# scripts/bench.sh [--quick] [flumen-bench run options] — Flumen, Kafka Streams and the raw copy
# baseline side by side on the local broker of scripts/kafka.sh, in one run (issue #6).
#
# Builds Flumen and the harness in release (the first release build of RocksDB and librdkafka
# takes about 25 minutes on 2 cores; the target dir persists), builds the Kafka Streams app with
# Maven, starts the broker if it is not running (and stops it again), runs the matrix and prints
# the table; the table also goes to bench/results/. `--quick`: one size, one interval, one
# repetition (under 10 minutes once built). See BENCHMARKS.md and `flumen-bench run --help`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${FLUMEN_CACHE:-$HOME/.cache/flumen}/target}"
cache="${FLUMEN_CACHE:-$HOME/.cache/flumen}"
port="${FLUMEN_KAFKA_PORT:-19092}"

say() { echo "bench.sh: $*" >&2; }

scripts/setup.sh

say "building flumen and flumen-bench (release)"
cargo build --release --features bench --bin flumen --bin flumen-bench >&2

say "building the Kafka Streams app (bench/kafka-streams, Maven)"
mvn -q -B -Dstyle.color=never -f bench/kafka-streams/pom.xml package >&2 ||
  { say "error: mvn could not build bench/kafka-streams (see its output above)"; exit 1; }
jar=bench/kafka-streams/target/flumen-bench-kafka-streams.jar
[[ -f "$jar" ]] || { say "error: $jar was not built"; exit 1; }

source scripts/broker-session.sh
broker_session bench.sh
bootstrap="$BROKER_BOOTSTRAP"
broker_pid="$(cat "$cache/broker-$port/broker.pid")"

FLUMEN_BENCH_KAFKA="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)" \
  "$CARGO_TARGET_DIR/release/flumen-bench" run \
    --bootstrap "$bootstrap" \
    --flumen "$CARGO_TARGET_DIR/release/flumen" \
    --kafka-streams-jar "$jar" \
    --broker-pid "$broker_pid" \
    "$@"
