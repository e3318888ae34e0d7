#!/usr/bin/env bash
# scripts/s3.sh start [--fresh]|stop|status|log — one local S3-compatible object store: S3Proxy
# (from its jars on Maven Central, run on the Java the broker needs) on 127.0.0.1, keeping its
# objects in files (the filesystem-nio2 backend, which checks If-None-Match atomically).
#
#   FLUMEN_S3_PORT   HTTP port (default 19300)
#   FLUMEN_CACHE     where the jars and the objects live (default ~/.cache/flumen)
#
# The store's credentials are the test ones below (a loopback server of the tests and the
# quickstart); bucket "flumen" exists after start. start prints the endpoint URL on stdout.
# start is idempotent; start --fresh first deletes every object of earlier runs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/s3/pom.xml"
port="${FLUMEN_S3_PORT:-19300}"
cache="${FLUMEN_CACHE:-$HOME/.cache/flumen}"
version="$(sed -n 's:.*<s3proxy.version>\(.*\)</s3proxy.version>.*:\1:p' "$pom")"
libs="$cache/s3proxy-$version/libs"
run_dir="$cache/s3proxy-$port"
pid_file="$run_dir/s3proxy.pid"
log_file="$run_dir/s3proxy.log"
endpoint="http://127.0.0.1:$port"
identity=flumen-test
credential=flumen-s3-canary
bucket=flumen

say() { echo "s3.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"; return; fi
  command -v java || die "java not found: install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless) or run scripts/setup.sh as root"
}

fetch_jars() {
  if [[ -f "$libs/.complete" ]]; then return; fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (Debian: apt-get install maven) or run scripts/setup.sh as root"
  say "fetching S3Proxy $version jars from Maven Central into $libs"
  rm -rf "$libs"; mkdir -p "$libs"
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$libs" >&2 || die "mvn could not fetch the S3Proxy jars (see its output above)"
  touch "$libs/.complete"
}

alive() { [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

# S3Proxy answers an anonymous request with an S3 error document once it listens
answers() { curl -s -o /dev/null -m 2 "$endpoint/" 2>/dev/null; }

start() {
  command -v curl >/dev/null || die "curl not found: install it (Debian: apt-get install curl) or run scripts/setup.sh as root"
  fetch_jars
  mkdir -p "$run_dir"
  if alive; then
    if answers; then say "S3Proxy already running (pid $(cat "$pid_file"))"; echo "$endpoint"; return; fi
    die "an S3Proxy started by this script runs (pid $(cat "$pid_file")) but does not answer on $endpoint; see $log_file or run: $0 stop"
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is taken by a process this script did not start; set FLUMEN_S3_PORT to another port"
  fi
  if [[ "${1:-}" == "--fresh" ]]; then rm -rf "$run_dir/data"; fi
  # a bucket of the filesystem backend is a directory under its base directory
  mkdir -p "$run_dir/data/$bucket"
  cat > "$run_dir/s3proxy.conf" <<PROPS
s3proxy.endpoint=$endpoint
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$identity
s3proxy.credential=$credential
jclouds.provider=filesystem-nio2
jclouds.identity=$identity
jclouds.credential=$credential
jclouds.filesystem.basedir=$run_dir/data
PROPS
  # without a configuration logback logs at DEBUG: every request, several lines each
  cat > "$run_dir/logback.xml" <<XML
<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{20} - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="out"/></root>
  <logger name="org.gaul.s3proxy" level="INFO"/>
</configuration>
XML
  say "starting S3Proxy $version on $endpoint (log: $log_file)"
  setsid "$(java_bin)" -Xmx1g -Dlogback.configurationFile="$run_dir/logback.xml" \
    -cp "$libs/*" org.gaul.s3proxy.Main --properties "$run_dir/s3proxy.conf" \
    >"$log_file" 2>&1 </dev/null &
  echo $! > "$pid_file"
  local deadline=$((SECONDS + 60))
  until answers; do
    if ! alive; then
      say "S3Proxy exited during start; last lines of its log:"; tail -n 40 "$log_file" >&2 || true
      rm -f "$pid_file"; exit 1
    fi
    if (( SECONDS > deadline )); then
      say "S3Proxy did not answer within 60s; last lines of its log:"; tail -n 40 "$log_file" >&2 || true
      stop; exit 1
    fi
    sleep 0.5
  done
  say "S3Proxy ready (pid $(cat "$pid_file")), bucket $bucket, access key $identity"
  echo "$endpoint"
}

stop() {
  if ! alive; then rm -f "$pid_file"; say "no S3Proxy started by this script is running on port $port"; return; fi
  local pid; pid="$(cat "$pid_file")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pid_file"
  say "S3Proxy stopped (pid $pid)"
}

status() {
  if alive; then echo "$endpoint"; else say "not running (port $port)"; return 1; fi
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  log) tail -n "${2:-100}" "$log_file" ;;
  *) echo "usage: $0 start [--fresh]|stop|status|log [LINES]" >&2; exit 2 ;;
esac
