#!/usr/bin/env bash
# `make bench`: senti against the recipe it replaces (Flask + gunicorn -w 1 --preload instances
# behind nginx least_conn; benches/peers/), and against the hardware, side by side in one run.
#
#  0. Installs what the peers need (nginx from Debian, .cache/venv-peers from
#     benches/peers/requirements.txt) and the StructBERT-base-sized random model (`make
#     bench-model`) if missing; builds senti and the benchmark tools (release).
#  1. The machine: numpy's float32 matrix-multiply peak on 1 core and on all cores
#     (benches/peers/flops.py peak).
#  2. Per model (the small default model, then the StructBERT-base-sized one):
#     - raw ONNX Runtime (senti-bench-raw) on each variant: the ceiling, and the token count of
#       every payload text, from which benches/peers/flops.py computes the model's arithmetic per
#       text (multiply-adds of every MatMul, counted from the ONNX graph);
#     - accuracy of each variant (senti-bench-accuracy): what int8 costs;
#     - per system (senti, the ONNX Runtime peer on the same file, the recipe as published with
#       PyTorch on the base model): closed loop on POST /analyze at concurrency 1, 5, 10, 20
#       (the recipe's table) and 40; the highest open-loop arrival rate with p99 under 200 ms and no
#       errors (bisection); an overload run at twice the best closed-loop rate (what happens
#       beyond capacity: fast 429s, or slow timeouts).
#  3. benches/report.py writes the tables (report.md) and plots (*.svg) into
#     bench-results/bench-<UTC time>/ and prints the report.
#
# Both systems of a comparison run on the same cores, one at a time, started fresh and stopped
# (SIGTERM) after their runs. Loopback only. About 30 minutes (QUICK=1: a few minutes, figures not
# meaningful). Environment: DURATION / BASE_DURATION / WARMUP (seconds per load run, small and base
# model), CONCURRENCIES ("1 5 10 20 40"), PROBES (bisection steps), PEER_INSTANCES (2: one gunicorn per core), MODELS ("small
# base"), CARGO.
set -euo pipefail
cd "$(dirname "$0")/.."

# The base model answers about 25 texts/s in fp32 on 2 cores and review lengths vary tenfold, so
# its runs are longer: a 10 s window would hold too few texts for a stable mean.
if [[ ${QUICK:-0} == 1 ]]; then
  DURATION=${DURATION:-2} BASE_DURATION=${BASE_DURATION:-3} WARMUP=${WARMUP:-0.5} PROBES=${PROBES:-2}
  RAW_SECONDS=1 BASE_RAW_SECONDS=2 ACCURACY_LIMIT=50 PEAK_SECONDS=1
else
  DURATION=${DURATION:-10} BASE_DURATION=${BASE_DURATION:-20} WARMUP=${WARMUP:-3} PROBES=${PROBES:-4}
  RAW_SECONDS=6 BASE_RAW_SECONDS=15 ACCURACY_LIMIT= PEAK_SECONDS=3
fi
# Closed-loop concurrencies: the recipe's table (1 to 20) and twice its top (issue 15).
read -r -a CONCURRENCIES <<<"${CONCURRENCIES:-1 5 10 20 40}"
P99_LIMIT_MS=200
PEER_INSTANCES=${PEER_INSTANCES:-$(nproc)}
read -r -a MODELS <<<"${MODELS:-small base}"
read -r -a CARGO_CMD <<<"${CARGO:-cargo}"
PY=.cache/venv-peers/bin/python
SMALL_DIR=models/senti-zh-small
BASE_DIR=models/bench/structbert-base-random
BASE_CHECKPOINT=models/bench/structbert-base-random-checkpoint

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="bench-results/bench-$stamp"
mkdir -p "$out"
work=$(mktemp -d)
declare -A server_pid
peer_dir=""
cleanup() {
  stop_all server_pid
  [[ -n $peer_dir ]] && bash benches/peers/peers.sh stop "$peer_dir" || true
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "bench: $*" >&2; }

# 0. Prerequisites.
bash benches/peers/peers.sh install
if [[ ! -f $BASE_DIR/model.toml || ! -d $BASE_CHECKPOINT ]]; then
  log "writing the StructBERT-base-sized random model (make bench-model, a few minutes)"
  make bench-model
fi
log "building senti and the benchmark tools (release)"
"${CARGO_CMD[@]}" build --release -p senti-node --bin senti -p senti-bench --bin senti-loadgen \
  --bin senti-bench-raw --bin senti-bench-accuracy

