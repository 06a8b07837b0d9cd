#!/usr/bin/env bash
# `make bench-vs-nginx`: the seed recipe's balancer against senti's own routing, on the same senti
# processes of unequal capacity, side by side in one run on the same two cores.
#
# Three `senti serve` nodes (one actor, one ONNX thread each, the default model, the result cache
# off): n0 pinned to core 0 alone, n1 and n2 sharing core 1, so n0 can serve about as much as n1 and
# n2 together. Four setups of the same nodes:
#   nginx-least-conn   the nodes standalone behind nginx `least_conn`, configured as the seed
#                      article suggests: max_fails=1 fail_timeout=5s, proxy_next_upstream on errors,
#                      timeouts, 502/503/429 (non_idempotent: a classification is safe to resend),
#                      at most 3 tries, keep-alive to the nodes.
#   nginx-round-robin  the same without `least_conn`.
#   senti-one-entry    the nodes as one senti cluster, every client entering n0.
#   senti-spread       the same cluster, the clients' requests spread over the three nodes in turn.
# The reference load C is measured first: a closed loop of CONCURRENCY (16) clients through
# nginx-least-conn, in texts/s, on nodes just started (so C is a little below what warm nodes
# serve; CAPACITY=<texts/s> sets it instead). Then, ROUNDS times (3), every setup in turn gets:
#   closed      the closed loop of CONCURRENCY clients (throughput when saturated);
#   open-<f>    an open loop (latency from the scheduled send time) at f x C for every f in LOADS
#               (0.5 0.7 0.85 0.95 1.0 1.15);
#   slowed      an open loop at SLOW_LOAD x C (0.7); FAULT_AFTER (3) s into the measured time n1 is
#               held to a third of its CPU share (a cpu cgroup quota, v1 or v2; skipped without one);
#   killed      the same with n2 SIGKILLed FAULT_AFTER s in (requests that senti-spread sends to n2's
#               own HTTP, in flight at its death or sent after, fail: they are counted apart).
# Writes bench-results/vs-nginx-<UTC time>.json and prints markdown tables: per setup the closed
# loop's texts/s, p99 at 0.7 and 0.85 x C, the throughput at the p99 objective (the highest open
# load served with p99 <= P99_OBJECTIVE_MS (100) and no error), and the slowed and killed runs'
# p99 and errors (medians of the rounds; errors summed); for senti the share of attempts remote;
# then each round's closed loop and p99 at 0.85 x C, and the share of CPU time the hypervisor
# took (steal, /proc/stat) during each run: on a shared machine a round can run slower as a
# whole, and these show which.
#
# About 30 minutes after the build. Environment: QUICK=1 (smoke run, figures not meaningful),
# DURATION / WARMUP (seconds per run), CONCURRENCY, ROUNDS, LOADS, SLOW_LOAD, FAULT_AFTER,
# P99_OBJECTIVE_MS, SETUPS (a subset of the four, space-separated), CAPACITY, CARGO (e.g. "nice -n 10 cargo"). Installs nginx from Debian if missing. Needs
# taskset, curl, jq; the slowed run needs root. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${QUICK:-0} == 1 ]]; then
  DURATION=${DURATION:-4} WARMUP=${WARMUP:-1} ROUNDS=${ROUNDS:-1} LOADS=${LOADS:-0.7}
else
  DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} ROUNDS=${ROUNDS:-3} LOADS=${LOADS:-0.5 0.7 0.85 0.95 1.0 1.15}
fi
CONCURRENCY=${CONCURRENCY:-16}
SLOW_LOAD=${SLOW_LOAD:-0.7}
FAULT_AFTER=${FAULT_AFTER:-3}
P99_OBJECTIVE_MS=${P99_OBJECTIVE_MS:-100}
read -r -a SETUPS <<<"${SETUPS:-nginx-least-conn nginx-round-robin senti-one-entry senti-spread}"
read -r -a CARGO_CMD <<<"${CARGO:-cargo}"
if (($(nproc) < 2)); then
  echo "bench-vs-nginx: needs at least 2 cores (found $(nproc))" >&2
  exit 1
fi

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
BENCH=bench-vs-nginx

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
declare -A node_pid node_url
nginx_pid=""
slow_group=""
CORES=(0 1 1)
NODES=(n0 n1 n2)
CLUSTER_IDS=("${NODES[@]}") # start_cluster's node names and ids

stop_everything() {
  stop_all node_pid
  if [[ -n $nginx_pid ]]; then
    kill -TERM "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    nginx_pid=""
  fi
}
trap 'stop_everything; [[ -z $slow_group ]] || rmdir "$slow_group" 2>/dev/null; rm -rf "$work"' EXIT

