#!/usr/bin/env bash
# Single-node benchmark (`make bench-node`): raw ONNX Runtime throughput and senti's HTTP
# throughput and latency, side by side in one run, on the same model file and the same cores.
#
#  1. senti-bench-raw: texts/s for batch 1/8/32/64 x 1/2 intra-op threads, and 2 sessions x 1
#     thread in parallel (median of 3 interleaved rounds); the median batch-1 inference time.
#  2. Start `senti serve` twice on free loopback ports, once per engine shape: 1x2
#     (engine.actors=1, threads_per_actor=2) and 2x1; wait for /readyz. Then, alternating between
#     the two, senti-loadgen closed loop on /analyze at concurrency 1, 5, 10, 20, and saturation
#     runs on /v1/classify (1 text per request at concurrency 32, 8 texts at concurrency 8 and 32,
#     32 texts at concurrency 4;
#     the best counts). Stop both (SIGTERM).
#  3. Write bench-results/node-<UTC time>.json and print a markdown report with the ratios
#     against the targets (HTTP saturation >= 95% of the best raw rate; p50 at concurrency 1
#     within 1 ms of one raw inference) and 1x2 against 2x1.
#
# About 7 minutes. Environment: QUICK=1 shortens every run (smoke test, about a minute);
# DURATION / WARMUP (seconds per HTTP run), RAW_SECONDS; MODEL=dir and VARIANT=fp32|int8 pick
# the model (default: the embedded one); CARGO (e.g. "nice -n 10 cargo"). Other SENTI__* variables
# reach senti unchanged (e.g. SENTI__ADVANCED__MAX_BATCH_SIZE=1) and are recorded. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${QUICK:-0} == 1 ]]; then
  DURATION=${DURATION:-2} WARMUP=${WARMUP:-0.5} RAW_SECONDS=${RAW_SECONDS:-1} RAW_WARMUP=0.3
else
  DURATION=${DURATION:-15} WARMUP=${WARMUP:-3} RAW_SECONDS=${RAW_SECONDS:-5} RAW_WARMUP=1
fi
CONCURRENCIES=(1 5 10 20)
# Saturation runs on /v1/classify: texts per request x concurrency. The best of them is senti's
# saturation throughput: deep queues cost more than they buy (c=8 x 8 texts keeps 64 texts waiting).
SATURATION_RUNS=(1x32 8x8 8x32 32x4)
SHAPES=(1x2 2x1)
MODEL_ARGS=()
[[ -n ${MODEL:-} ]] && MODEL_ARGS+=(--model "$MODEL")
[[ -n ${VARIANT:-} ]] && MODEL_ARGS+=(--variant "$VARIANT")
# Word splitting wanted: CARGO may be a command with arguments ("nice -n 10 cargo").
read -r -a CARGO_CMD <<<"${CARGO:-cargo}"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
declare -A server_pid server_url

stop_servers() { stop_all server_pid; }
trap 'stop_servers; rm -rf "$work"' EXIT

