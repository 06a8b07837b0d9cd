#!/usr/bin/env bash
# A/B of two senti settings on the same model and cores (`make bench-ab`): the "before and after"
# of a change, measured side by side in one run. Either two settings of one binary:
#
#   A="SENTI__ADVANCED__BATCHES_AHEAD=1" B="SENTI__ADVANCED__BATCHES_AHEAD=2" make bench-ab
#
# or two binaries (A_BIN, B_BIN; e.g. a copy of target/release/senti built before a change), with
# A and B then naming what differs (any words; NAME=value words are also set in the environment):
#
#   A_BIN=/tmp/senti-before A="before" B="after" make bench-ab
#
# Starts `senti serve` twice on free loopback ports, once with the variables of A and once with
# those of B (space-separated NAME=value words; other words are labels), waits for an answer, then for each round and each
# load runs senti-loadgen against A, then B (alternating, so a slow minute on a
# shared machine hits both). Each side's runs continue one text sequence (--start-at), so a side
# is never sent a run's texts again in the next run unless the payload runs out. Prints per load
# the median over rounds of texts/s, p50 and p99 of each side and B ÷ A, the share of answers its
# result cache gave (x-senti-cache: hit, over all rounds) and the errors of all rounds by kind,
# then each side's senti_cache_lookups_total (warm-ups included), and writes every run to
# bench-results/ab-<UTC time>.json.
#
# LOADGEN_ARGS are passed to every senti-loadgen run, e.g. a trace with repeats for the result
# cache (`make bench-cache` does this):
#
#   LOADGEN_ARGS="--repeat-share 0.3" A="SENTI__CACHE__MAX_BYTES=0" B="cache on" make bench-ab
#
# With RATES set (requests/s, e.g. RATES=54) the loads are open loop at those arrival rates
# instead (up to OPEN_CONNECTIONS, 256, in flight): how each side behaves in overload, e.g.
#
#   MODEL=models/bench/structbert-base-random VARIANT=fp32 RATES=54 ROUNDS=2 DURATION=20 WARMUP=3 \
#     A="SENTI__ADVANCED__ADMISSION_HEADROOM=1.0" B="SENTI__ADVANCED__ADMISSION_HEADROOM=0.8" make bench-ab
#
# Either side may instead be the ONNX Runtime peer of benches/peers (Flask + gunicorn + nginx, on
# the same model file; POST /analyze only), to settle a close comparison from `make bench` with
# rounds instead of one run:
#
#   MODEL=models/bench/structbert-base-random VARIANT=fp32 A_PEER=onnx A="onnx peer" B="senti" \
#     CONCURRENCIES=5 ROUNDS=3 DURATION=20 make bench-ab
#
# Environment: ROUNDS (3), CONCURRENCIES ("1 5 20"), RATES (none), ROUTE (analyze|classify),
# TEXTS (texts per request, classify only; 1), DURATION (10) and WARMUP (2) seconds per run,
# MODEL=dir and VARIANT=fp32|int8, A_PEER / B_PEER (onnx), PEER_INSTANCES (nproc), LOADGEN_ARGS, CARGO. Loopback only; about ROUNDS x loads x 2 x (DURATION +
# WARMUP).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${A:?set A to the first setting, e.g. A=SENTI__ADVANCED__BATCHES_AHEAD=1}"
: "${B:?set B to the second setting, e.g. B=SENTI__ADVANCED__BATCHES_AHEAD=2}"
ROUNDS=${ROUNDS:-3}
# Each load is "c<N>" (closed loop, N in flight) or "r<R>" (open loop, R requests/s).
if [[ -n ${RATES:-} ]]; then
  read -r -a LOADS <<<"$(printf 'r%s ' $RATES)"
else
  read -r -a LOADS <<<"$(printf 'c%s ' ${CONCURRENCIES:-1 5 20})"
fi
ROUTE=${ROUTE:-analyze}
TEXTS=${TEXTS:-1}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
MODEL_ARGS=()
[[ -n ${MODEL:-} ]] && MODEL_ARGS+=(--model "$MODEL")
[[ -n ${VARIANT:-} ]] && MODEL_ARGS+=(--variant "$VARIANT")
read -r -a CARGO_CMD <<<"${CARGO:-cargo}"
read -r -a LOADGEN_EXTRA <<<"${LOADGEN_ARGS:-}"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
declare -A server_pid server_url peer_dir
# Where each side's next run continues its text sequence.
declare -A next_start=([A]=0 [B]=0)
stop_peers() {
  local dir
  for dir in "${peer_dir[@]}"; do bash benches/peers/peers.sh stop "$dir" || true; done
  peer_dir=()
}
trap 'stop_all server_pid; stop_peers; rm -rf "$work"' EXIT

"${CARGO_CMD[@]}" build --release -p senti-node --bin senti -p senti-bench --bin senti-loadgen

for side in A B; do
  peer_var="${side}_PEER"
  if [[ -n ${!peer_var:-} ]]; then
    [[ ${!peer_var} == onnx && $ROUTE == analyze ]] || { echo "bench-ab: ${peer_var} must be onnx, with ROUTE=analyze" >&2; exit 2; }
    bash benches/peers/peers.sh install
    port=$(free_port)
    peer_dir[$side]="$work/peer-$side"
    mkdir -p "${peer_dir[$side]}"
    bash benches/peers/peers.sh start "${peer_dir[$side]}" onnx "${MODEL:-models/senti-zh-small}" "${VARIANT:-int8}" \
      "${PEER_INSTANCES:-$(nproc)}" "$port"
    server_url[$side]="http://127.0.0.1:$port"
    continue
  fi
  read -r -a words <<<"${!side}"
  vars=()
  for word in "${words[@]}"; do
    [[ $word == *=* ]] && vars+=("$word")
  done
  bin_var="${side}_BIN"
  bin=${!bin_var:-target/release/senti}
  port=$(free_port)
  env "${vars[@]}" RUST_LOG="warn" "$bin" serve --listen "127.0.0.1:$port" "${MODEL_ARGS[@]}" \
    2>"$work/senti-$side.log" &
  server_pid[$side]=$!
  server_url[$side]="http://127.0.0.1:$port"
