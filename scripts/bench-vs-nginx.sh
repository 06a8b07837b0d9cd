#!/usr/bin/env bash
# The seed recipe's balancer against senti's own routing, on the same senti processes
# (`make bench-vs-nginx`), side by side in one run on the same two cores.
#
# Three `senti serve` nodes of unequal capacity: n0 pinned to core 0 alone, n1 and n2 sharing
# core 1 (one actor, one ONNX thread each), so n0 can serve about as much as n1 and n2 together.
#   nginx:  the nodes standalone (no cluster) behind nginx `least_conn`, configured as the seed
#           article suggests: max_fails=1 fail_timeout=5s, proxy_next_upstream on errors,
#           timeouts, 502/503/429 (non_idempotent: a classification is safe to resend), at most
#           3 tries, keep-alive to the nodes.
#   senti:  the same three nodes as one senti cluster, every client entering n0 (the gateway
#           routes to the least-loaded actor anywhere, as nginx does from its one entry point).
# senti-loadgen closed loop on /analyze at CONCURRENCY, alternating nginx / senti ROUNDS times;
# writes bench-results/vs-nginx-<UTC time>.json and prints a markdown table (texts/s, p50, p99,
# errors, and for senti the share of attempts that went remote).
#
# About 3 minutes after the build. Environment: QUICK=1 (smoke test, figures not meaningful);
# DURATION / WARMUP (seconds per run), CONCURRENCY (default 16), ROUNDS (default 3); CARGO
# (e.g. "nice -n 10 cargo"). Installs nginx from Debian if missing. Needs taskset, curl, jq.
# Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${QUICK:-0} == 1 ]]; then
  DURATION=${DURATION:-2} WARMUP=${WARMUP:-0.5} ROUNDS=${ROUNDS:-1}
else
  DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} ROUNDS=${ROUNDS:-3}
fi
CONCURRENCY=${CONCURRENCY:-16}
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
CORES=(0 1 1)

stop_everything() {
  stop_all node_pid
  if [[ -n $nginx_pid ]]; then
    kill -TERM "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    nginx_pid=""
  fi
}
trap 'stop_everything; rm -rf "$work"' EXIT

# start_nginx: nginx least_conn over the three standalone nodes on a free port (NGINX_URL).
start_nginx() {
  local port upstreams="" name nginx
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  port=$(free_port)
  for name in n0 n1 n2; do
    upstreams+="    server ${node_url[$name]#http://} max_fails=1 fail_timeout=5s;"$'\n'
  done
  mkdir -p "$work/nginx/tmp" "$work/nginx/logs"
  cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  upstream senti {
    least_conn;
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

# attempts URL: the node's attempt counters, {"local": n, "remote": n}.
attempts() {
  curl -fsS "$1/metrics" | awk '
    /^senti_attempts_total\{hop="local"\}/ { l = $2 }
    /^senti_attempts_total\{hop="remote"\}/ { r = $2 }
    END { printf "{\"local\":%d,\"remote\":%d}\n", l, r }'
}

# run SETUP ROUND URL: one closed-loop run into URL, JSON into $work/run-SETUP-ROUND.json.
run() {
  local setup=$1 round=$2 url=$3 out="$work/run-$1-$2.json" before after
  before='{"local":0,"remote":0}'
  [[ $setup == senti ]] && before=$(attempts "${node_url[n0]}")
  target/release/senti-loadgen --url "$url" --route analyze --mode closed --concurrency "$CONCURRENCY" \
    --warmup "$WARMUP" --duration "$DURATION" --json "$out.load" >&2
  after=$before
  [[ $setup == senti ]] && after=$(attempts "${node_url[n0]}")
  jq --arg setup "$setup" --argjson round "$round" --argjson b "$before" --argjson a "$after" \
    '. + {setup: $setup, round: $round, attempts: {local: ($a.local - $b.local), remote: ($a.remote - $b.remote)}}' \
    "$out.load" >"$out"
  rm -f "$out.load"
}

bash benches/peers/peers.sh install-nginx
echo "bench-vs-nginx: building senti and senti-loadgen (release)" >&2
"${CARGO_CMD[@]}" build --release -p senti-node --bin senti -p senti-bench --bin senti-loadgen
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)

for round in $(seq "$ROUNDS"); do
  echo "bench-vs-nginx: round $round: nginx least_conn over three standalone nodes (cores ${CORES[*]})" >&2
  for i in 0 1 2; do start_node "n$i" "${CORES[$i]}" SENTI__SERVER__NODE_ID="n$i" RUST_LOG=error; done
  start_nginx
  run nginx "$round" "$NGINX_URL"
  stop_everything

  echo "bench-vs-nginx: round $round: the same nodes as a senti cluster, clients entering n0" >&2
  cookie="bench-$stamp-$RANDOM"
  key_file=$(cluster_key_file)
  gossip0=$(free_port)
  for i in 0 1 2; do
    if ((i == 0)); then gossip=$gossip0; else gossip=$(free_port); fi
    start_node "n$i" "${CORES[$i]}" SENTI__SERVER__NODE_ID="n$i" RUST_LOG=error SENTI__CLUSTER__ENABLED=true SENTI_CLUSTER_COOKIE="$cookie" \
      SENTI_CLUSTER_KEY_FILE="$key_file" SENTI__CLUSTER__GOSSIP_LISTEN="127.0.0.1:$gossip" SENTI__CLUSTER__ACTOR_LISTEN="127.0.0.1:$(free_port)" \
      SENTI__CLUSTER__SEEDS="[\"127.0.0.1:$gossip0\"]"
  done
  for _ in $(seq 300); do
    curl -fsS "${node_url[n0]}/v1/cluster" 2>/dev/null |
      jq -e '[.routing.targets[] | select(.local == false)] | length == 2' >/dev/null && break
    sleep 0.1
  done
  run senti "$round" "${node_url[n0]}"
  stop_everything
done
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p bench-results
result="bench-results/vs-nginx-$stamp.json"
jq -s --arg before "$loadavg_before" --arg after "$loadavg_after" --argjson c "$CONCURRENCY" \
  '{concurrency: $c, cores: "n0 on core 0; n1, n2 on core 1", loadavg_before: $before, loadavg_after: $after, runs: .}' \
  "$work"/run-*.json >"$result"
echo "bench-vs-nginx: wrote $result" >&2

jq -r '
  def med: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
  def r(x): if x == null then "-" else (x * 10 | round / 10 | tostring) end;
  (.runs | group_by(.setup)) as $groups
  | "| setup | texts/s (median of \(.runs | map(.round) | max) rounds) | p50 ms | p99 ms | errors | remote attempts |",
    "|---|---|---|---|---|---|",
    ($groups[] | . as $g
      | "| \($g[0].setup) | \(r($g | map(.texts_per_s) | med)) | \(r($g | map(.latency_ms.p50) | med)) | \(r($g | map(.latency_ms.p99) | med)) | \($g | map(.errors | to_entries | map(.value) | add // 0) | add) | \(if $g[0].setup == "senti" then (($g | map(.attempts.remote) | add) / ([($g | map(.attempts.local + .attempts.remote) | add), 1] | max) * 100 | round | tostring) + "%" else "-" end) |"),
    "",
    "senti / nginx texts/s: \(($groups | map(select(.[0].setup == "senti"))[0] | map(.texts_per_s) | med) / ($groups | map(select(.[0].setup == "nginx"))[0] | map(.texts_per_s) | med) * 100 | round / 100)"
' "$result"
