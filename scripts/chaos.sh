#!/usr/bin/env bash
# scripts/chaos.sh [--quick] [--scenarios a,b,...] [--nodes 1|3] [--txn-version 1|2]
#                  [--dedicated-controller] [...]
#
# Flumen's chaos suite (CHAOS.md): each scenario runs three keyed pipelines (count, sum of
# ids, tumbling-window count; 1% poison pills into dead letters) under live input, injects its
# fault again and again, then reads every output back read_committed and checks it against a
# reference computed from the input. It starts its own brokers with scripts/kafka.sh (base
# port 19400 for one node, 19500 for three; the test broker's 19092 is left alone), each
# behind a fault-injecting proxy, and writes a dated table to chaos/results/.
#
#   --quick        the CI set (scripts/test.sh runs it); without it, the full set (by hand)
#   --scenarios    sigkill,failpoints,broker-kill,blackhole,lost-commit-response,zombie,
#                  txn-timeout,corrupt-checkpoint,disk-full,clock-jump,sasl-ssl,
#                  cluster (needs --nodes 3),
#                  soak (by hand only: an hour of mixed faults, --soak-minutes N; memory, open
#                  files and threads must stay flat, one transactional id per pipeline),
#                  at-least-once (the verifier's own test: an at-least-once stand-in must FAIL)
#   --dedicated-controller  the brokers beside one KRaft controller process of their own
#                  (production's layout), not nodes that are broker and controller in one
#   other flags go to `flumen-chaos suite` (see --help: --rate, --users, --base-port, ...)
#
# Needs root for the disk-full scenario's tmpfs; says so and fails that scenario otherwise.
# FLUMEN_CHAOS_KEEP=1 keeps the brokers running and every scenario's logs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${FLUMEN_CACHE:-$HOME/.cache/flumen}/target}"

scripts/setup.sh --test  # gdb for stacks, libfaketime for clock-jump

# the same features as scripts/test.sh's build, so CI builds once (failpoints among them)
cargo build --all-features --bin flumen --bin flumen-chaos

args=("$@")
base=()
if [[ " ${args[*]} " == *" --nodes 3 "* && " ${args[*]} " != *" --base-port "* ]]; then
  base=(--base-port 19500)
fi
exec "$CARGO_TARGET_DIR/debug/flumen-chaos" suite --flumen "$CARGO_TARGET_DIR/debug/flumen" \
  --root . "${base[@]}" "${args[@]}"