done
for side in "${!server_pid[@]}"; do
  wait_answer "${server_url[$side]}" "${server_pid[$side]}" "$work/senti-$side.log" "bench-ab ($side)"
done

texts_args=()
[[ $ROUTE == classify ]] && texts_args=(--texts-per-request "$TEXTS")
for round in $(seq "$ROUNDS"); do
  for load in "${LOADS[@]}"; do
    case $load in
      c*) load_args=(--concurrency "${load#c}") ;;
      r*) load_args=(--mode open --rate "${load#r}" --concurrency "${OPEN_CONNECTIONS:-256}") ;;
    esac
    for side in A B; do
      echo "bench-ab: round $round, load $load, $side (${!side})" >&2
      run="$work/run-$side-$load-r$round.json"
      # An overloaded side may answer nothing in time: senti-loadgen then exits non-zero, but
      # its JSON is the result.
      target/release/senti-loadgen --url "${server_url[$side]}" --route "$ROUTE" "${texts_args[@]}" \
        "${load_args[@]}" --duration "$DURATION" --warmup "$WARMUP" --start-at "${next_start[$side]}" \
        "${LOADGEN_EXTRA[@]}" --json "$run" >/dev/null || [[ -s $run ]]
      next_start[$side]=$(jq .next_start "$run")
      jq --arg side "$side" --argjson round "$round" --arg load "$load" '. + {side: $side, round: $round, load: $load}' \
        "$run" >"$work/tagged-$side-$load-r$round.json"
    done
  done
done
for side in A B; do
  if [[ -n ${server_pid[$side]:-} ]]; then
    cache_lookups "${server_url[$side]}" >"$work/lookups-$side.json"
  else
    echo '{}' >"$work/lookups-$side.json"
  fi
done
stop_all server_pid
stop_peers

mkdir -p bench-results
result="bench-results/ab-$stamp.json"
jq -s --arg a "$A" --arg b "$B" --arg date "$stamp" --arg model "${MODEL:-embedded}" --arg variant "${VARIANT:-default}" \
  --arg loadgen_args "${LOADGEN_ARGS:-}" --slurpfile lookups_a "$work/lookups-A.json" --slurpfile lookups_b "$work/lookups-B.json" '
  def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
  {date: $date, a: $a, b: $b, model: $model, variant: $variant, loadgen_args: $loadgen_args, runs: .,
   server_cache_lookups: {a: $lookups_a[0], b: $lookups_b[0]},
   summary: (group_by(.load) | map(
     . as $runs
     | def side(s): [$runs[] | select(.side == s)]
         | {texts_per_s: (map(.texts_per_s) | median), p50_ms: (map(.latency_ms.p50) | median),
            p99_ms: (map(.latency_ms.p99) | median),
            cache_hit_rate: ([.[].cache | to_entries[]] as $e | ($e | map(.value) | add // 0) as $n
              | if $n == 0 then null else ([$e[] | select(.key == "hit") | .value] | add // 0) / $n end),
            errors: (reduce (.[].errors | to_entries[]) as $e ({}; .[$e.key] += $e.value))};
     {load: .[0].load, a: side("A"), b: side("B")}
     | . + {texts_per_s_b_over_a: (.b.texts_per_s / .a.texts_per_s)}))}' \
  "$work"/tagged-*.json >"$result"

jq -r '
  def f2: . * 100 | round / 100 | tostring;
  "## senti A/B \(.date): model \(.model) (\(.variant)), \(.runs[0].route), medians of \(.runs | map(.round) | max) rounds",
  "",
  "A: `\(.a)`  ",
  "B: `\(.b)`" + (if .loadgen_args == "" then "" else "  \nsenti-loadgen: `\(.loadgen_args)`" end),
  "",
  def kinds: if length == 0 then "0" else to_entries | map("\(.key | sub("status_"; "")): \(.value)") | join(", ") end;
  def load: if startswith("c") then "c=\(.[1:])" else "\(.[1:])/s open" end;
  def pct: if . == null then "-" else . * 1000 | round / 10 | tostring + "%" end;
  def lookups: if length == 0 then "-" else to_entries | map("\(.key) \(.value)") | join(", ") end;
  "| load | A texts/s | B texts/s | B ÷ A | A p50 ms | B p50 ms | A p99 ms | B p99 ms | cache hits A / B | errors A / B |",
  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  (.summary[] | "| \(.load | load) | \(.a.texts_per_s | round) | \(.b.texts_per_s | round) | \(.texts_per_s_b_over_a | f2) | \(.a.p50_ms | f2) | \(.b.p50_ms | f2) | \(.a.p99_ms | f2) | \(.b.p99_ms | f2) | \(.a.cache_hit_rate | pct) / \(.b.cache_hit_rate | pct) | \(.a.errors | kinds) / \(.b.errors | kinds) |"),
  "",
  "senti_cache_lookups_total, warm-ups included: A \(.server_cache_lookups.a | lookups); B \(.server_cache_lookups.b | lookups)"
' "$result"
echo "bench-ab: results in $result" >&2