# slow_group_dir: creates a cpu cgroup that holds its processes to a sixth of one core (n1 shares
# core 1 with n2, so that is a third of its share) and prints its directory; prints nothing when
# this machine offers no writable cpu controller.
slow_group_dir() {
  local dir
  if [[ -e /sys/fs/cgroup/cgroup.controllers ]]; then
    dir=/sys/fs/cgroup/senti-bench-slow-$$
    echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    mkdir "$dir" 2>/dev/null && echo "16667 100000" >"$dir/cpu.max" 2>/dev/null && echo "$dir"
  elif [[ -w /sys/fs/cgroup/cpu ]]; then
    dir=/sys/fs/cgroup/cpu/senti-bench-slow-$$
    mkdir "$dir" 2>/dev/null && echo 16667 >"$dir/cpu.cfs_quota_us" 2>/dev/null && echo "$dir"
  fi
  return 0
}

# start_nginx POLICY: nginx (POLICY least_conn or round_robin) over the three standalone nodes on a
# free port (NGINX_URL).
start_nginx() {
  local policy=$1 port upstreams="" name nginx balance=""
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  port=$(free_port)
  [[ $policy == least_conn ]] && balance="least_conn;"
  for name in "${NODES[@]}"; do
    upstreams+="    server ${node_url[$name]#http://} max_fails=1 fail_timeout=5s;"$'\n'
  done
  mkdir -p "$work/nginx/tmp" "$work/nginx/logs"
  cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log crit;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  upstream senti {
    $balance
$upstreams    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://senti;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_connect_timeout 1s;
      proxy_read_timeout 10s;
      proxy_next_upstream error timeout http_502 http_503 http_429 non_idempotent;
      proxy_next_upstream_tries 3;
    }
  }
}
EOF
  "$nginx" -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/nginx/logs/stdout.log" 2>&1 &
  nginx_pid=$!
  NGINX_URL="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -d '{"text":"很好"}' "$NGINX_URL/analyze" 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$work/nginx/logs/error.log" >&2
  echo "bench-vs-nginx: nginx did not answer" >&2
  exit 1
}

# start_setup SETUP: starts the three nodes as SETUP needs them and sets TARGETS (the loadgen's
# --url arguments).
start_setup() {
  local setup=$1 i
  case $setup in
    nginx-*)
      for i in 0 1 2; do
        start_node "n$i" "${CORES[$i]}" SENTI__SERVER__NODE_ID="n$i" RUST_LOG=error SENTI__CACHE__MAX_BYTES=0
      done
      if [[ $setup == nginx-least-conn ]]; then start_nginx least_conn; else start_nginx round_robin; fi
      TARGETS=(--url "$NGINX_URL")
      ;;
    senti-*)
      start_cluster "" "${CORES[@]}" RUST_LOG=error SENTI__CACHE__MAX_BYTES=0
      TARGETS=(--url "${node_url[n0]}")
      if [[ $setup == senti-spread ]]; then
        TARGETS=(--url "${node_url[n0]}" --url "${node_url[n1]}" --url "${node_url[n2]}")
      fi
      ;;
  esac
}

# counters SETUP: the live senti nodes' routing counters by node ({} for nginx).
counters() {
  local name
  {
    echo '{}'
    if [[ $1 == senti-* ]]; then
      for name in "${NODES[@]}"; do
        routing_counters "${node_url[$name]}" 2>/dev/null | jq --arg n "$name" '{($n): .}' || true
      done
    fi
  } | jq -s 'add'
}

