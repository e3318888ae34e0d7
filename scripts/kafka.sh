#!/usr/bin/env bash
# scripts/kafka.sh start|stop|status — one local Apache Kafka broker (KRaft, combined
# broker+controller) on 127.0.0.1, run from the jars Maven fetches from Maven Central.
#
#   FLUMEN_KAFKA_PORT   client port (default 19092; the controller listens on PORT+1, and a
#                       SASL_PLAINTEXT listener with SCRAM-SHA-256 on PORT+2, user
#                       flumen-test with password flumen-scram-canary: test credentials of a
#                       loopback broker, used by the secrets test and the chaos suite)
#   FLUMEN_CACHE        where the jars and the broker's data live (default ~/.cache/flumen)
#   KAFKA_HEAP_OPTS     JVM heap (default -Xms512m -Xmx512m)
#
# start is idempotent: a broker this script started and that answers is left as it is.
# start --fresh, when it starts a broker, first deletes the broker's data: the topics of earlier
# runs (test.sh and bench.sh ask for it; thousands of leftover test topics slow a broker's start
# and its coordinator enough to time out consumer group sessions on 2 cores).
# stop stops only the broker named in this script's pid file.
# topic/produce/consume are small conveniences over Kafka's own console tools (quickstart).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/kafka/pom.xml"
port="${FLUMEN_KAFKA_PORT:-19092}"
controller_port=$((port + 1))
sasl_port=$((port + 2))
sasl_user=flumen-test
sasl_password=flumen-scram-canary
cache="${FLUMEN_CACHE:-$HOME/.cache/flumen}"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
libs="$cache/kafka-$version/libs"
run_dir="$cache/broker-$port"
pid_file="$run_dir/broker.pid"
log_file="$run_dir/broker.log"
bootstrap="127.0.0.1:$port"

say() { echo "kafka.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"; return; fi
  command -v java || die "java not found: install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless) or run scripts/setup.sh as root"
}

check_java() {
  local v
  v="$("$(java_bin)" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  [[ -n "$v" && "$v" -ge 17 ]] || die "Kafka $version needs Java 17 or newer; $(java_bin) is version '${v:-unknown}'"
}

fetch_jars() {
  if [[ -f "$libs/.complete" ]]; then return; fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (Debian: apt-get install maven) or run scripts/setup.sh as root"
  say "fetching Apache Kafka $version jars from Maven Central into $libs"
  rm -rf "$libs"; mkdir -p "$libs"
  # stdout carries only the bootstrap address (callers capture it): Maven talks on stderr,
  # without colours (even -q -B prints ANSI resets on a fresh machine)
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$libs" >&2 || die "mvn could not fetch the Kafka jars (see its output above)"
  touch "$libs/.complete"
}

kjava() { # run a Kafka main class with the broker's classpath
  local cls="$1"; shift
  "$(java_bin)" -Xmx256m -cp "$libs/*" -Dlog4j2.configurationFile="$run_dir/log4j2-tools.properties" "$cls" "$@"
}

