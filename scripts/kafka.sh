#!/usr/bin/env bash
# scripts/kafka.sh — a local Apache Kafka (KRaft, each node a combined broker+controller, or
# brokers beside one dedicated controller) on 127.0.0.1: one broker, or a three-node cluster for
# the chaos suite, run from the jars Maven fetches from Maven Central.
#
#   FLUMEN_KAFKA_PORT   client port (default 19092; the controller listens on PORT+1, and a
#                       SASL_PLAINTEXT listener with SCRAM-SHA-256 on PORT+2, user
#                       flumen-test with password flumen-scram-canary: test credentials of a
#                       loopback broker, used by the secrets test and the chaos suite)
#   FLUMEN_KAFKA_NODES  1 (default: one broker; data, pid and log in $FLUMEN_CACHE/broker-PORT) or
#                       3: a cluster in $FLUMEN_CACHE/cluster-PORT/node-I. Node I (1..3) takes the
#                       ports above from P = PORT+10*(I-1), and P+3 for INTERNAL, the listener
#                       between brokers; all three are controller quorum voters. Replication
#                       factor 3, min.insync.replicas 2 (transaction log too), no unclean election
#   FLUMEN_KAFKA_ADVERTISED_PORTS  "A,B,C" (a port per node): node I advertises its client
#                       listener as 127.0.0.1:<I-th port> (a fault-injecting proxy in front of it).
#                       Brokers then talk, and this script's tools connect, over INTERNAL (with one
#                       node too, on PORT+3): clients bootstrapping there are told INTERNAL
#                       addresses, clients bootstrapping on a client port the advertised ones
#   FLUMEN_KAFKA_SSL    1: each node also listens on P+4 with SASL_SSL, mechanism SCRAM-SHA-512
#                       only (the SASL_PLAINTEXT listener keeps SCRAM-SHA-256), user flumen-test
#                       with password FLUMEN_KAFKA_SSL_PASSWORD (default flumen-ssl-canary-7f3a;
#                       letters, digits and ._~:@%+/- only). Its certificate (CN=localhost, SAN
#                       IP:127.0.0.1, DNS:localhost) is signed by a self-signed test CA; keytool (of
#                       the java that runs Kafka) makes them once, shared by all ports and modes, in
#                       $FLUMEN_CACHE/tls: ca.pem (the CA, for ssl.ca.location; command ca-path),
#                       truststore.p12 (the CA for Java clients: type PKCS12, password
#                       flumen-tls-store), server.p12 (the brokers' keystore), other-ca.pem (an
#                       unrelated CA that signed nothing here; command other-ca-path); missing files
#                       are made anew. P+5 is left free (the chaos suite's proxy)
#   FLUMEN_KAFKA_TXN_VERSION  1|2: the transaction.version feature (KIP-890) fresh data is
#                       formatted with (default: Kafka's, 2 in 4.3). Recorded in the run dir: a
#                       start asking another level of existing data is refused (start --fresh)
#   FLUMEN_KAFKA_BROKER_SESSION_MS  the controllers' broker.session.timeout.ms (default Kafka's,
#                       9000; broker.heartbeat.interval.ms becomes a sixth of it). The chaos suite
#                       sets 3000: a node restarted after a SIGKILL acts on its old, unfenced
#                       registration until this timeout fences it, and Kafka's transaction
#                       coordinator drops the markers of partitions left without a leader then
#                       (CHAOS.md, finding 11); a shorter timeout ends that window sooner
#   FLUMEN_KAFKA_CONTROLLER  combined (default: each node is broker and controller) or dedicated:
#                       the nodes are brokers only, and one controller process of its own (node
#                       id 9, CONTROLLER listener on PORT+8, in the run dir's controller/) holds
#                       the metadata quorum, as production clusters run; kill and stop-node never
#                       touch it, stop stops it last. Recorded in the run dir: a start asking the
#                       other layout of existing data is refused (start --fresh). A restarted
#                       broker then learns it was fenced from the running controller before it
#                       acts on its old registration (CHAOS.md, finding 11)
#   FLUMEN_CACHE        where the jars and the brokers' data live (default ~/.cache/flumen)
#   KAFKA_HEAP_OPTS     JVM heap of each node (default -Xms512m -Xmx512m; -Xms384m -Xmx384m in a cluster)
#   FLUMEN_KAFKA_START_TIMEOUT  seconds start and start-node wait for an answer (default 120)
#
# start prints the bootstrap list (the advertised client addresses, comma-separated) on stdout;
# everything else goes to stderr. start is idempotent: nodes this script started and that answer
# are left as they are, missing nodes are started; it returns once a topic with the cluster's
# replication factor can be created (and nodes it started are in its ISR).
# start --fresh, when no node runs, first deletes the nodes' data: the topics of earlier runs
# (test.sh and bench.sh ask for it; thousands of leftover test topics slow a broker's start and
# its coordinator enough to time out consumer group sessions on 2 cores).
# stop stops only the nodes named in this script's pid files. status prints the bootstrap list
# when every node runs.
# Per node N (default 1), for fault injection: kill [N] (SIGKILL); stop-node N (SIGTERM, 30 s,
# then SIGKILL; 10 s once no quorum runs: a broker's controlled shutdown waits for a controller);
# start-node N (with its data, never reformatted; returns once its client port accepts
# connections and it is back in sync; but if it and the running nodes make no majority of the
# quorum, once its process runs: it exits unless another node starts within 60 s); pid [N];
# log [LINES] [N].
# features prints the finalized feature levels (transaction.version among them); txn-describe
# TXNID runs kafka-transactions describe (its CoordinatorId column: the coordinator's node id);
# txn-list runs kafka-transactions list (every transactional id the coordinators know);
# txn-hanging runs find-hanging on every running node: one table, a header and then a row per
# hanging transaction, i.e. open for over a minute (its default, 15 minutes, let the chaos
# suite miss real ones); it fails if a node could not be asked. marker-skips prints every node's
# log lines (rotated logs too) where the transaction coordinator dropped a transaction's markers
# to partitions it found without a leader ("likely deleted"): CHAOS.md, finding 11.
# ssl-bootstrap prints the SASL_SSL listeners (127.0.0.1:P+4 of each node, comma-separated);
# ca-path and other-ca-path print the two CAs' PEM files (making the certificates if missing).
# topic/produce/consume are small conveniences over Kafka's own console tools (quickstart).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/kafka/pom.xml"
port="${FLUMEN_KAFKA_PORT:-19092}"
nodes="${FLUMEN_KAFKA_NODES:-1}"
sasl_user=flumen-test
sasl_password=flumen-scram-canary
cache="${FLUMEN_CACHE:-$HOME/.cache/flumen}"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
libs="$cache/kafka-$version/libs"
txn_requested="${FLUMEN_KAFKA_TXN_VERSION:-}"
session_ms="${FLUMEN_KAFKA_BROKER_SESSION_MS:-}"
ssl_on="${FLUMEN_KAFKA_SSL:-0}"
ssl_password="${FLUMEN_KAFKA_SSL_PASSWORD:-flumen-ssl-canary-7f3a}"
layout="${FLUMEN_KAFKA_CONTROLLER:-combined}"
tls="$cache/tls"
tls_store_password=flumen-tls-store # of the test certificates' PKCS12 files: no secret