# run SETUP ROUND SCENARIO [loadgen flags...]: one load run, JSON into $work/run-...json; a
# scenario `slowed` or `killed` injects its fault FAULT_AFTER s into the measured time.
run() {
  local setup=$1 round=$2 scenario=$3 out="$work/run-$1-$2-$3.json" before after loadgen fault=null
  shift 3
  before=$(counters "$setup")
  steal_before=$(steal_ticks)
  target/release/senti-loadgen "${TARGETS[@]}" --route analyze --warmup "$WARMUP" --duration "$DURATION" \
    --json "$out.load" "$@" >"$out.log" 2>&1 &
  loadgen=$!
  case $scenario in
    slowed)
      sleep "$(jq -n "$WARMUP + $FAULT_AFTER")"
      if [[ -n $slow_group ]] && echo "${node_pid[n1]}" >"$slow_group/cgroup.procs"; then
        fault='"n1 held to a third of its share"'
      fi
      ;;
    killed)
      sleep "$(jq -n "$WARMUP + $FAULT_AFTER")"
      kill -KILL "${node_pid[n2]}" && fault='"n2 SIGKILLed"'
      wait "${node_pid[n2]}" 2>/dev/null || true
      ;;
  esac
  wait "$loadgen" || { cat "$out.log" >&2; echo "bench-vs-nginx: senti-loadgen failed ($setup $scenario)" >&2; exit 1; }
  after=$(counters "$setup")
  steal_after=$(steal_ticks)
  jq --arg setup "$setup" --argjson round "$round" --arg scenario "$scenario" --argjson b "$before" \
    --argjson a "$after" --argjson fault "$fault" --arg dead "${node_url[n2]}" \
    --argjson s0 "[${steal_before// /,}]" --argjson s1 "[${steal_after// /,}]" \
    '. + {setup: $setup, round: $round, scenario: $scenario, fault: $fault,
          steal_share: (($s1[0] - $s0[0]) / ([$s1[1] - $s0[1], 1] | max)),
          dead_entry_errors: (if $scenario == "killed" then [.per_url[] | select(.url | startswith($dead)) | .errors] | add // 0 else 0 end),
          attempts: ([$a | keys[] | select($b[.] != null) as $n | $a[$n] | to_entries[] | .value -= $b[$n][.key]]
                     | group_by(.key) | map({key: .[0].key, value: (map(.value) | add)}) | from_entries
                     | {local: (.local // 0), remote: (.remote // 0), hedges: (.hedges // 0),
                        hedges_declined: (.hedges_declined // 0), retries: (.retries // 0)})}' \
    "$out.load" >"$out"
  rm -f "$out.load"
  echo "bench-vs-nginx: $setup $scenario: $(jq -r '"\(.texts_per_s | round) texts/s, p99 \(.latency_ms.p99 * 10 | round / 10) ms, errors \(.errors)"' "$out")" >&2
}

# open_run SETUP ROUND SCENARIO LOAD: an open loop at LOAD x C.
open_run() {
  run "$1" "$2" "$3" --mode open --concurrency 256 --rate "$(jq -n "$4 * $capacity | round")"
}

bash benches/peers/peers.sh install-nginx
echo "bench-vs-nginx: building senti and senti-loadgen (release)" >&2
"${CARGO_CMD[@]}" build --release -p senti-node --bin senti -p senti-bench --bin senti-loadgen
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
slow_group=$(slow_group_dir)
[[ -n $slow_group ]] || echo "bench-vs-nginx: no writable cpu cgroup here: the slowed runs go without their fault" >&2

if [[ -n ${CAPACITY:-} ]]; then
  capacity=$CAPACITY capacity_source="set by CAPACITY"
  echo "bench-vs-nginx: C = $capacity texts/s (CAPACITY)" >&2
else
  start_setup nginx-least-conn
  run nginx-least-conn 0 capacity --mode closed --concurrency "$CONCURRENCY"
  stop_everything
  capacity=$(jq '.texts_per_s | round' "$work/run-nginx-least-conn-0-capacity.json")
  capacity_source="nginx least_conn, closed loop of $CONCURRENCY"
  echo "bench-vs-nginx: C = $capacity texts/s (nginx least_conn, closed loop of $CONCURRENCY)" >&2
fi

for round in $(seq "$ROUNDS"); do
  for setup in "${SETUPS[@]}"; do
    echo "bench-vs-nginx: round $round: $setup (cores ${CORES[*]})" >&2
    start_setup "$setup"
    run "$setup" "$round" closed --mode closed --concurrency "$CONCURRENCY"
    for load in $LOADS; do open_run "$setup" "$round" "open-$load" "$load"; done
    open_run "$setup" "$round" slowed "$SLOW_LOAD"
    [[ -z $slow_group ]] || echo "${node_pid[n1]}" >"$(dirname "$slow_group")/cgroup.procs"
    open_run "$setup" "$round" killed "$SLOW_LOAD"
    stop_everything
  done
done
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p bench-results
result="bench-results/vs-nginx-$stamp.json"
jq -s --arg before "$loadavg_before" --arg after "$loadavg_after" --argjson c "$CONCURRENCY" --argjson cap "$capacity" --arg source "$capacity_source" \
  --argjson objective "$P99_OBJECTIVE_MS" --arg loads "$LOADS" --argjson slow "$SLOW_LOAD" \
  '{concurrency: $c, capacity_texts_per_s: $cap, capacity_source: $source, p99_objective_ms: $objective, loads: ($loads | split(" ")),
    fault_load: $slow, cores: "n0 on core 0; n1, n2 on core 1", loadavg_before: $before, loadavg_after: $after,
    runs: (. | sort_by(.setup, .round, .scenario))}' "$work"/run-*.json >"$result"
echo "bench-vs-nginx: wrote $result" >&2
bash scripts/bench-vs-nginx-report.sh "$result"