# start_server SHAPE: `senti serve` with engine.actors x engine.threads_per_actor = SHAPE (e.g.
# 2x1) on a free loopback port; returns once /readyz answers 200.
start_server() {
  local shape=$1 port log="$work/senti-$1.log" url pid
  port=$(free_port)
  url="http://127.0.0.1:$port"
  SENTI__ENGINE__ACTORS=${shape%x*} SENTI__ENGINE__THREADS_PER_ACTOR=${shape#*x} RUST_LOG="info,ort=warn" \
    target/release/senti serve --listen "127.0.0.1:$port" "${MODEL_ARGS[@]}" 2>"$log" &
  pid=$!
  server_pid[$shape]=$pid
  server_url[$shape]=$url
  wait_answer "$url" "$pid" "$log" "bench-node: senti ($shape)"
}

# server_cpu_ticks PID: "MODEL TOTAL" CPU ticks (1/100 s, user + system) of senti's model
# threads (senti-model-*) and of the whole process so far.
server_cpu_ticks() {
  local model=0 f line fields
  for f in /proc/"$1"/task/*/stat; do
    line=$(<"$f") 2>/dev/null || continue # the thread may have just exited
    [[ $line == *"(senti-model-"* ]] || continue
    read -r -a fields <<<"${line##*) }"
    model=$((model + fields[11] + fields[12]))
  done
  echo "$model $(cpu_ticks "$1")"
}

# loadgen SHAPE OUT ARGS...: one closed-loop run against that shape's server, JSON into OUT with
# the CPU cores kept busy during the run (warm-up included) by senti's model threads, the rest
# of senti, the load generator, and every other process (on a shared machine, a run where that
# last figure is not near 0 was disturbed); progress on stderr.
loadgen() {
  local shape=$1 out=$2 before after machine_before machine_after t0 t1
  shift 2
  before=$(server_cpu_ticks "${server_pid[$shape]}")
  machine_before=$(machine_busy_ticks)
  t0=$(date +%s.%N)
  target/release/senti-loadgen --url "${server_url[$shape]}" --mode closed --warmup "$WARMUP" \
    --duration "$DURATION" --json "$out.load" "$@" >&2
  t1=$(date +%s.%N)
  machine_after=$(machine_busy_ticks)
  after=$(server_cpu_ticks "${server_pid[$shape]}")
  jq --argjson b "[${before/ /,}]" --argjson a "[${after/ /,}]" --argjson t0 "$t0" --argjson t1 "$t1" \
    --argjson mb "$machine_before" --argjson ma "$machine_after" '
    ($t1 - $t0) as $wall
    | (($a[1] - $b[1]) / 100 / $wall) as $senti
    | ((.loadgen_cpu_s // 0) / $wall) as $loadgen
    | . + {cpu_cores: {
        wall_s: $wall,
        senti_model_threads: (($a[0] - $b[0]) / 100 / $wall),
        senti_other: ($senti - ($a[0] - $b[0]) / 100 / $wall),
        loadgen: (if .loadgen_cpu_s == null then null else $loadgen end),
        other_processes: (($ma - $mb) / 100 / $wall - $senti - $loadgen)
      }}' "$out.load" >"$out"
  rm -f "$out.load"
}

echo "bench-node: building senti, senti-loadgen and senti-bench-raw (release)" >&2
"${CARGO_CMD[@]}" build --release -p senti-node --bin senti -p senti-bench --bin senti-loadgen --bin senti-bench-raw

loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench-node: raw ONNX Runtime, ${RAW_SECONDS} s per configuration" >&2
target/release/senti-bench-raw "${MODEL_ARGS[@]}" --seconds "$RAW_SECONDS" --warmup "$RAW_WARMUP" \
  --json "$work/raw.json" >&2

# Both shapes are served at once (an idle senti costs nothing) and measured in alternation, run
# by run, so that a slow minute on a shared machine hits both shapes rather than one.
for shape in "${SHAPES[@]}"; do
  echo "bench-node: starting senti with engine.actors=${shape%x*}, engine.threads_per_actor=${shape#*x}" >&2
  start_server "$shape"
done
for c in "${CONCURRENCIES[@]}"; do
  for shape in "${SHAPES[@]}"; do
    loadgen "$shape" "$work/$shape-analyze-c$c.json" --route analyze --concurrency "$c"
  done
done
for run in "${SATURATION_RUNS[@]}"; do
  for shape in "${SHAPES[@]}"; do
    loadgen "$shape" "$work/$shape-classify-n${run%x*}-c${run#*x}.json" --route classify \
      --texts-per-request "${run%x*}" --concurrency "${run#*x}"
  done
done
stop_servers
for shape in "${SHAPES[@]}"; do
  jq -s --argjson actors "${shape%x*}" --argjson threads "${shape#*x}" '{
      actors: $actors, threads_per_actor: $threads,
      latency: [.[] | select(.route == "analyze")] | sort_by(.concurrency),
      saturation: [.[] | select(.route == "classify")] | sort_by(.texts_per_request, .concurrency)
    }' "$work/$shape"-*.json >"$work/http-$shape.json"
done
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p bench-results
result="bench-results/node-$stamp.json"
jq -n \
  --slurpfile raw "$work/raw.json" \
  --slurpfile h12 "$work/http-1x2.json" \
  --slurpfile h21 "$work/http-2x1.json" \
  --arg date "$stamp" \
  --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  --argjson nproc "$(nproc)" \
  --arg before "$loadavg_before" --arg after "$loadavg_after" \
  --argjson quick "$([[ ${QUICK:-0} == 1 ]] && echo true || echo false)" \
  --argjson duration "$DURATION" --argjson warmup "$WARMUP" --argjson raw_seconds "$RAW_SECONDS" \
  --arg sat_runs "${SATURATION_RUNS[*]}" '
  $raw[0] as $r
  | def shape_summary(h; single):
      (h.saturation | max_by(.texts_per_s)) as $sat
      | ([h.latency[], h.saturation[]] | max_by(.texts_per_s)) as $peak
      | (h.latency[] | select(.concurrency == 1)) as $c1
      | ($r.results | map(select(.runners == h.actors and .threads == h.threads_per_actor)) | max_by(.texts_per_s)) as $same
      | {
          saturation_texts_per_s: $sat.texts_per_s,
          saturation_run: "\($sat.route) c=\($sat.concurrency) x\($sat.texts_per_request)",
          throughput_ratio: ($sat.texts_per_s / $r.best.texts_per_s),
          peak_texts_per_s: $peak.texts_per_s,
          peak_run: "\($peak.route) c=\($peak.concurrency) x\($peak.texts_per_request)",
          peak_ratio: ($peak.texts_per_s / $r.best.texts_per_s),
          raw_same_shape_texts_per_s: $same.texts_per_s,
          raw_same_shape_batch: $same.batch,
          throughput_ratio_same_shape: ($sat.texts_per_s / $same.texts_per_s),
          p50_c1_ms: $c1.latency_ms.p50,
          raw_single_inference_ms: single,
          p50_c1_minus_raw_ms: ($c1.latency_ms.p50 - single),
          meets_throughput_target: ($sat.texts_per_s >= 0.95 * $r.best.texts_per_s),
          meets_latency_target: ($c1.latency_ms.p50 - single <= 1.0)
        };
  {
    date: $date, quick: $quick,
    machine: {nproc: $nproc, cpu: $cpu, loadavg_before: $before, loadavg_after: $after},
    settings: {http_duration_s: $duration, http_warmup_s: $warmup, raw_seconds: $raw_seconds,
               saturation_runs: $sat_runs,
               senti_env: (env | with_entries(select((.key | startswith("SENTI__")) and (.key | contains("AUTH") | not))))},
    raw: $r,
    http: {"1x2": $h12[0], "2x1": $h21[0]},
    summary: ({
      raw_best_texts_per_s: $r.best.texts_per_s,
      raw_best: "\($r.best.shape) batch \($r.best.batch)",
      "1x2": shape_summary($h12[0]; $r.single_inference_ms["2"]),
      "2x1": shape_summary($h21[0]; $r.single_inference_ms["1"])
    } | . + {
      saturation_1x2_over_2x1: (.["1x2"].saturation_texts_per_s / .["2x1"].saturation_texts_per_s),
      p50_c1_1x2_minus_2x1_ms: (.["1x2"].p50_c1_ms - .["2x1"].p50_c1_ms)
    })
  }' >"$result"

# The report, from the JSON just written.
jq -r '
  def f1: . * 10 | round / 10 | tostring;
  def f2: . * 100 | round / 100 | if . == 0 then 0 else . end | tostring; # no "-0"
  def f0: round | tostring;
  def errs: if (.errors | length) == 0 then "0" else (.errors | to_entries | map("\(.key) \(.value)") | join(", ")) end;
  .summary as $s
  | "## senti single-node benchmark \(.date)\(if .quick then " (QUICK smoke run: figures not meaningful)" else "" end)",
    "",
    "\(.machine.cpu), nproc \(.machine.nproc), load average \(.machine.loadavg_before) before, \(.machine.loadavg_after) after.",
    "Model \(.raw.model.name) \(.raw.model.version) (\(.raw.model.variant), \(.raw.model.source)); \(.raw.texts) review texts, \(.raw.mean_tokens | f1) tokens on average.",
    "HTTP runs: \(.settings.http_duration_s) s each after \(.settings.http_warmup_s) s warm-up; raw: \(.settings.raw_seconds) s per configuration.",
    (.settings.senti_env | to_entries | select(length > 0) | "senti environment: " + (map("\(.key)=\(.value)") | join(" ")) + "."),
    "",
    "### Raw ONNX Runtime (senti-bench-raw)",
    "",
    "| shape | batch | texts/s (median round) | rounds | batch p50 ms | batch p99 ms | padding efficiency |",
    "|---|---:|---:|---|---:|---:|---:|",
    (.raw.results[] | "| \(.shape) | \(.batch) | \(.texts_per_s | f0) | \(.rounds_texts_per_s | map(f0) | join(", ")) | \(.batch_ms.p50 | f2) | \(.batch_ms.p99 | f2) | \(.padding_efficiency | f2) |"),
    "",
    "Tokenization alone (one thread): \(.raw.tokenize_texts_per_s | f0) texts/s (the tokenizers crate itself, same ids: \(.raw.tokenize_tokenizers_texts_per_s // 0 | f0)).",
    "",
    "### senti over HTTP (senti-loadgen, closed loop)",
    "",
    "| shape | route | concurrency | texts/request | requests/s | texts/s | p50 ms | p90 ms | p99 ms | errors | cores: model / rest of senti / loadgen / other processes |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    (.http | to_entries[] | .key as $shape | .value | (.latency[], .saturation[])
      | "| \($shape) | \(.route) | \(.concurrency) | \(.texts_per_request) | \(.ok_qps | f0) | \(.texts_per_s | f0) | \(.latency_ms.p50 | f2) | \(.latency_ms.p90 | f2) | \(.latency_ms.p99 | f2) | \(errs) | \(.cpu_cores.senti_model_threads | f2) / \(.cpu_cores.senti_other | f2) / \(.cpu_cores.loadgen // 0 | f2) / \(.cpu_cores.other_processes | f2) |"),
    "",
    "### Against the targets",
    "",
    "| | 1x2 | 2x1 | target |",
    "|---|---:|---:|---|",
    "| HTTP saturation texts/s (best of classify \(.settings.saturation_runs), texts x concurrency) | \($s["1x2"].saturation_texts_per_s | f0) (\($s["1x2"].saturation_run)) | \($s["2x1"].saturation_texts_per_s | f0) (\($s["2x1"].saturation_run)) | |",
    "| saturation ÷ best raw texts/s (\($s.raw_best_texts_per_s | f0), \($s.raw_best)) | \($s["1x2"].throughput_ratio | f2) | \($s["2x1"].throughput_ratio | f2) | >= 0.95 |",
    "| peak HTTP texts/s, any concurrency | \($s["1x2"].peak_texts_per_s | f0) (\($s["1x2"].peak_run)) | \($s["2x1"].peak_texts_per_s | f0) (\($s["2x1"].peak_run)) | |",
    "| peak ÷ best raw texts/s | \($s["1x2"].peak_ratio | f2) | \($s["2x1"].peak_ratio | f2) | |",
    "| saturation ÷ raw texts/s of the same shape | \($s["1x2"].throughput_ratio_same_shape | f2) (raw \($s["1x2"].raw_same_shape_texts_per_s | f0)) | \($s["2x1"].throughput_ratio_same_shape | f2) (raw \($s["2x1"].raw_same_shape_texts_per_s | f0)) | |",
    "| p50 at concurrency 1, ms | \($s["1x2"].p50_c1_ms | f2) | \($s["2x1"].p50_c1_ms | f2) | |",
    "| one raw inference (batch 1, same threads), ms | \($s["1x2"].raw_single_inference_ms | f2) | \($s["2x1"].raw_single_inference_ms | f2) | |",
    "| p50 at c=1 minus raw, ms | \($s["1x2"].p50_c1_minus_raw_ms | f2) | \($s["2x1"].p50_c1_minus_raw_ms | f2) | <= 1 |",
    "",
    "1x2 vs 2x1: saturation \($s.saturation_1x2_over_2x1 | f2)x, p50 at c=1 \($s.p50_c1_1x2_minus_2x1_ms | f2) ms apart (1x2 minus 2x1)."
' "$result"
echo "bench-node: results in $result" >&2
