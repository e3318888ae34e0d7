#!/usr/bin/env bash
# scripts/quickstart.sh — the README's Quickstart: starts a local Kafka broker, a local
# S3-compatible object store for the checkpoints (scripts/s3.sh) and a Flumen pipeline
# (config/examples/quickstart.toml: NL purchases summed per customer), produces a few purchases,
# prints the exactly-once output, and leaves them running.
#   scripts/quickstart.sh        start (idempotent) and show the output
#   scripts/quickstart.sh stop   stop the pipeline (SIGTERM: final checkpoint), the broker and
#                                the object store
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# one persistent build cache for every clone: RocksDB and librdkafka take many minutes to build
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${FLUMEN_CACHE:-$HOME/.cache/flumen}/target}"

work=data/quickstart
pid_file="$work/flumen.pid"
log="$work/flumen.log"
target="$CARGO_TARGET_DIR"

stop() {
  if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    kill -TERM "$(cat "$pid_file")"
    for _ in $(seq 1 80); do kill -0 "$(cat "$pid_file")" 2>/dev/null || break; sleep 0.5; done
    echo "quickstart: flumen stopped"
  fi
  rm -f "$pid_file"
  scripts/kafka.sh stop
  scripts/s3.sh stop
}

if [[ "${1:-}" == "stop" ]]; then stop; exit 0; fi

scripts/setup.sh
echo "quickstart: building flumen (the first build compiles RocksDB and librdkafka: many minutes)"
cargo build --bin flumen
bootstrap="$(scripts/kafka.sh start)"
endpoint="$(scripts/s3.sh start)"
# the object store's test credentials (scripts/s3.sh), as the AWS tools take them
export AWS_ACCESS_KEY_ID=flumen-test AWS_SECRET_ACCESS_KEY=flumen-s3-canary

mkdir -p "$work"
sed -e "s/127.0.0.1:19092/$bootstrap/" -e "s|http://127.0.0.1:19300|$endpoint|" \
  config/examples/quickstart.toml > "$work/pipeline.toml"
"$target/debug/flumen" validate --config "$work/pipeline.toml"

scripts/kafka.sh topic purchases 3
scripts/kafka.sh topic spend-per-customer 3

if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  echo "quickstart: flumen already running (pid $(cat "$pid_file"))"
else
  "$target/debug/flumen" run --config "$work/pipeline.toml" >"$log" 2>&1 &
  echo $! > "$pid_file"
  echo "quickstart: flumen running (pid $!, log $log)"
fi

batch="$(date +%s)"
echo "quickstart: producing 8 purchases (batch $batch) to 'purchases'"
scripts/kafka.sh produce purchases <<RECORDS
o1-$batch|{"customer":"ann","country":"NL","amount":12,"order":"o1-$batch"}
o2-$batch|{"customer":"bob","country":"BE","amount":99,"order":"o2-$batch"}
o3-$batch|{"customer":"ann","country":"NL","amount":30,"order":"o3-$batch"}
o4-$batch|{"customer":"cas","country":"NL","amount":5,"order":"o4-$batch"}
o5-$batch|{"customer":"bob","country":"NL","amount":7,"order":"o5-$batch"}
o6-$batch|{"customer":"ann","country":"DE","amount":1,"order":"o6-$batch"}
o7-$batch|{"customer":"cas","country":"NL","amount":8,"order":"o7-$batch"}
o8-$batch|{"customer":"ann","country":"NL","amount":3,"order":"o8-$batch"}
RECORDS

echo "quickstart: 'spend-per-customer' as a read_committed consumer sees it (key|value):"
# each run adds 6 outputs (the NL purchases); the topic is read from its beginning
runs=$(( $(cat "$work/quickstart.runs" 2>/dev/null || echo 0) + 1 ))
echo "$runs" > "$work/quickstart.runs"
want=$((runs * 6))
out="$(scripts/kafka.sh consume spend-per-customer "$want" 30000)"
printf '%s\n' "$out"
got="$(printf '%s' "$out" | grep -c '|' || true)"
if (( got < want )); then
  echo "quickstart: FAILED: read $got of the $want outputs within 30 s; the pipeline's log ($log) ends:" >&2
  tail -n 5 "$log" >&2
  exit 1
fi
echo
echo "quickstart: the daemon's figures (http://127.0.0.1:9249/metrics, excerpt):"
curl -fsS http://127.0.0.1:9249/metrics | grep -E '^flumen_(input_records_committed|output_records|consumer_lag)'
cat <<MSG

quickstart: each NL purchase updated its customer's running total exactly once; outputs
commit with the checkpoint every second. Produce more with:
  scripts/kafka.sh produce purchases      (lines: key|{"customer":"ann","country":"NL","amount":4})
Follow the pipeline:   tail -f $log
Probe it:              curl http://127.0.0.1:9249/readyz   (and /livez, /metrics)
Stop everything:       scripts/quickstart.sh stop
MSG