# 1. The machine.
log "matrix-multiply peak"
"$PY" benches/peers/flops.py peak --seconds "$PEAK_SECONDS" >"$out/peak.json"
jq -n --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  --argjson nproc "$(nproc)" --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --arg flags "$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_vnni|avx_vnni|amx_int8)$' | tr '\n' ' ')" \
  --argjson quick "$([[ ${QUICK:-0} == 1 ]] && echo true || echo false)" \
  --argjson duration "$DURATION" --argjson base_duration "$BASE_DURATION" --argjson warmup "$WARMUP" --argjson instances "$PEER_INSTANCES" \
  --argjson p99_limit "$P99_LIMIT_MS" \
  '{date: $ARGS.named.date, cpu: $cpu, nproc: $nproc, loadavg_before: $loadavg, cpu_flags: $flags,
    quick: $quick, duration_s: $duration, base_duration_s: $base_duration, warmup_s: $warmup, peer_instances: $instances,
    p99_limit_ms: $p99_limit}' --arg date "$stamp" >"$out/machine.json"

# start_system KIND MODEL_DIR VARIANT -> sets url; KIND is senti, onnx or torch.
start_system() {
  local kind=$1 dir=$2 variant=$3 port
  port=$(free_port)
  url="http://127.0.0.1:$port"
  case $kind in
    senti)
      # The result cache off: the peers have none, and the load generator's texts repeat across
      # runs (and within a run of the fast default model), so with it senti would be measured
      # answering from memory (make bench-cache measures the cache).
      SENTI__CACHE__MAX_BYTES=0 RUST_LOG=warn target/release/senti serve --listen "127.0.0.1:$port" --model "$dir" --variant "$variant" \
        2>"$work/senti.log" &
      server_pid[senti]=$!
      # Not /readyz: the random base model fails senti's known-answer check by design (its labels
      # are noise), so /readyz stays 503 while /analyze serves; wait for an answer instead.
      wait_answer "$url" "${server_pid[senti]}" "$work/senti.log" "bench: senti ($dir $variant)"
      ;;
    onnx | torch)
      peer_dir="$work/peer-$kind"
      rm -rf "$peer_dir"
      mkdir -p "$peer_dir"
      bash benches/peers/peers.sh start "$peer_dir" "$kind" "$dir" "$variant" "$PEER_INSTANCES" "$port"
      ;;
  esac
}

stop_system() {
  stop_all server_pid
  if [[ -n $peer_dir ]]; then
    bash benches/peers/peers.sh stop "$peer_dir"
    peer_dir=""
  fi
}

# load OUT ARGS...: one senti-loadgen run on POST /analyze against $url, $run_seconds long.
load() {
  local file=$1
  shift
  target/release/senti-loadgen --url "$url" --route analyze --duration "$run_seconds" --warmup "$WARMUP" \
    --timeout-ms 30000 --json "$file" "$@" >/dev/null
}

# load_beyond OUT ARGS...: a load run that may get no answer at all (open-loop probes and the
# overload run: a system past its capacity may time out on every request, which is a result to
# report, not a failure of the benchmark). senti-loadgen exits non-zero then but has written OUT.
load_beyond() {
  local file=$1
  rm -f "$file"
  load "$@" || [[ -s $file ]] || { log "senti-loadgen wrote no $file"; return 1; }
}

# probe_rate DIR RATE: open loop at RATE; prints "pass" or "fail" (p99 under the limit, no errors).
probe_rate() {
  local dir=$1 rate=$2 file
  file="$dir/open-$(printf '%.3f' "$rate").json"
  load_beyond "$file" --mode open --rate "$rate" --concurrency 256
  jq -r --argjson limit "$P99_LIMIT_MS" \
    'if (.errors | length) == 0 and .ok > 0 and .latency_ms.p99 < $limit then "pass" else "fail" end' "$file"
}

