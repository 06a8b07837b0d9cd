#!/usr/bin/env bash
# Cluster shape benchmark (`make bench-cluster-shape`): what being a cluster costs and buys, side by
# side in one run on the same two cores.
#
#  1. Routing cost (senti-bench-routing): ns per placement decision of the gateway
#     (senti_routing::estimate per target + local_plus_two_remote), for 4, 64 and 256 targets
#     (2 local), with power_of_two_choices and least_loaded for comparison; median of 5 rounds.
#  2. Remote hop (senti-bench-hop): a two-node loopback cluster, both nodes on both cores
#     (one actor, one ONNX thread each; hedging and the p99-based attempt timeout off, see below);
#     closed-loop POST /analyze to a at concurrency 1, 2 and 4, latencies split by the
#     x-senti-served-by header. Concurrency 1 is served locally; at 2 and 4 both actors serve, so
#     local and remote samples are taken under the same load. The cluster is then stopped.
#  3. Two nodes against one (senti-loadgen, closed loop at saturation): a single `senti serve`
#     pinned to core 0, against a new cluster A (core 0) + B (core 1) with default routing, the
#     load entering A only (A's attempt counters show how much went remote).
#     Alternating single / cluster, ROUNDS times; texts/s and the ratio (ideal 2.0). The load
#     generator and the hop client are not pinned: they share the two cores with senti.
#  4. Write bench-results/cluster-shape-<UTC time>.json and print a markdown report.
#
# About 2 minutes after the build. Environment: QUICK=1 (smoke test, figures not meaningful);
# DURATION / WARMUP (seconds per saturation run), CONCURRENCY (saturation, default 16), ROUNDS
# (default 3), HOP_REQUESTS (per hop phase, default 3000), HOP_CONCURRENCY (default 1,2,4);
# CARGO (e.g. "nice -n 10 cargo"). Other SENTI__* variables reach every senti unchanged. Needs
# taskset, curl, jq, python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${QUICK:-0} == 1 ]]; then
  DURATION=${DURATION:-2} WARMUP=${WARMUP:-0.5} ROUNDS=${ROUNDS:-1} HOP_REQUESTS=${HOP_REQUESTS:-300}
  ROUTING_ARGS=(--rounds 3 --round-ms 20)
else
  DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} ROUNDS=${ROUNDS:-3} HOP_REQUESTS=${HOP_REQUESTS:-3000}
  ROUTING_ARGS=(--rounds 5 --round-ms 150)
fi
CONCURRENCY=${CONCURRENCY:-16}
HOP_CONCURRENCY=${HOP_CONCURRENCY:-1,2,4}
# Word splitting wanted: CARGO may be a command with arguments ("nice -n 10 cargo").
read -r -a CARGO_CMD <<<"${CARGO:-cargo}"
if (($(nproc) < 2)); then
  echo "bench-cluster-shape: needs at least 2 cores (found $(nproc))" >&2
  exit 1
fi

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
BENCH=bench-cluster-shape

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
declare -A node_pid node_url

stop_nodes() { stop_all node_pid; }
trap 'stop_nodes; rm -rf "$work"' EXIT