say() { echo "kafka.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ "$nodes" == 1 || "$nodes" == 3 ]] || die "FLUMEN_KAFKA_NODES must be 1 or 3, not '$nodes'"
[[ "$port" =~ ^[0-9]+$ ]] || die "FLUMEN_KAFKA_PORT must be a port number, not '$port'"
[[ -z "$txn_requested" || "$txn_requested" =~ ^[0-9]+$ ]] \
  || die "FLUMEN_KAFKA_TXN_VERSION must be a transaction.version level (1 or 2), not '$txn_requested'"
[[ -z "$session_ms" || ( "$session_ms" =~ ^[0-9]+$ && "$session_ms" -ge 1200 ) ]] \
  || die "FLUMEN_KAFKA_BROKER_SESSION_MS must be milliseconds, at least 1200, not '$session_ms'"
[[ "$layout" == combined || "$layout" == dedicated ]] \
  || die "FLUMEN_KAFKA_CONTROLLER must be combined (each node a broker and a controller) or dedicated, not '$layout'"
dedicated=0; if [[ "$layout" == dedicated ]]; then dedicated=1; fi
[[ "$ssl_on" == 0 || "$ssl_on" == 1 ]] || die "FLUMEN_KAFKA_SSL must be 1 (a SASL_SSL listener) or 0, not '$ssl_on'"
# the password goes into a ConfigCommand list (',' '[' ']' '=' split it) and into clients' JAAS quotes
if (( ssl_on )) && [[ ! "$ssl_password" =~ ^[A-Za-z0-9._~:@%+/-]+$ ]]; then
  die "FLUMEN_KAFKA_SSL_PASSWORD may hold only letters, digits and ._~:@%+/-"
fi
advertised=()
if [[ -n "${FLUMEN_KAFKA_ADVERTISED_PORTS:-}" ]]; then
  IFS=, read -r -a advertised <<<"$FLUMEN_KAFKA_ADVERTISED_PORTS"
  (( ${#advertised[@]} == nodes )) \
    || die "FLUMEN_KAFKA_ADVERTISED_PORTS='$FLUMEN_KAFKA_ADVERTISED_PORTS' must list $nodes port(s), one per node"
  for p in "${advertised[@]}"; do [[ "$p" =~ ^[0-9]+$ ]] || die "FLUMEN_KAFKA_ADVERTISED_PORTS: '$p' is not a port"; done
fi
# an INTERNAL listener for the brokers and this script's tools: always in a cluster, and with one
# node only when the client listener is advertised elsewhere (otherwise the broker is as it was)
internal=0
if (( nodes > 1 )) || (( ${#advertised[@]} > 0 )); then internal=1; fi
if (( nodes == 1 )); then
  top_dir="$cache/broker-$port"; rf=1; min_isr=1; default_heap="-Xms512m -Xmx512m"
else
  top_dir="$cache/cluster-$port"; rf=3; min_isr=2; default_heap="-Xms384m -Xmx384m"
fi
txn_record="$top_dir/transaction.version"
layout_record="$top_dir/controller.layout"
ctl_id=9; ctl_dir="$top_dir/controller"; ctl_port=$((port + 8))

node_ids() { seq 1 "$nodes"; }
node_dir() { if (( nodes == 1 )); then echo "$top_dir"; else echo "$top_dir/node-$1"; fi; }
client_port() { echo $((port + 10 * ($1 - 1))); }
controller_port() { echo $(($(client_port "$1") + 1)); }
sasl_port() { echo $(($(client_port "$1") + 2)); }
internal_port() { echo $(($(client_port "$1") + 3)); }
ssl_port() { echo $(($(client_port "$1") + 4)); } # P+5: the chaos suite's proxy
advertised_port() { if (( ${#advertised[@]} > 0 )); then echo "${advertised[$1 - 1]}"; else client_port "$1"; fi; }
pid_file() { if [[ "$1" == "$ctl_id" ]]; then echo "$ctl_dir/controller.pid"; else echo "$(node_dir "$1")/broker.pid"; fi; }
log_file() { if [[ "$1" == "$ctl_id" ]]; then echo "$ctl_dir/controller.log"; else echo "$(node_dir "$1")/broker.log"; fi; }
conf_dir() { if [[ "$1" == "$ctl_id" ]]; then echo "$ctl_dir"; else node_dir "$1"; fi; } # N or the controller's id
join() { local IFS=,; echo "$*"; }

bootstrap() { # what clients are told: the advertised client listeners
  local i a=(); for i in $(node_ids); do a+=("127.0.0.1:$(advertised_port "$i")"); done; join "${a[@]}"
}
ssl_bootstrap() { # the SASL_SSL listeners (with FLUMEN_KAFKA_SSL=1)
  local i a=(); for i in $(node_ids); do a+=("127.0.0.1:$(ssl_port "$i")"); done; join "${a[@]}"
}
tools_bootstrap() { # what this script's tools use: never the (maybe proxied) advertised ports
  local i a=()
  if (( internal )); then
    for i in $(node_ids); do a+=("127.0.0.1:$(internal_port "$i")"); done; join "${a[@]}"
  else
    echo "127.0.0.1:$port"
  fi
}

valid_node() {
  if [[ ! "$1" =~ ^[0-9]+$ ]] || (( $1 < 1 || $1 > nodes )); then die "no node '$1': nodes are 1..$nodes"; fi
}

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"; return; fi
  command -v java || die "java not found: install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless) or run scripts/setup.sh as root"
}

check_java() {
  local v
  v="$("$(java_bin)" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  [[ -n "$v" && "$v" -ge 17 ]] || die "Kafka $version needs Java 17 or newer; $(java_bin) is version '${v:-unknown}'"
}

keytool_bin() { # the keytool of the JDK whose java runs Kafka
  local java kt
  java="$(java_bin)"; java="$(readlink -f "$java")"; kt="$(dirname "$java")/keytool"
  [[ -x "$kt" ]] || die "keytool not found: the SASL_SSL test certificates (FLUMEN_KAFKA_SSL=1, ca-path) are made with the keytool of the java that runs Kafka ($java), and there is no $kt; install a JDK/JRE with keytool (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME to one"
  echo "$kt"
}

tls_has() { local f; for f in "$@"; do [[ -s "$tls/$f" ]] || return 1; done; }
tls_set=(ca.p12 ca.pem server.p12 server.pem truststore.p12)
other_set=(other-ca.p12 other-ca.pem)

ensure_tls() { # the test CA, the brokers' keystore, a truststore and an unrelated CA in $tls: made once
  if tls_has "${tls_set[@]}" "${other_set[@]}"; then return; fi
  check_java
  local kt d lock store=(-storetype PKCS12 -storepass "$tls_store_password") ca=(-keyalg RSA -keysize 2048 -validity 3650 -ext bc:c -ext "ku:c=keyCertSign,cRLSign")
  kt="$(keytool_bin)"
  mkdir -p "$tls"
  # one maker at a time (the chaos suite may start several brokers at once)
  if command -v flock >/dev/null; then exec {lock}>"$tls/.lock"; flock "$lock"; fi
  d="$(mktemp -d "$cache/tls.new.XXXXXX")"
  k() { # keytool, its talk in a log (stdout may carry only what the command prints)
    "$kt" -J-Xmx64m "$@" </dev/null >>"$d/keytool.log" 2>&1 \
      || { local log; log="$(cat "$d/keytool.log")"; rm -rf "$d"; die "keytool $1 failed making the test certificates in $tls: $log"; }
  }
  if ! tls_has "${tls_set[@]}"; then
    say "making a test CA and the brokers' certificate (127.0.0.1, localhost) in $tls"
    k -genkeypair -alias ca -dname "CN=Flumen test CA" "${ca[@]}" -keystore "$d/ca.p12" "${store[@]}"
    k -exportcert -rfc -alias ca -keystore "$d/ca.p12" "${store[@]}" -file "$d/ca.pem"
    k -genkeypair -alias server -dname "CN=localhost" -keyalg RSA -keysize 2048 -validity 3650 -keystore "$d/server.p12" "${store[@]}"
    k -certreq -alias server -keystore "$d/server.p12" "${store[@]}" -file "$d/server.csr"
    k -gencert -rfc -alias ca -keystore "$d/ca.p12" "${store[@]}" -infile "$d/server.csr" -outfile "$d/server.pem" \
      -validity 3650 -ext "SAN=ip:127.0.0.1,dns:localhost" -ext "ku:c=digitalSignature,keyEncipherment" -ext eku=serverAuth
    # the CA first, so that the signed certificate's chain (server, CA) can be built
    k -importcert -noprompt -alias ca -file "$d/ca.pem" -keystore "$d/server.p12" "${store[@]}"
    k -importcert -noprompt -alias server -file "$d/server.pem" -keystore "$d/server.p12" "${store[@]}"
    k -importcert -noprompt -alias ca -file "$d/ca.pem" -keystore "$d/truststore.p12" "${store[@]}"
    mv -f "$d/ca.p12" "$d/server.pem" "$d/server.p12" "$d/truststore.p12" "$d/ca.pem" "$tls/"
  fi
  if ! tls_has "${other_set[@]}"; then
    say "making an unrelated test CA in $tls/other-ca.pem"
    k -genkeypair -alias ca -dname "CN=Flumen unrelated test CA" "${ca[@]}" -keystore "$d/other-ca.p12" "${store[@]}"
    k -exportcert -rfc -alias ca -keystore "$d/other-ca.p12" "${store[@]}" -file "$d/other-ca.pem"
    mv -f "$d/other-ca.p12" "$d/other-ca.pem" "$tls/"
  fi
  rm -rf "$d"
  if [[ -n "${lock:-}" ]]; then exec {lock}>&-; fi
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
  "$(java_bin)" -Xmx256m -cp "$libs/*" -Dlog4j2.configurationFile="$top_dir/log4j2-tools.properties" "$cls" "$@"
}

running() { # running PID: the process exists and is no zombie (PID 1 may not reap the brokers)
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(sed -n 's/^[0-9]* (.*) \([A-Z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != Z ]]
}
node_pid() { cat "$(pid_file "$1")" 2>/dev/null; }
alive() { local f; f="$(pid_file "$1")"; [[ -f "$f" ]] && running "$(cat "$f")"; }
alive_count() { local i n=0; for i in $(node_ids); do if alive "$i"; then n=$((n + 1)); fi; done; echo "$n"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
formatted() { [[ -f "$(conf_dir "$1")/data/meta.properties" ]]; }

created=0
answers() { # metadata answers and a topic with the cluster's replication factor can be created
  local out
  out="$(kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$(tools_bootstrap)" --create \
    --if-not-exists --topic __flumen_ready --partitions 1 --replication-factor "$rf" \
    --command-config "$top_dir/client.properties" 2>/dev/null)" || return 1
  if [[ "$out" == *"Created topic"* ]]; then created=1; fi # a new partition's ISR: all its replicas
}

in_sync() { # in_sync N...: the nodes are in the ISR of __flumen_ready (so registered, unfenced, caught up)
  local isr i
  isr="$(kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$(tools_bootstrap)" --describe \
    --topic __flumen_ready --command-config "$top_dir/client.properties" 2>/dev/null \
    | sed -n 's/.*Isr: \([0-9,]*\).*/\1/p' | head -1)" || return 1
  for i in "$@"; do [[ ",$isr," == *",$i,"* ]] || return 1; done
}

write_common() {
  mkdir -p "$top_dir"
  cat > "$top_dir/client.properties" <<PROPS
request.timeout.ms=5000
default.api.timeout.ms=10000
PROPS
  cat > "$top_dir/log4j2-tools.properties" <<PROPS
rootLogger.level=WARN
rootLogger.appenderRef.err.ref=err
appender.err.type=Console
appender.err.name=err
appender.err.target=SYSTEM_ERR
appender.err.layout.type=PatternLayout
appender.err.layout.pattern=%p %m%n
PROPS
}

write_config() { # write_config N: node N's server.properties and log4j2.properties
  local n="$1" dir p c s a voters=() j listeners advertised_listeners protocols ibl=PLAINTEXT
  dir="$(node_dir "$n")"; p="$(client_port "$n")"; c="$(controller_port "$n")"; s="$(sasl_port "$n")"
  a="$(advertised_port "$n")"
  local roles=broker,controller
  for j in $(node_ids); do voters+=("$j@127.0.0.1:$(controller_port "$j")"); done
  listeners="PLAINTEXT://127.0.0.1:$p,CONTROLLER://127.0.0.1:$c,SASL_PLAINTEXT://127.0.0.1:$s"
  if (( dedicated )); then
    roles=broker; voters=("$ctl_id@127.0.0.1:$ctl_port")
    listeners="PLAINTEXT://127.0.0.1:$p,SASL_PLAINTEXT://127.0.0.1:$s"
  fi
  advertised_listeners="PLAINTEXT://127.0.0.1:$a,SASL_PLAINTEXT://127.0.0.1:$s"
  protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
  if (( internal )); then
    listeners+=",INTERNAL://127.0.0.1:$(internal_port "$n")"
    advertised_listeners+=",INTERNAL://127.0.0.1:$(internal_port "$n")"
    protocols+=",INTERNAL:PLAINTEXT"; ibl=INTERNAL
  fi
  if (( ssl_on )); then
    listeners+=",SASL_SSL://127.0.0.1:$(ssl_port "$n")"
    advertised_listeners+=",SASL_SSL://127.0.0.1:$(ssl_port "$n")"
    protocols+=",SASL_SSL:SASL_SSL"
  fi
  mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<PROPS
process.roles=$roles
node.id=$n
controller.quorum.voters=$(join "${voters[@]}")
listeners=$listeners
advertised.listeners=$advertised_listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=$ibl
listener.security.protocol.map=$protocols
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
log.retention.hours=24
PROPS
  session_config "$dir/server.properties"
  if (( nodes > 1 )); then
    cat >> "$dir/server.properties" <<PROPS
default.replication.factor=$rf
min.insync.replicas=$min_isr
unclean.leader.election.enable=false
PROPS
  fi
  if (( ssl_on )); then # after the rest: without FLUMEN_KAFKA_SSL the file is as it was
    cat >> "$dir/server.properties" <<PROPS
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$tls/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$tls_store_password
listener.name.sasl_ssl.ssl.key.password=$tls_store_password
listener.name.sasl_ssl.ssl.client.auth=none
PROPS
  fi
  write_log_config "$n"
}

session_config() { # session_config FILE: the controllers' broker session, if set
  [[ -n "$session_ms" ]] || return 0
  cat >> "$1" <<PROPS
broker.session.timeout.ms=$session_ms
broker.heartbeat.interval.ms=$((session_ms / 6))
PROPS
}

write_log_config() { # write_log_config N: node N's (or the controller's) log4j2.properties
  cat > "$(conf_dir "$1")/log4j2.properties" <<PROPS
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$(log_file "$1")
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=org.apache.kafka
logger.kafka.level=INFO
PROPS
}

write_controller_config() { # the dedicated controller's server.properties and log4j2.properties
  mkdir -p "$ctl_dir/data"
  cat > "$ctl_dir/server.properties" <<PROPS
process.roles=controller
node.id=$ctl_id
controller.quorum.voters=$ctl_id@127.0.0.1:$ctl_port
listeners=CONTROLLER://127.0.0.1:$ctl_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT
log.dirs=$ctl_dir/data
num.partitions=1
PROPS
  if (( nodes > 1 )); then # topics' defaults are the controller's in KRaft
    cat >> "$ctl_dir/server.properties" <<PROPS
default.replication.factor=$rf
min.insync.replicas=$min_isr
PROPS
  fi
  session_config "$ctl_dir/server.properties"
  write_log_config "$ctl_id"
}

write_configs() { # every node's config, and the dedicated controller's
  local i
  write_common; for i in $(node_ids); do write_config "$i"; done
  if (( dedicated )); then write_controller_config; fi
}

check_layout() { # refuse a controller layout other than the one the existing data has
  local i any=0 recorded=combined
  for i in $(node_ids); do if formatted "$i"; then any=1; fi; done
  (( any )) || return 0
  if [[ -f "$layout_record" ]]; then recorded="$(cat "$layout_record")"; fi
  [[ "$recorded" == "$layout" ]] || die "FLUMEN_KAFKA_CONTROLLER=$layout, but the data in $top_dir is of the $recorded layout; stop, then start --fresh to format it anew"
}

check_txn_version() { # refuse a transaction.version other than the one the existing data has
  [[ -n "$txn_requested" ]] || return 0
  local i any=0 recorded
  for i in $(node_ids); do if formatted "$i"; then any=1; fi; done
  (( any )) || return 0
  [[ -f "$txn_record" ]] || die "FLUMEN_KAFKA_TXN_VERSION=$txn_requested, but the data in $top_dir was formatted without a recorded transaction.version; stop, then start --fresh to format it with transaction.version=$txn_requested"
  recorded="$(cat "$txn_record")"
  [[ "$recorded" == "$txn_requested" ]] || die "FLUMEN_KAFKA_TXN_VERSION=$txn_requested, but the data in $top_dir was formatted with transaction.version=$recorded (a feature level is fixed at format time here); stop, then start --fresh to format it anew"
}

format_missing() { # format the nodes without data; a cluster's nodes share one cluster id
  local i cluster_id="" new=1 args
  for i in $(node_ids); do
    if formatted "$i"; then new=0; cluster_id="$(sed -n 's/^cluster\.id=//p' "$(node_dir "$i")/data/meta.properties")"; fi
  done
  local jobs=() dirs=() outs=() level=""
  # a Kafka Uuid as kafka-storage random-uuid makes one (without its JVM start): 16 random bytes,
  # URL-safe base64 without padding, not starting with '-'
  if [[ -z "$cluster_id" ]]; then
    until [[ -n "$cluster_id" && "$cluster_id" != -* ]]; do
      cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
  fi
  local ids; ids="$(node_ids)"
  if (( dedicated )); then ids="$ctl_id $ids"; fi # the controller first: its output has the features
  for i in $ids; do # the formats run side by side (a JVM start each)
    formatted "$i" && continue
    args=(format -t "$cluster_id" -c "$(conf_dir "$i")/server.properties")
    if [[ -n "$txn_requested" ]]; then args+=(--feature "transaction.version=$txn_requested"); fi
    kjava kafka.tools.StorageTool "${args[@]}" >"$top_dir/format-$i.out" &
    jobs+=("$!"); dirs+=("$(conf_dir "$i")/data"); outs+=("$top_dir/format-$i.out")
  done
  for i in "${!jobs[@]}"; do wait "${jobs[$i]}" || die "formatting KRaft storage in ${dirs[$i]} failed: $(cat "${outs[$i]}")"; done
  if (( new )); then # record the level the data was formatted with (it prints its feature records)
    level="$(sed -n "s/.*FeatureLevelRecord(name='transaction\.version', featureLevel=\([0-9]*\)).*/\1/p" "${outs[0]}" | head -1)"
    [[ -n "$level" ]] || level="$(kjava kafka.tools.StorageTool version-mapping 2>/dev/null | sed -n 's/^transaction\.version=//p')"
    echo "$level" > "$txn_record"
    echo "$layout" > "$layout_record"
  fi
  rm -f "${outs[@]}"
}

check_ports() { # check_ports N: node N's ports are free (it is not running)
  local n="$1" p ps
  ps="$(client_port "$n") $(sasl_port "$n")"
  if (( ! dedicated )); then ps+=" $(controller_port "$n")"; fi
  if (( internal )); then ps+=" $(internal_port "$n")"; fi
  if (( ssl_on )); then ps+=" $(ssl_port "$n")"; fi
  for p in $ps; do
    # a JVM just killed is a zombie (not running) while its other threads still close its
    # sockets: give its ports 10 s to close (a cluster run failed on that once)
    for _ in $(seq 1 20); do port_open "$p" || break; sleep 0.5; done
    if port_open "$p"; then
      if [[ "$p" == "$port" ]]; then die "port $port is taken by a process this script did not start; set FLUMEN_KAFKA_PORT to another port"; fi
      die "port $p (of node $n) is taken by a process this script did not start; set FLUMEN_KAFKA_PORT to another port"
    fi
  done
}

launch() { # launch N: start node N's (or the controller's) JVM in the background
  local n="$1" dir; dir="$(conf_dir "$n")"
  # setsid: the broker outlives this shell and gets no terminal signals meant for it
  # shellcheck disable=SC2086 # the heap options are words
  setsid "$(java_bin)" ${KAFKA_HEAP_OPTS:-$default_heap} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/$(basename "$(log_file "$n")" .log).out" 2>&1 </dev/null &
  echo $! > "$(pid_file "$n")"
}

wait_ready() { # wait_ready N...: the started nodes run and the cluster answers (with them in sync)
  local deadline=$((SECONDS + ${FLUMEN_KAFKA_START_TIMEOUT:-120})) i answered=0
  while :; do
    for i in "$@"; do
      if ! alive "$i"; then
        if (( nodes == 1 )); then say "the broker exited during start; last lines of its log:"
        else say "node $i exited during start; last lines of its log:"; fi
        tail -n 40 "$(log_file "$i")" "$(node_dir "$i")/broker.out" >&2 || true
        rm -f "$(pid_file "$i")"; exit 1
      fi
    done
    # the client port opens once the broker runs (registered, caught up): until then a JVM per
    # second asking would only slow the brokers' start on 2 cores
    local open=1; for i in "$@"; do port_open "$(client_port "$i")" || open=0; done
    if (( open && ! answered )) && answers; then answered=1; fi
    if (( answered )) && { (( nodes == 1 || created )) || in_sync "$@"; }; then return 0; fi
    if (( SECONDS > deadline )); then
      if (( nodes == 1 )); then
        say "the broker did not answer within ${FLUMEN_KAFKA_START_TIMEOUT:-120}s; last lines of its log:"
        tail -n 40 "$(log_file 1)" >&2 || true
        stop; exit 1
      fi
      say "the cluster did not answer (with nodes $* in sync) within ${FLUMEN_KAFKA_START_TIMEOUT:-120}s; last lines of their logs:"
      for i in "$@"; do tail -n 20 "$(log_file "$i")" >&2 || true; done
      stop_nodes "$@"; exit 1
    fi
    sleep 1
  done
}

ensure_controller() { # with FLUMEN_KAFKA_CONTROLLER=dedicated: the controller runs and listens
  (( dedicated )) || return 0
  alive "$ctl_id" && return 0
  port_open "$ctl_port" && die "port $ctl_port (the dedicated controller's) is taken by a process this script did not start; set FLUMEN_KAFKA_PORT to another port"
  formatted "$ctl_id" || die "the dedicated controller has no formatted data in $ctl_dir/data; stop, then start --fresh"
  say "starting the dedicated controller on 127.0.0.1:$ctl_port (log: $(log_file "$ctl_id"))"
  launch "$ctl_id"
  local deadline=$((SECONDS + ${FLUMEN_KAFKA_START_TIMEOUT:-120}))
  until port_open "$ctl_port"; do
    if ! alive "$ctl_id"; then
      say "the controller exited during start; last lines of its log:"
      tail -n 40 "$(log_file "$ctl_id")" "$ctl_dir/controller.out" >&2 || true
      rm -f "$(pid_file "$ctl_id")"; exit 1
    fi
    (( SECONDS <= deadline )) || die "the dedicated controller did not listen on $ctl_port within ${FLUMEN_KAFKA_START_TIMEOUT:-120}s; see $(log_file "$ctl_id")"
    sleep 0.2
  done
}

start() {
  check_java
  fetch_jars
  mkdir -p "$top_dir"
  local i up=() down=()
  for i in $(node_ids); do if alive "$i"; then up+=("$i"); else down+=("$i"); fi; done
  if (( ${#down[@]} == 0 )); then
    check_txn_version; check_layout
    write_configs; ensure_controller
    if answers; then
      if (( ssl_on )); then
        for i in $(node_ids); do
          port_open "$(ssl_port "$i")" || die "FLUMEN_KAFKA_SSL=1, but the running node $i (pid $(node_pid "$i")) has no SASL_SSL listener on 127.0.0.1:$(ssl_port "$i") (started without FLUMEN_KAFKA_SSL=1?); stop it, then start again"
        done
      fi
      scram_user
      if (( nodes == 1 )); then say "broker already running (pid $(node_pid 1))"
      else say "cluster already running (pids $(for i in $(node_ids); do printf '%s ' "$(node_pid "$i")"; done | sed 's/ $//'))"; fi
      bootstrap; return
    fi
    if (( nodes == 1 )); then
      die "a broker started by this script runs (pid $(node_pid 1)) but does not answer on $(tools_bootstrap); see $(log_file 1) or run: $0 stop"
    fi
    die "the cluster's nodes run but it does not answer on $(tools_bootstrap); see $top_dir/node-*/broker.log or run: $0 stop"
  fi
  for i in "${down[@]}"; do check_ports "$i"; done
  if [[ "${1:-}" == "--fresh" ]]; then
    if (( ${#up[@]} > 0 )); then
      say "--fresh ignored: nodes ${up[*]} still run (stop them first); starting nodes ${down[*]} with their data"
    else
      alive "$ctl_id" && die "--fresh: the dedicated controller (pid $(node_pid "$ctl_id")) still runs; run: $0 stop"
      for i in $(node_ids) "$ctl_id"; do
        local dir; dir="$(conf_dir "$i")"
        [[ -d "$dir/data" ]] || continue
        say "deleting the data of earlier runs ($dir/data); their log: $(log_file "$i").1"
        rm -rf "$dir/data"
        if [[ -f "$(log_file "$i")" ]]; then mv -f "$(log_file "$i")" "$(log_file "$i").1"; fi
      done
      rm -f "$txn_record" "$layout_record"
      sync # the deletion's writeback would stall the new broker's first fsyncs
    fi
  fi
  check_txn_version; check_layout
  if (( ssl_on )); then ensure_tls; fi
  write_configs
  format_missing
  ensure_controller
  for i in "${down[@]}"; do
    if (( nodes == 1 && ${#advertised[@]} == 0 )); then say "starting Kafka $version on $(bootstrap) (log: $(log_file 1))"
    elif (( nodes == 1 )); then say "starting Kafka $version on 127.0.0.1:$port (advertised as $(bootstrap), internal $(tools_bootstrap), log: $(log_file 1))"
    else say "starting node $i of a Kafka $version cluster on 127.0.0.1:$(client_port "$i") (advertised as 127.0.0.1:$(advertised_port "$i"), log: $(log_file "$i"))"; fi
    launch "$i"
  done
  wait_ready "${down[@]}"
  scram_user
  if (( nodes == 1 )); then say "broker ready (pid $(node_pid 1))"
  else say "cluster ready on $(bootstrap) (internal $(tools_bootstrap))"; fi
  bootstrap
}

start_node() { # start_node N: start node N again with its existing data
  local n="$1" deadline
  valid_node "$n"
  check_java
  fetch_jars
  check_txn_version; check_layout
  if alive "$n"; then say "node $n already runs (pid $(node_pid "$n"))"; return; fi
  formatted "$n" || die "node $n has no formatted data in $(node_dir "$n")/data; use: $0 start"
  check_ports "$n"
  if (( ssl_on )); then ensure_tls; fi
  write_configs; ensure_controller
  say "starting node $n on 127.0.0.1:$(client_port "$n") with its existing data (log: $(log_file "$n"))"
  launch "$n"
  if (( ! dedicated && $(alive_count) * 2 <= nodes )); then
    # its broker opens its ports only once a controller quorum (a majority of the voters) lets it
    # register, and gives up after initial.broker.registration.timeout.ms (60 s)
    sleep 1
    alive "$n" || { tail -n 40 "$(log_file "$n")" "$(node_dir "$n")/broker.out" >&2 || true; rm -f "$(pid_file "$n")"; die "node $n exited during start"; }
    say "node $n runs (pid $(node_pid "$n")) but waits for a quorum: start another node within 60 s (until then it neither registers nor opens its client port)"
    return
  fi
  deadline=$((SECONDS + ${FLUMEN_KAFKA_START_TIMEOUT:-120}))
  until port_open "$(client_port "$n")"; do
    if ! alive "$n"; then
      say "node $n exited during start; last lines of its log:"
      tail -n 40 "$(log_file "$n")" "$(node_dir "$n")/broker.out" >&2 || true
      rm -f "$(pid_file "$n")"; exit 1
    fi
    if (( SECONDS > deadline )); then
      say "node $n's client port $(client_port "$n") did not open within ${FLUMEN_KAFKA_START_TIMEOUT:-120}s; stopping it"
      stop_nodes "$n"; exit 1
    fi
    sleep 0.2
  done
  wait_ready "$n"
  say "node $n ready (pid $(node_pid "$n"))"
}

scram_user() { # the SASL listeners' test user (idempotent: upserts its credentials)
  kjava kafka.admin.ConfigCommand --bootstrap-server "$(tools_bootstrap)" --command-config "$top_dir/client.properties" \
    --alter --entity-type users --entity-name "$sasl_user" \
    --add-config "SCRAM-SHA-256=[iterations=4096,password=$sasl_password]" >/dev/null \
    || die "creating the SCRAM user $sasl_user of the SASL listener (127.0.0.1:$(sasl_port 1)) failed"
  (( ssl_on )) || return 0
  # SCRAM-SHA-512 for the SASL_SSL listener, with its own password: a request of its own (a
  # broker refuses two changes of one user's credentials in one), its output without the password
  local out
  out="$(kjava kafka.admin.ConfigCommand --bootstrap-server "$(tools_bootstrap)" --command-config "$top_dir/client.properties" \
    --alter --entity-type users --entity-name "$sasl_user" \
    --add-config "SCRAM-SHA-512=[iterations=4096,password=$ssl_password]" 2>&1)" \
    || die "creating the SCRAM-SHA-512 credential of $sasl_user for the SASL_SSL listener ($(ssl_bootstrap)) failed: ${out//"$ssl_password"/<FLUMEN_KAFKA_SSL_PASSWORD>}"
}

stop_nodes() { # stop_nodes N...: SIGTERM (all at once), up to 30 s, then SIGKILL
  local i pid pids=() stopped=() left lost_at=-1 why="did not stop in 30s"
  for i in "$@"; do
    if alive "$i"; then pid="$(node_pid "$i")"; kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); stopped+=("$i")
    else rm -f "$(pid_file "$i")"; fi
  done
  for _ in $(seq 1 60); do
    left=0
    for pid in "${pids[@]}"; do if running "$pid"; then left=1; fi; done
    (( left )) || break
    # a broker's controlled shutdown waits (up to 5 minutes) for the active controller: without
    # a quorum (a majority of the nodes running) it cannot finish, so it gets 10 s, not 30
    if (( nodes > 1 && ! dedicated && $(alive_count) * 2 <= nodes )); then
      if (( lost_at < 0 )); then lost_at=$SECONDS
      elif (( SECONDS - lost_at >= 10 )); then why="cannot finish its controlled shutdown without a controller quorum"; break; fi
    fi
    sleep 0.5
  done
  for i in "${!pids[@]}"; do
    pid="${pids[$i]}"
    if running "$pid"; then
      if (( nodes == 1 )); then say "broker $pid did not stop in 30s; killing it"
      else say "node ${stopped[$i]} (pid $pid) $why; killing it"; fi
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
    fi
    rm -f "$(pid_file "${stopped[$i]}")"
    if (( nodes == 1 )); then say "broker stopped (pid $pid)"; else say "node ${stopped[$i]} stopped (pid $pid)"; fi
  done
}

stop_controller() { # the dedicated controller, after the brokers: SIGTERM, 30 s, then SIGKILL
  alive "$ctl_id" || { rm -f "$(pid_file "$ctl_id")"; return 0; }
  local pid; pid="$(node_pid "$ctl_id")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do running "$pid" || break; sleep 0.5; done
  if running "$pid"; then say "the controller (pid $pid) did not stop in 30s; killing it"; kill -KILL "$pid" 2>/dev/null || true; fi
  for _ in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
  rm -f "$(pid_file "$ctl_id")"
  say "controller stopped (pid $pid)"
}

stop() {
  if (( $(alive_count) == 0 )); then
    stop_controller
    local i; for i in $(node_ids); do rm -f "$(pid_file "$i")"; done
    if (( nodes == 1 )); then say "no broker started by this script is running on port $port"
    else say "no node of a cluster started by this script is running on ports from $port"; fi
    return
  fi
  # shellcheck disable=SC2046 # node ids are words
  stop_nodes $(node_ids)
  stop_controller
}

kill_node() { # kill_node N: SIGKILL, and wait until the process is gone
  local n="$1" pid
  valid_node "$n"
  if ! alive "$n"; then rm -f "$(pid_file "$n")"; say "node $n is not running"; return; fi
  pid="$(node_pid "$n")"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do running "$pid" || break; sleep 0.1; done
  running "$pid" && die "node $n (pid $pid) survived SIGKILL for 10s"
  rm -f "$(pid_file "$n")"
  say "node $n killed (pid $pid)"
}

status() {
  local i ctl_up=1
  if (( dedicated )) && ! alive "$ctl_id"; then ctl_up=0; say "the dedicated controller is not running (127.0.0.1:$ctl_port)"; fi
  if (( ctl_up && $(alive_count) == nodes )); then bootstrap; return; fi
  if (( nodes == 1 )); then say "not running (port $port)"; return 1; fi
  for i in $(node_ids); do
    if alive "$i"; then say "node $i runs (pid $(node_pid "$i"), 127.0.0.1:$(client_port "$i"))"
    else say "node $i is not running (127.0.0.1:$(client_port "$i"))"; fi
  done
  return 1
}

any_alive() { (( $(alive_count) > 0 )) || die "the broker is not running: $0 start"; }

topic() { # topic NAME [PARTITIONS]: create unless it exists
  any_alive
  kjava org.apache.kafka.tools.TopicCommand --bootstrap-server "$(tools_bootstrap)" --create --if-not-exists \
    --topic "$1" --partitions "${2:-1}" --replication-factor "$rf" --command-config "$top_dir/client.properties" >/dev/null
}

produce() { # produce TOPIC: lines "key|value" from stdin
  any_alive
  kjava org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$(tools_bootstrap)" --topic "$1" \
    --reader-property parse.key=true --reader-property key.separator='|'
}

consume() { # consume TOPIC MAX [TIMEOUT_MS]: read_committed, from the beginning, "key|value"
  any_alive
  kjava org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$(tools_bootstrap)" --topic "$1" \
    --from-beginning --max-messages "$2" --timeout-ms "${3:-30000}" --isolation-level read_committed \
    --formatter-property print.key=true --formatter-property key.separator='|' 2>/dev/null || true
}

features() { # the finalized feature levels (transaction.version among them)
  any_alive
  kjava org.apache.kafka.tools.FeatureCommand --bootstrap-server "$(tools_bootstrap)" \
    --command-config "$top_dir/client.properties" describe
}

txn_describe() { # txn_describe TXNID: its coordinator, state, producer id and epoch
  [[ -n "${1:-}" ]] || die "usage: $0 txn-describe TRANSACTIONAL_ID"
  any_alive
  kjava org.apache.kafka.tools.TransactionsCommand --bootstrap-server "$(tools_bootstrap)" \
    --command-config "$top_dir/client.properties" describe --transactional-id "$1"
}

txn_list() { # every transactional id the cluster knows: id, coordinator, producer id, state
  any_alive
  kjava org.apache.kafka.tools.TransactionsCommand --bootstrap-server "$(tools_bootstrap)" \
    --command-config "$top_dir/client.properties" list
}

txn_hanging() { # find-hanging on every running node; fails if a node could not be asked
  any_alive
  local i rc=0 out header=""
  for i in $(node_ids); do
    if ! alive "$i"; then say "node $i is not running: not asked for hanging transactions"; continue; fi
    out="$(kjava org.apache.kafka.tools.TransactionsCommand --bootstrap-server "$(tools_bootstrap)" \
      --command-config "$top_dir/client.properties" find-hanging --broker-id "$i" \
      --max-transaction-timeout 1)" || rc=1
    # one table: the column header once, then each node's rows (none: nothing hangs)
    while IFS= read -r line; do
      if [[ "$line" == Topic$'\t'* ]]; then [[ -n "$header" ]] || { header=1; echo "$line"; }; continue; fi
      [[ -z "$line" ]] || echo "$line"
    done <<<"$out"
  done
  return "$rc"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  topic) shift; topic "$@" ;;
  produce) shift; produce "$@" ;;
  consume) shift; consume "$@" ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  log) valid_node "${3:-1}"; tail -n "${2:-100}" "$(log_file "${3:-1}")" ;;
  kill) valid_node "${2:-1}"; kill_node "${2:-1}" ;;
  stop-node) [[ -n "${2:-}" ]] || die "usage: $0 stop-node N"; valid_node "$2"; stop_nodes "$2" ;;
  start-node) [[ -n "${2:-}" ]] || die "usage: $0 start-node N"; start_node "$2" ;;
  pid) valid_node "${2:-1}"; if alive "${2:-1}"; then node_pid "${2:-1}"; else say "node ${2:-1} is not running"; exit 1; fi ;;
  features) features ;;
  txn-describe) shift; txn_describe "$@" ;;
  txn-hanging) txn_hanging ;;
  txn-list) txn_list ;;
  marker-skips) # Kafka's transaction coordinator dropping markers (CHAOS.md, finding 11)
    for i in $(node_ids); do
      grep -h "Couldn't find leader endpoint for partitions" "$(node_dir "$i")"/broker.log* 2>/dev/null || true
    done ;;
  ssl-bootstrap)
    (( ssl_on )) || say "note: FLUMEN_KAFKA_SSL is not 1: brokers this script starts so have no SASL_SSL listener"
    ssl_bootstrap ;;
  ca-path) ensure_tls; echo "$tls/ca.pem" ;;
  other-ca-path) ensure_tls; echo "$tls/other-ca.pem" ;;
  *) echo "usage: $0 start [--fresh]|stop|status|restart|log [LINES] [N]|kill [N]|stop-node N|start-node N|pid [N]|features|txn-describe TXNID|txn-list|txn-hanging|marker-skips|ssl-bootstrap|ca-path|other-ca-path|topic NAME [PARTITIONS]|produce TOPIC|consume TOPIC MAX [TIMEOUT_MS]" >&2; exit 2 ;;
esac