alive() { [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

answers() { # metadata answers and a topic can be created
  kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create \
    --if-not-exists --topic __flumen_ready --partitions 1 --replication-factor 1 \
    --command-config "$run_dir/client.properties" >/dev/null 2>&1
}

write_config() {
  mkdir -p "$run_dir/data"
  cat > "$run_dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port,SASL_PLAINTEXT://127.0.0.1:$sasl_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sasl_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$run_dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
log.retention.hours=24
PROPS
  cat > "$run_dir/client.properties" <<PROPS
request.timeout.ms=5000
default.api.timeout.ms=10000
PROPS
  cat > "$run_dir/log4j2.properties" <<PROPS
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$log_file
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=org.apache.kafka
logger.kafka.level=INFO
PROPS
  cat > "$run_dir/log4j2-tools.properties" <<PROPS
rootLogger.level=WARN
rootLogger.appenderRef.err.ref=err
appender.err.type=Console
appender.err.name=err
appender.err.target=SYSTEM_ERR
appender.err.layout.type=PatternLayout
appender.err.layout.pattern=%p %m%n
PROPS
}

start() {
  check_java
  fetch_jars
  mkdir -p "$run_dir"
  if alive; then
    write_config
    if answers; then scram_user; say "broker already running (pid $(cat "$pid_file"))"; echo "$bootstrap"; return; fi
    die "a broker started by this script runs (pid $(cat "$pid_file")) but does not answer on $bootstrap; see $log_file or run: $0 stop"
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is taken by a process this script did not start; set FLUMEN_KAFKA_PORT to another port"
  fi
  if [[ "${1:-}" == "--fresh" && -d "$run_dir/data" ]]; then
    say "deleting the data of earlier runs ($run_dir/data); their log: $log_file.1"
    rm -rf "$run_dir/data"
    sync # the deletion's writeback would stall the new broker's first fsyncs
    if [[ -f "$log_file" ]]; then mv -f "$log_file" "$log_file.1"; fi
  fi
  write_config
  if [[ ! -f "$run_dir/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(kjava kafka.tools.StorageTool random-uuid)"
    kjava kafka.tools.StorageTool format -t "$cluster_id" -c "$run_dir/server.properties" >/dev/null \
      || die "formatting KRaft storage in $run_dir/data failed"
  fi
  say "starting Kafka $version on $bootstrap (log: $log_file)"
  # setsid: the broker outlives this shell and gets no terminal signals meant for it
  setsid "$(java_bin)" ${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$run_dir/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$run_dir/server.properties" \
    >"$run_dir/broker.out" 2>&1 </dev/null &
  echo $! > "$pid_file"
  local deadline=$((SECONDS + ${FLUMEN_KAFKA_START_TIMEOUT:-120}))
  until answers; do
    if ! alive; then
      say "the broker exited during start; last lines of its log:"
      tail -n 40 "$log_file" "$run_dir/broker.out" >&2 || true
      rm -f "$pid_file"; exit 1
    fi
    if (( SECONDS > deadline )); then
      say "the broker did not answer within ${FLUMEN_KAFKA_START_TIMEOUT:-120}s; last lines of its log:"
      tail -n 40 "$log_file" >&2 || true
      stop; exit 1
    fi
    sleep 1
  done
  scram_user
  say "broker ready (pid $(cat "$pid_file"))"
  echo "$bootstrap"
}

scram_user() { # the SASL listener's test user (idempotent: upserts its credential)
  kjava kafka.admin.ConfigCommand --bootstrap-server "$bootstrap" --command-config "$run_dir/client.properties" \
    --alter --entity-type users --entity-name "$sasl_user" \
    --add-config "SCRAM-SHA-256=[iterations=4096,password=$sasl_password]" >/dev/null \
    || die "creating the SCRAM user $sasl_user of the SASL listener (127.0.0.1:$sasl_port) failed"
}

stop() {
  if ! alive; then rm -f "$pid_file"; say "no broker started by this script is running on port $port"; return; fi
  local pid; pid="$(cat "$pid_file")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then say "broker $pid did not stop in 30s; killing it"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pid_file"
  say "broker stopped (pid $pid)"
}

status() {
  if alive; then echo "$bootstrap"; else say "not running (port $port)"; return 1; fi
}

topic() { # topic NAME [PARTITIONS]: create unless it exists
  alive || die "the broker is not running: $0 start"
  kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "$1" --partitions "${2:-1}" --replication-factor 1 --command-config "$run_dir/client.properties" >/dev/null
}

produce() { # produce TOPIC: lines "key|value" from stdin
  alive || die "the broker is not running: $0 start"
  kjava org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$bootstrap" --topic "$1" \
    --reader-property parse.key=true --reader-property key.separator='|'
}

consume() { # consume TOPIC MAX [TIMEOUT_MS]: read_committed, from the beginning, "key|value"
  alive || die "the broker is not running: $0 start"
  kjava org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$bootstrap" --topic "$1" \
    --from-beginning --max-messages "$2" --timeout-ms "${3:-30000}" --isolation-level read_committed \
    --formatter-property print.key=true --formatter-property key.separator='|' 2>/dev/null || true
}

case "${1:-}" in
  start) shift; start "$@" ;;
  topic) shift; topic "$@" ;;
  produce) shift; produce "$@" ;;
  consume) shift; consume "$@" ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  log) tail -n "${2:-100}" "$log_file" ;;
  *) echo "usage: $0 start [--fresh]|stop|status|restart|log [LINES]|topic NAME [PARTITIONS]|produce TOPIC|consume TOPIC MAX [TIMEOUT_MS]" >&2; exit 2 ;;
esac
