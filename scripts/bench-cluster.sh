#!/usr/bin/env bash
# Cluster failure-detector benchmark (`make bench-cluster`): for each gossip interval x phi
# threshold of the sweep, three release `senti serve` on loopback form a cluster; then
#
#  1. false alarms: every node saturated by closed-loop /analyze load while every node's
#     /v1/cluster is polled every 100 ms (a poll listing fewer than 3 live members or anything
#     dead is a false alarm); the age of the gossiped loads is recorded too;
#  2. detection: SIGKILL one node, then restart it, let it run loaded for 10 s, SIGSTOP it, and
#     measure each time, at 50 ms polling, how long both survivors take to drop it from their
#     members.
#
# Writes bench-results/cluster-<UTC time>.json (ignored by git) and prints a markdown table.
# docs/cluster.md records the results. All of it is done by senti-cluster-probe
# (benches/tools/src/bin/senti-cluster-probe.rs, `--help` for every option); this script builds
# the release binaries and runs it.
#
# About 6 minutes for the default sweep (100,200,500 ms x phi 6,8,12, 20 s of load per point).
# Environment: QUICK=1 for a smoke run (one point, 3 s of load: figures not meaningful);
# INTERVALS=100,200 PHIS=8,12 LOAD_SECONDS=10 SETTLE_SECONDS=10 CONCURRENCY=8 override the
# sweep; CARGO (e.g. "nice -n 10 cargo"). Extra arguments go to the probe. Other SENTI__* variables
# reach every node and are recorded (the probe's own cluster and engine.actors settings win).
# Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

# Word splitting wanted: CARGO may be a command with arguments ("nice -n 10 cargo").
read -r -a CARGO_CMD <<<"${CARGO:-cargo}"

args=()
[[ ${QUICK:-0} == 1 ]] && args+=(--quick)
[[ -n ${INTERVALS:-} ]] && args+=(--intervals "$INTERVALS")
[[ -n ${PHIS:-} ]] && args+=(--phis "$PHIS")
[[ -n ${LOAD_SECONDS:-} ]] && args+=(--load-seconds "$LOAD_SECONDS")
[[ -n ${SETTLE_SECONDS:-} ]] && args+=(--settle-seconds "$SETTLE_SECONDS")
[[ -n ${CONCURRENCY:-} ]] && args+=(--concurrency "$CONCURRENCY")

echo "bench-cluster: building senti and senti-cluster-probe (release)" >&2
"${CARGO_CMD[@]}" build --release -p senti-node --bin senti -p senti-bench --bin senti-cluster-probe

mkdir -p bench-results
exec target/release/senti-cluster-probe --senti target/release/senti ${args[@]+"${args[@]}"} "$@"
