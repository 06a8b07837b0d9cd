#!/usr/bin/env bash
# engine.admission_headroom A/B in overload: senti on the StructBERT-base-sized model (fp32, `make
# bench-model`) under an open-loop arrival rate about twice what it serves, once per headroom and
# round, alternating, each on a fresh process. Prints answers, answers/s, errors by kind and the
# p99 of answers. Loopback only; about ROUNDS x 2 x (DURATION + 10) seconds.
#
# Environment: HEADROOMS ("1.0 0.8"), ROUNDS (2), RATE (54 requests/s: 2 x the ~27/s the
# base model serves in fp32 on 2 cores), DURATION (20 s), BIN (target/release; needs senti and
# senti-loadgen: `cargo build --release -p senti-node --bin senti -p senti-bench --bin senti-loadgen`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
MODEL=${MODEL:-models/bench/structbert-base-random}
RATE=${RATE:-54} DURATION=${DURATION:-20} ROUNDS=${ROUNDS:-2}
read -r -a HEADROOMS <<<"${HEADROOMS:-1.0 0.8}"
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
[[ -f $MODEL/model.toml ]] || { echo "no $MODEL: run make bench-model" >&2; exit 2; }
out=$(mktemp -d)
for round in $(seq "$ROUNDS"); do
  for h in "${HEADROOMS[@]}"; do
    port=$(free_port)
    SENTI__ENGINE__ADMISSION_HEADROOM=$h RUST_LOG=warn "$BIN/senti" serve --listen "127.0.0.1:$port" \
      --model "$MODEL" --variant fp32 2>"$out/senti.log" &
    pid=$!
    # Not /readyz: the random model fails the known-answer check by design; wait for an answer.
    for _ in $(seq 240); do
      curl -s -o /dev/null -X POST -H 'content-type: application/json' -d '{"text":"好"}' \
        "http://127.0.0.1:$port/analyze" && break
      sleep 0.5
    done
    "$BIN/senti-loadgen" --url "http://127.0.0.1:$port" --route analyze --mode open --rate "$RATE" \
      --concurrency 256 --duration "$DURATION" --warmup 3 --timeout-ms 30000 --json "$out/$h-$round.json" \
      >/dev/null 2>&1 || true
    kill -TERM "$pid"
    wait "$pid" || true
    echo "round $round, headroom $h: $(jq -c '{ok, ok_qps, errors, p99_ms: .latency_ms.p99}' "$out/$h-$round.json")"
  done
done
rm -rf "$out"
