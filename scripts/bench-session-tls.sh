#!/usr/bin/env bash
# What TLS costs a remote hop (`make bench-session-tls`): two-node loopback clusters (a and b, one
# actor with one thread each, not pinned) with plaintext sessions and with mutual-TLS sessions
# (`cluster.tls_dir`), alternating, ROUNDS times. Each runs senti-bench-hop: closed-loop
# POST /analyze into a at concurrency 2, latencies split by x-senti-served-by (both actors serve,
# so local and remote samples are taken under the same load; hedging and the p99-based attempt
# timeout off, as in bench-cluster-shape). Prints the median over rounds of the local and remote
# p50 and p99 of each mode and TLS / plaintext, and writes bench-results/session-tls-<UTC>.json.
#
# About 2 minutes after the build. Environment: QUICK=1 (smoke test), ROUNDS (3), HOP_REQUESTS
# (3000), CARGO. Needs taskset, curl, jq, python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${QUICK:-0} == 1 ]]; then
  ROUNDS=${ROUNDS:-1} HOP_REQUESTS=${HOP_REQUESTS:-300}
else
  ROUNDS=${ROUNDS:-3} HOP_REQUESTS=${HOP_REQUESTS:-3000}
fi
read -r -a CARGO_CMD <<<"${CARGO:-cargo}"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
BENCH=bench-session-tls

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
declare -A node_pid node_url
stop_nodes() { stop_all node_pid; }
trap 'stop_nodes; rm -rf "$work"' EXIT

echo "$BENCH: building senti and senti-bench-hop (release)" >&2
"${CARGO_CMD[@]}" build --release -p senti-node --bin senti -p senti-bench --bin senti-bench-hop
target/release/senti cluster tls --out "$work/tls" 2>/dev/null

for round in $(seq "$ROUNDS"); do
  for mode in plain tls; do
    extra=(SENTI__ADVANCED__HEDGE_BUDGET_RATIO=0 SENTI__ADVANCED__ATTEMPT_TIMEOUT_P99_FACTOR=0)
    [[ $mode == tls ]] && extra+=(SENTI_CLUSTER_TLS_DIR="$work/tls")
    echo "$BENCH: round $round, $mode sessions" >&2
    start_cluster "$mode$round" 0,1 0,1 "${extra[@]}"
    target/release/senti-bench-hop --url "${node_url[${mode}${round}a]}" --local-node a --concurrency 2 \
      --requests "$HOP_REQUESTS" --json "$work/run.json" >/dev/null
    jq --arg mode "$mode" --argjson round "$round" '.phases[0] + {mode: $mode, round: $round}' \
      "$work/run.json" >"$work/$mode-$round.json"
    stop_nodes
  done
done

mkdir -p bench-results
result="bench-results/session-tls-$stamp.json"
jq -s --arg date "$stamp" '
  def median: sort | .[(length - 1) / 2 | floor];
  def side($m): map(select(.mode == $m)) | {
    local_p50: (map(.local.p50) | median), local_p99: (map(.local.p99) | median),
    remote_p50: (map(.remote.p50) | median), remote_p99: (map(.remote.p99) | median),
    remote_samples: (map(.remote.samples) | add), errors: (map(.errors) | add)};
  {date: $date, runs: ., plain: side("plain"), tls: side("tls")}' "$work"/*-*.json >"$result"
jq -r '
  "| sessions | local p50 ms | local p99 ms | remote p50 ms | remote p99 ms | errors |",
  "|---|---:|---:|---:|---:|---:|",
  (["plain", "tls"][] as $m | .[$m] |
    "| \($m) | \(.local_p50) | \(.local_p99) | \(.remote_p50) | \(.remote_p99) | \(.errors) |"),
  "| TLS / plain | \(.tls.local_p50 / .plain.local_p50 * 100 | round / 100) | \(.tls.local_p99 / .plain.local_p99 * 100 | round / 100) | \(.tls.remote_p50 / .plain.remote_p50 * 100 | round / 100) | \(.tls.remote_p99 / .plain.remote_p99 * 100 | round / 100) | |"
' "$result"
echo "$BENCH: $result" >&2
