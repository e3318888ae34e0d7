# scripts/broker-session.sh — sourced by test.sh and bench.sh: `broker_session NAME` starts the
# local broker unless one runs (scripts/kafka.sh start --fresh: a broker it starts begins with
# no topics of earlier runs), sets BROKER_BOOTSTRAP to its host:port, and stops it again when
# the calling script exits, but only if this script started it. A broker that already runs is
# used as it is. `object_store_session` does the same for the S3-compatible object store
# (scripts/s3.sh; S3_ENDPOINT), stopped on exit by the same handler.
_s3_started_here=0
broker_session() {
  local name="$1"
  _broker_started_here=0
  if ! scripts/kafka.sh status >/dev/null 2>&1; then _broker_started_here=1; fi
  trap '_broker_stop' EXIT
  trap 'exit 130' INT TERM
  BROKER_BOOTSTRAP="$(scripts/kafka.sh start --fresh)"
  if [[ ! "$BROKER_BOOTSTRAP" =~ ^[A-Za-z0-9._-]+:[0-9]+$ ]]; then
    echo "$name: scripts/kafka.sh start printed $(printf %q "$BROKER_BOOTSTRAP"), not host:port" >&2
    exit 1
  fi
}

object_store_session() {
  local name="$1"
  if ! scripts/s3.sh status >/dev/null 2>&1; then _s3_started_here=1; fi
  S3_ENDPOINT="$(scripts/s3.sh start --fresh)"
  if [[ ! "$S3_ENDPOINT" =~ ^http://[0-9.]+:[0-9]+$ ]]; then
    echo "$name: scripts/s3.sh start printed $(printf %q "$S3_ENDPOINT"), not an http:// endpoint" >&2
    exit 1
  fi
}

_broker_stop() {
  local rc=$?
  if ((_broker_started_here)); then scripts/kafka.sh stop || true; fi
  if ((_s3_started_here)); then scripts/s3.sh stop || true; fi
  exit "$rc"
}