# saturate SETUP ROUND: senti-loadgen closed loop on /analyze against the node that takes the load
# in SETUP (single: S; cluster: A), JSON into $work/sat-SETUP-ROUND.json with the cores each senti
# process, the load generator and every other process kept busy (warm-up included).
saturate() {
  local setup=$1 round=$2 out="$work/sat-$1-$2.json" entry names name t0 t1 mb ma
  if [[ $setup == single ]]; then entry=S names=(S); else entry=A names=(A B); fi
  declare -A before after
  for name in "${names[@]}"; do before[$name]=$(cpu_ticks "${node_pid[$name]}"); done
  local counters_before counters_after
  counters_before=$(routing_counters "${node_url[$entry]}")
  mb=$(machine_busy_ticks)
  t0=$(date +%s.%N)
  target/release/senti-loadgen --url "${node_url[$entry]}" --route analyze --mode closed \
    --concurrency "$CONCURRENCY" --warmup "$WARMUP" --duration "$DURATION" --json "$out.load" >&2
  t1=$(date +%s.%N)
  ma=$(machine_busy_ticks)
  for name in "${names[@]}"; do after[$name]=$(cpu_ticks "${node_pid[$name]}"); done
  counters_after=$(routing_counters "${node_url[$entry]}")
  local a_cores b_cores=0
  a_cores=$(((${after[$entry]} - ${before[$entry]})))
  [[ $setup == cluster ]] && b_cores=$((${after[B]} - ${before[B]}))
  jq --arg setup "$setup" --argjson round "$round" --argjson t0 "$t0" --argjson t1 "$t1" \
    --argjson entry "$a_cores" --argjson b "$b_cores" --argjson mb "$mb" --argjson ma "$ma" \
    --argjson cb "$counters_before" --argjson ca "$counters_after" '
    ($t1 - $t0) as $wall
    | ((.loadgen_cpu_s // 0) / $wall) as $lg
    | . + {setup: $setup, round: $round,
        attempts_at_entry_node: ($ca | with_entries(.value -= $cb[.key])),
        cpu_cores: {
        wall_s: $wall,
        entry_node: ($entry / 100 / $wall),
        node_b: ($b / 100 / $wall),
        loadgen: $lg,
        other_processes: (($ma - $mb) / 100 / $wall - ($entry + $b) / 100 / $wall - $lg)
      }}' "$out.load" >"$out"
  rm -f "$out.load"
}

echo "bench-cluster-shape: building senti, senti-loadgen, senti-bench-routing, senti-bench-hop (release)" >&2
"${CARGO_CMD[@]}" build --release -p senti-node --bin senti \
  -p senti-bench --bin senti-loadgen --bin senti-bench-routing --bin senti-bench-hop

loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "bench-cluster-shape: 1. routing cost" >&2
target/release/senti-bench-routing "${ROUTING_ARGS[@]}" --json "$work/routing.json" >&2

# The hop cluster is not pinned (both nodes on both cores): pinned as in step 3, a's actor would
# share core 0 with a's HTTP and gateway work while b's actor had core 1 to itself, which hides
# the hop. It is measured with hedging and the p99-based attempt timeout off, so that every sample is
# one attempt on the actor named in x-senti-served-by. With them on, the first remote attempts
# (session warm-up) time out against a timeout learnt from local latencies, the failure penalty
# then keeps the remote actor out of the rotation (docs/benchmarks.md), and a hedge that wins
# would be filed as a remote answer whose latency includes the hedge delay.
echo "bench-cluster-shape: 2. remote hop: cluster a + b (not pinned), hedging and p99 timeout off" >&2
start_cluster hop 0,1 0,1 SENTI__ADVANCED__HEDGE_BUDGET_RATIO=0 SENTI__ADVANCED__ATTEMPT_TIMEOUT_P99_FACTOR=0
target/release/senti-bench-hop --url "${node_url[hopa]}" --local-node a --concurrency "$HOP_CONCURRENCY" \
  --requests "$HOP_REQUESTS" --json "$work/hop.json" >&2
curl -fsS "${node_url[hopa]}/v1/cluster" >"$work/hop-cluster-view.json"
stop_nodes

echo "bench-cluster-shape: starting S (single node, core 0) and the cluster A (core 0) + B (core 1), default routing" >&2
start_node S 0 SENTI__SERVER__NODE_ID=s
start_cluster "" 0 1
node_pid[A]=${node_pid[a]} node_url[A]=${node_url[a]} node_pid[B]=${node_pid[b]} node_url[B]=${node_url[b]}
unset 'node_pid[a]' 'node_pid[b]'

echo "bench-cluster-shape: 3. two nodes against one, concurrency $CONCURRENCY, ${DURATION} s per run" >&2
for round in $(seq "$ROUNDS"); do
  saturate single "$round"
  saturate cluster "$round"
done
stop_nodes
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p bench-results
result="bench-results/cluster-shape-$stamp.json"
jq -n \
  --slurpfile routing "$work/routing.json" \
  --slurpfile hop "$work/hop.json" \
  --slurpfile view "$work/hop-cluster-view.json" \
  --argjson sat "$(jq -s . "$work"/sat-*.json)" \
  --arg date "$stamp" \
  --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  --argjson nproc "$(nproc)" \
  --arg before "$loadavg_before" --arg after "$loadavg_after" \
  --argjson quick "$([[ ${QUICK:-0} == 1 ]] && echo true || echo false)" \
  --argjson duration "$DURATION" --argjson warmup "$WARMUP" --argjson c "$CONCURRENCY" '
  def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  ($hop[0].phases | map({key: "c\(.concurrency)", value: .}) | from_entries) as $p
  | ($sat | map(select(.setup == "single") | .texts_per_s) | median) as $single
  | ($sat | map(select(.setup == "cluster") | .texts_per_s) | median) as $cluster
  | {
    date: $date, quick: $quick,
    machine: {nproc: $nproc, cpu: $cpu, loadavg_before: $before, loadavg_after: $after},
    settings: {saturation_duration_s: $duration, saturation_warmup_s: $warmup, saturation_concurrency: $c,
               senti_env: (env | with_entries(select((.key | startswith("SENTI__")) and (.key | contains("AUTH") | not))))},
    routing: $routing[0],
    hop: $hop[0],
    hop_cluster_view_after: $view[0],
    saturation: ($sat | sort_by([.round, (.setup == "cluster")])),
    summary: {
      hop_c2_remote_minus_local_p50_ms: ($p.c2.remote.p50 - $p.c2.local.p50),
      hop_c2_remote_minus_local_p99_ms: ($p.c2.remote.p99 - $p.c2.local.p99),
      hop_remote_c2_minus_local_c1_p50_ms: ($p.c2.remote.p50 - $p.c1.local.p50),
      single_texts_per_s: $single,
      cluster_texts_per_s: $cluster,
      cluster_over_single: ($cluster / $single)
    }
  }' >"$result"

jq -r '
  def f1: . * 10 | round / 10 | tostring;
  def f2: . * 100 | round / 100 | if . == 0 then 0 else . end | tostring;
  def f0: round | tostring;
  def errs: if (.errors | length) == 0 then "0" else (.errors | to_entries | map("\(.key) \(.value)") | join(", ")) end;
  .summary as $s
  | "## senti cluster shape benchmark \(.date)\(if .quick then " (QUICK smoke run: figures not meaningful)" else "" end)",
    "",
    "\(.machine.cpu), nproc \(.machine.nproc), load average \(.machine.loadavg_before) before, \(.machine.loadavg_after) after.",
    (.settings.senti_env | to_entries | select(length > 0) | "senti environment: " + (map("\(.key)=\(.value)") | join(" ")) + "."),
    "",
    "### 1. Routing decision (senti-bench-routing, median of \(.routing.rounds) rounds)",
    "",
    "| targets (2 local) | policy | ns: choose only | rounds | ns: estimate per target + choose | rounds |",
    "|---:|---|---:|---|---:|---|",
    (.routing.results | group_by([.targets, ({local_plus_two_remote: 0, power_of_two_choices: 1, least_loaded: 2}[.policy])])[] | (map(select(.work == "choose"))[0]) as $a | (map(select(.work == "estimate_and_choose"))[0]) as $b
      | "| \($a.targets) | `\($a.policy)` | \($a.ns_per_decision | f1) | \($a.rounds_ns_per_decision | map(f0) | join(", ")) | \($b.ns_per_decision | f1) | \($b.rounds_ns_per_decision | map(f0) | join(", ")) |"),
    "",
    "### 2. Remote hop (senti-bench-hop: POST /analyze to node a, split by x-senti-served-by; nodes not pinned; hedging and p99 timeout off)",
    "",
    "| concurrency | served by | samples | p50 ms | p90 ms | p99 ms | mean ms | errors |",
    "|---:|---|---:|---:|---:|---:|---:|---:|",
    (.hop.phases[] | . as $ph | (["local (a)", .local], ["remote (b)", .remote])
      | "| \($ph.concurrency) | \(.[0]) | \(.[1].samples) | \(.[1].p50 | f2) | \(.[1].p90 | f2) | \(.[1].p99 | f2) | \(.[1].mean | f2) | \($ph.errors) |"),
    "",
    "Remote minus local at concurrency 2: p50 \($s.hop_c2_remote_minus_local_p50_ms | f2) ms, p99 \($s.hop_c2_remote_minus_local_p99_ms | f2) ms; remote p50 at c=2 minus local p50 at c=1: \($s.hop_remote_c2_minus_local_c1_p50_ms | f2) ms.",
    "",
    "### 3. Two nodes (one core each) against one node (one core), load into one node",
    "",
    "| setup | round | texts/s | p50 ms | p99 ms | errors | attempts at entry: local / remote / hedges / retries | cores: entry node / node B / loadgen / other |",
    "|---|---:|---:|---:|---:|---|---|---|",
    (.saturation[] | "| \(if .setup == "single" then "single S (core 0)" else "cluster A (core 0) + B (core 1)" end) | \(.round) | \(.texts_per_s | f0) | \(.latency_ms.p50 | f2) | \(.latency_ms.p99 | f2) | \(errs) | \(.attempts_at_entry_node | "\(.local) / \(.remote) / \(.hedges) / \(.retries)") | \(.cpu_cores.entry_node | f2) / \(.cpu_cores.node_b | f2) / \(.cpu_cores.loadgen | f2) / \(.cpu_cores.other_processes | f2) |"),
    "",
    "Closed loop, concurrency \(.settings.saturation_concurrency), \(.settings.saturation_duration_s) s after \(.settings.saturation_warmup_s) s warm-up. Median texts/s: single \($s.single_texts_per_s | f0), cluster \($s.cluster_texts_per_s | f0); **cluster ÷ single = \($s.cluster_over_single | f2)** (ideal 2.0). The load generator is not pinned and shares both cores with senti."
' "$result"
echo "bench-cluster-shape: results in $result" >&2
