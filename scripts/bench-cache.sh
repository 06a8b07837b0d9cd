#!/usr/bin/env bash
# The result cache off and on, side by side (`make bench-cache`; docs/cache.md):
#
#  1. Two traces of POST /analyze over the 75,142 distinct reviews of train.tsv + val.tsv, each
#     measured by scripts/bench-ab.sh with A = SENTI__CACHE__MAX_BYTES=0 (cache off) and B = the
#     default cache (64 MiB), on fresh servers per trace; every request sends a text not sent
#     before, except a share that repeats an earlier one (senti-loadgen --repeat-share, Zipf
#     popularity):
#     - reviews:   REVIEWS_SHARE (0.005), the exact-repeat rate of the public review sets
#                  (scripts/data-repeats.py);
#     - templated: TEMPLATED_SHARE (0.3), an assumed template-heavy traffic, not a measurement.
#     The hit rates are the x-senti-cache headers of the measured answers.
#  2. Hit latency: one server with the cache on, concurrency 1: distinct texts (every answer a
#     miss), then one text over and over (every answer a hit). The client's latency on loopback
#     bounds the server's time from above.
#  3. Memory bound: a server with SENTI__CACHE__MAX_BYTES=CACHE_BOUND (1 MiB) and one with the
#     cache off are each sent UNIQUE (10,000) distinct texts at concurrency 4; senti_cache_bytes
#     is read every 0.5 s during the run and must never exceed the bound (the script fails
#     otherwise); VmRSS before and after.
#  4. Prints the report and writes it to bench-results/cache-<UTC time>.md (bench-ab's JSON files
#     beside it).
#
# About 7 minutes after the build. Environment: ROUNDS (3), CONCURRENCIES ("1 8"), DURATION (10)
# and WARMUP (2) seconds per run, REVIEWS_SHARE, TEMPLATED_SHARE, CACHE_BOUND, UNIQUE, DATA (the
# folder of train.tsv and val.tsv), CARGO; QUICK=1 for a smoke run (about 2 minutes, figures
# meaningless). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${QUICK:-0} == 1 ]]; then
  ROUNDS=${ROUNDS:-2} DURATION=${DURATION:-2} WARMUP=${WARMUP:-0.5} UNIQUE=${UNIQUE:-2000}
fi
ROUNDS=${ROUNDS:-3}
CONCURRENCIES=${CONCURRENCIES:-1 8}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REVIEWS_SHARE=${REVIEWS_SHARE:-0.005}
TEMPLATED_SHARE=${TEMPLATED_SHARE:-0.3}
CACHE_BOUND=${CACHE_BOUND:-1048576}
UNIQUE=${UNIQUE:-10000}
DATA=${DATA:-../shared/data/sentiment}
PAYLOAD=(--payload "$DATA/train.tsv" --payload "$DATA/val.tsv")
read -r -a CARGO_CMD <<<"${CARGO:-cargo}"
BENCH=bench-cache

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
declare -A server_pid server_url
trap 'stop_all server_pid; rm -rf "$work"' EXIT
mkdir -p bench-results
report="bench-results/cache-$stamp.md"

