#!/usr/bin/env bash
# `make hunt-errors`: looks for errors where there should be none. Two equal loopback nodes (one
# actor each, both on both cores, the default model, the result cache off) take even, moderate
# load: a closed loop of CONCURRENCY clients (default 4) entering each node, so no queue is ever
# more than a few requests deep and nothing should be refused or time out; ROUNDS rounds (default
# 5) of DURATION seconds (default 60). Every request must succeed. The report gives, per round and
# node, requests, errors by status, p50 and p99, and what routing did (attempts local and remote,
# retries, hedges, ejections), then the nodes' log lines of failed attempts, so an error can be
# traced. Exits 1 if any request failed.
#
# About ROUNDS x DURATION after the build. Environment: QUICK=1 (one 10 s round), CONCURRENCY,
# ROUNDS, DURATION, CARGO (e.g. "nice -n 10 cargo"); SENTI__* variables reach both nodes.
# Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${QUICK:-0} == 1 ]]; then
  ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-10}
else
  ROUNDS=${ROUNDS:-5} DURATION=${DURATION:-60}
fi
CONCURRENCY=${CONCURRENCY:-4}
read -r -a CARGO_CMD <<<"${CARGO:-cargo}"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
BENCH=hunt-errors

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
declare -A node_pid node_url
trap 'stop_all node_pid; rm -rf "$work"' EXIT

"${CARGO_CMD[@]}" build --release -p senti-node --bin senti -p senti-bench --bin senti-loadgen >&2

# The result cache off: the load generator cycles through its texts, and answers from the cache
# would hide routing.
start_cluster n 0-1 0-1 SENTI__CACHE__MAX_BYTES=0
echo "| round | node | requests | errors | p50 ms | p99 ms | attempts local / remote | retries | hedges | ejections |"
echo "|---:|---|---:|---|---:|---:|---|---:|---:|---:|"
failed=0
for ((round = 1; round <= ROUNDS; round++)); do
  declare -A before=()
  for name in a b; do before[$name]=$(routing_counters "${node_url[n$name]}"); done
  loads=()
  for name in a b; do
    target/release/senti-loadgen --url "${node_url[n$name]}" --route analyze --mode closed \
      --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 0 --timeout-ms 30000 \
      --start-at $((round * 40000 + ${#loads[@]} * 20000)) --json "$work/round-$round-$name.json" >/dev/null 2>&1 &
    loads+=($!)
  done
  wait "${loads[@]}"
  for name in a b; do
    after=$(routing_counters "${node_url[n$name]}")
    jq -r --argjson b "${before[$name]}" --argjson a "$after" --arg round "$round" --arg node "$name" '
      (.errors // {}) as $e
      | "| \($round) | \($node) | \(.requests) | \(if ($e | length) == 0 then "0" else ($e | to_entries | map("\(.key) \(.value)") | join(", ")) end)"
        + " | \(.latency_ms.p50 | floor) | \(.latency_ms.p99 | floor) | \($a.local - $b.local) / \($a.remote - $b.remote)"
        + " | \($a.retries - $b.retries) | \($a.hedges - $b.hedges) | \($a.ejections - $b.ejections) |"' \
      "$work/round-$round-$name.json"
    errors=$(jq '[(.errors // {})[]] | add // 0' "$work/round-$round-$name.json")
    failed=$((failed + errors))
  done
done
echo
echo "Failed attempts logged by the nodes (first 20):"
grep -h "attempt failed" "$work"/senti-n*.log | head -n 20 || echo "(none)"
echo
echo "\`ROUNDS=$ROUNDS DURATION=$DURATION CONCURRENCY=$CONCURRENCY make hunt-errors\` ($stamp): $failed failed requests."
((failed == 0))