# run_system MODEL SYSTEM KIND DIR VARIANT: every load run of one system into $out/MODEL/SYSTEM/.
run_system() {
  local model=$1 system=$2 kind=$3 dir=$4 variant=$5 d c best lo hi rate i verdict
  d="$out/$model/$system"
  mkdir -p "$d"
  log "$model / $system: starting ($kind, $dir, $variant)"
  start_system "$kind" "$dir" "$variant"
  jq -n --arg kind "$kind" --arg dir "$dir" --arg variant "$variant" --arg system "$system" \
    --argjson instances "$PEER_INSTANCES" '{system: $system, kind: $kind, model_dir: $dir, variant: $variant,
      peer_instances: (if $kind == "senti" then null else $instances end)}' >"$d/system.json"
  for c in "${CONCURRENCIES[@]}"; do
    log "$model / $system: closed loop, concurrency $c"
    load "$d/closed-c$c.json" --concurrency "$c"
  done
  best=$(jq -s 'map(.ok_qps) | max' "$d"/closed-c*.json)
  # Highest arrival rate with p99 under the limit: bisection between a rate that passed (lo)
  # and one that failed (hi), starting from 0 and 1.2 x the best closed-loop rate.
  lo=0
  hi=$(jq -n --argjson b "$best" '$b * 1.2')
  rate=$(jq -n --argjson b "$best" '$b * 0.7')
  for ((i = 0; i < PROBES; i++)); do
    verdict=$(probe_rate "$d" "$rate")
    log "$model / $system: open loop at $(printf '%.1f' "$rate")/s: $verdict"
    if [[ $verdict == pass ]]; then lo=$rate; else hi=$rate; fi
    rate=$(jq -n --argjson lo "$lo" --argjson hi "$hi" '($lo + $hi) / 2')
  done
  jq -n --argjson lo "$lo" --argjson hi "$hi" '{max_rate_under_limit: $lo, first_failing_rate: $hi}' >"$d/max-rate.json"
  rate=$(jq -n --argjson b "$best" '[$b * 2, 1] | max')
  log "$model / $system: overload, open loop at $(printf '%.1f' "$rate")/s (2 x best closed loop)"
  load_beyond "$d/overload.json" --mode open --rate "$rate" --concurrency 256
  stop_system
}

# 2. Per model.
for model in "${MODELS[@]}"; do
  case $model in
    small) dir=$SMALL_DIR variants=(int8 fp32) run_seconds=$DURATION raw_seconds=$RAW_SECONDS ;;
    base) dir=$BASE_DIR variants=(fp32 int8) run_seconds=$BASE_DURATION raw_seconds=$BASE_RAW_SECONDS ;;
    *) log "unknown model $model (small, base)" && exit 2 ;;
  esac
  mkdir -p "$out/$model"
  for variant in "${variants[@]}"; do
    log "$model: raw ONNX Runtime, $variant"
    # Batch 1 is the best on both models on this CPU; batch 8, with consecutive texts and with
    # near-equal lengths (--grouped, as senti's queue would group them), shows what batching buys.
    target/release/senti-bench-raw --model "$dir" --variant "$variant" --batches 1,8 --grouped \
      --seconds "$raw_seconds" --rounds 3 --json "$out/$model/raw-$variant.json" \
      --lengths-out "$out/$model/lengths.txt" >/dev/null
    file=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["variants"][sys.argv[2]])' \
      "$dir/model.toml" "$variant")
    "$PY" benches/peers/flops.py model "$dir/$file" \
      --lengths-from "$out/$model/lengths.txt" >"$out/$model/flops-$variant.json"
  done
  log "$model: accuracy of each variant"
  limit_args=()
  [[ -n $ACCURACY_LIMIT ]] && limit_args=(--limit "$ACCURACY_LIMIT")
  [[ $model == base && -z $ACCURACY_LIMIT ]] && limit_args=(--limit 500) # random weights: agreement only
  target/release/senti-bench-accuracy --model "$dir" "${limit_args[@]}" --json "$out/$model/accuracy.json" >/dev/null

  # The comparison: the file senti serves by default against the ONNX Runtime peer on that same
  # file; on the base model also fp32 against fp32 and the recipe as published (PyTorch).
  case $model in
    small)
      run_system small senti-int8 senti "$dir" int8
      run_system small onnx-peer-int8 onnx "$dir" int8
      ;;
    base)
      run_system base senti-fp32 senti "$dir" fp32
      run_system base onnx-peer-fp32 onnx "$dir" fp32
      run_system base senti-int8 senti "$dir" int8
      run_system base torch-recipe torch "$BASE_CHECKPOINT" fp32
      ;;
  esac
done

# 3. The report.
jq --arg after "$(cut -d' ' -f1-3 /proc/loadavg)" '. + {loadavg_after: $after}' "$out/machine.json" >"$work/m.json"
mv "$work/m.json" "$out/machine.json"
"$PY" benches/report.py "$out"
log "results in $out (report.md, *.svg)"