# start_server NAME [ENV=VALUE...]: `senti serve` (default engine) on a free loopback port with the
# extra environment; returns once it answers.
start_server() {
  local name=$1 port
  shift
  port=$(free_port)
  env RUST_LOG=warn "$@" target/release/senti serve --listen "127.0.0.1:$port" 2>"$work/senti-$name.log" &
  server_pid[$name]=$!
  server_url[$name]="http://127.0.0.1:$port"
  wait_answer "${server_url[$name]}" "${server_pid[$name]}" "$work/senti-$name.log" "$BENCH ($name)"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

"${CARGO_CMD[@]}" build --release -p senti-node --bin senti -p senti-bench --bin senti-loadgen

{
  echo "# Result cache off and on: $stamp"
  echo
  echo "Commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates benches scripts || echo ' (with uncommitted changes)'),"
  echo "$(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo). Command:"
  echo "\`ROUNDS=$ROUNDS CONCURRENCIES=\"$CONCURRENCIES\" DURATION=$DURATION WARMUP=$WARMUP make bench-cache\`."
  echo "Load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other processes on the machine skew every figure)."
} >"$report"

# 1. The two traces, each on fresh servers (so B's cache starts empty).
for trace in "reviews:$REVIEWS_SHARE" "templated:$TEMPLATED_SHARE"; do
  name=${trace%%:*} share=${trace#*:}
  echo "$BENCH: trace $name, ${share} of requests repeating an earlier text" >&2
  ROUNDS=$ROUNDS CONCURRENCIES=$CONCURRENCIES DURATION=$DURATION WARMUP=$WARMUP CARGO="${CARGO:-cargo}" \
    LOADGEN_ARGS="${PAYLOAD[*]} --repeat-share $share" A="SENTI__CACHE__MAX_BYTES=0" B="cache on (default 64 MiB)" \
    bash scripts/bench-ab.sh >"$work/ab-$name.md" 2>"$work/ab-$name.log" || { cat "$work/ab-$name.log" >&2; exit 1; }
  result=$(sed -n 's/^bench-ab: results in //p' "$work/ab-$name.log")
  wrapped=$(jq '[.runs[] | select(.payload_wrapped)] | length' "$result")
  {
    echo
    echo "## Trace \"$name\": $share of requests repeat an earlier text ($result)"
    echo
    sed 1,2d "$work/ab-$name.md"
    if [[ $wrapped != 0 ]]; then
      echo
      echo "Warning: $wrapped runs reached past the payload's texts, so some meant-to-be-new texts repeated."
    fi
  } >>"$report"
done

# 2. Hit latency at concurrency 1.
echo "$BENCH: hit latency" >&2
start_server hits
for kind in miss hit; do
  share=0
  [[ $kind == hit ]] && share=1 # one text over and over: cached since the miss run sent it first
  target/release/senti-loadgen --url "${server_url[hits]}" --route analyze --concurrency 1 \
    --duration "$DURATION" --warmup "$WARMUP" "${PAYLOAD[@]}" --repeat-share "$share" \
    --json "$work/latency-$kind.json" >&2
done
stop_all server_pid
{
  echo
  echo "## A hit's latency: POST /analyze at concurrency 1, cache on, client time on loopback"
  echo
  echo "| answers | requests | hit rate | p50 ms | p90 ms | p99 ms |"
  echo "|---|---:|---:|---:|---:|---:|"
  for kind in miss hit; do
    jq -r --arg kind "$kind" 'def f2: . * 100 | round / 100;
      "| \(if $kind == "hit" then "one text repeated" else "distinct texts" end) | \(.ok) | \(.cache_hit_rate * 1000 | round / 10)% | \(.latency_ms.p50 | f2) | \(.latency_ms.p90 | f2) | \(.latency_ms.p99 | f2) |"' \
      "$work/latency-$kind.json"
  done
} >>"$report"

# 3. Memory bound under distinct texts, beside a server without a cache.
{
  echo
  echo "## Memory under $UNIQUE distinct texts (concurrency 4)"
  echo
  echo "| server | senti_cache_max_bytes | max senti_cache_bytes seen (samples) | entries at the end | evictions | VmRSS before MiB | after MiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
} >>"$report"
for setting in "bounded:$CACHE_BOUND" "off:0"; do
  name=${setting%%:*} bound=${setting#*:}
  echo "$BENCH: memory, cache.max_bytes = $bound" >&2
  start_server "$name" "SENTI__CACHE__MAX_BYTES=$bound"
  url=${server_url[$name]} pid=${server_pid[$name]}
  rss_before=$(rss_kib "$pid")
  target/release/senti-loadgen --url "$url" --route analyze --concurrency 4 --warmup 0 --duration 600 \
    --max-requests "$UNIQUE" "${PAYLOAD[@]}" --repeat-share 0 --json "$work/memory-$name.json" >&2 &
  loadgen_pid=$!
  max_seen=0 samples=0
  while kill -0 "$loadgen_pid" 2>/dev/null; do
    bytes=$(metric "$url" senti_cache_bytes)
    samples=$((samples + 1))
    ((bytes > max_seen)) && max_seen=$bytes
    sleep 0.5
  done
  wait "$loadgen_pid"
  bytes=$(metric "$url" senti_cache_bytes)
  ((bytes > max_seen)) && max_seen=$bytes
  rss_after=$(rss_kib "$pid")
  max_bytes=$(metric "$url" senti_cache_max_bytes)
  entries=$(metric "$url" senti_cache_entries)
  evictions=$(metric "$url" senti_cache_evictions_total)
  stop_all server_pid
  printf '| cache.max_bytes = %s | %s | %s (%s) | %s | %s | %d | %d |\n' "$bound" "$max_bytes" "$max_seen" \
    "$((samples + 1))" "$entries" "${evictions:-0}" "$((rss_before / 1024))" "$((rss_after / 1024))" >>"$report"
  if ((max_seen > bound)); then
    echo "$BENCH: senti_cache_bytes reached $max_seen, over the bound $bound" >&2
    cat "$report"
    exit 1
  fi
done

echo >>"$report"
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)." >>"$report"
cat "$report"
echo "$BENCH: report in $report" >&2
