# Shell helpers shared by the benchmark scripts (sourced, not run): stopping started servers,
# free loopback ports, CPU tick counters from /proc, /metrics values (routing counters among
# them), and pinned one-actor senti nodes.

# stop_all ARRAY: SIGTERM every pid in the associative array named ARRAY, wait up to 30 s for
# each, then SIGKILL what is left, and empty the array.
stop_all() {
  local -n pids=$1
  local key pid
  for key in "${!pids[@]}"; do
    kill -TERM "${pids[$key]}" 2>/dev/null || true
  done
  for key in "${!pids[@]}"; do
    pid=${pids[$key]}
    for _ in $(seq 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "pids[$key]"
  done
}

# free_port: a port on 127.0.0.1 that TCP and UDP can both bind now, drawn at random below the
# kernel's ephemeral range (from 10000): a port from bind(0), released for a node to bind, can be
# taken in between as the source port of a client's connection (the load generator opens many).
free_port() {
  python3 -c '
import random, socket
start = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
start = start if start >= 11000 else 32768
while True:
    port = random.randrange(10000, start)
    try:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break'
}

# cluster_key_file: prints the path of a gossip key file for the bench's nodes,
# $work/cluster.key, created with `senti cluster keygen` on first use (every senti cluster needs
# one: `cluster.key_file`).
cluster_key_file() {
  if [[ ! -e $work/cluster.key ]]; then
    target/release/senti cluster keygen --out "$work/cluster.key" 2>/dev/null
  fi
  echo "$work/cluster.key"
}

# metric URL NAME: the value of the unlabelled metric NAME in URL/metrics (empty if absent).
metric() {
  curl -fsS "$1/metrics" | awk -v name="$2" '$1 == name { print $2 }'
}

# cache_lookups URL: the node's senti_cache_lookups_total by result, as a JSON object
# ({"hit": N, "miss": N, "coalesced": N}; {} before the first lookup).
cache_lookups() {
  curl -fsS "$1/metrics" \
    | awk '/^senti_cache_lookups_total\{/ { label = $1; sub(/.*result="/, "", label); sub(/".*/, "", label); print label, $2 }' \
    | jq -Rn '[inputs | split(" ") | {key: .[0], value: (.[1] | tonumber)}] | from_entries'
}

# cpu_ticks PID: CPU ticks (1/100 s, user + system) of the process so far.
cpu_ticks() {
  local line fields
  line=$(<"/proc/$1/stat")
  read -r -a fields <<<"${line##*) }"
  echo $((fields[11] + fields[12]))
}

# machine_busy_ticks: CPU ticks (1/100 s) all cores spent busy so far, from /proc/stat (user,
# nice, system, irq, softirq; idle, iowait and the hypervisor's steal left out).
machine_busy_ticks() {
  local label user nice system idle iowait irq softirq rest
  read -r label user nice system idle iowait irq softirq rest </proc/stat
  echo $((user + nice + system + irq + softirq))
}

# steal_ticks: "STEAL TOTAL", the ticks (1/100 s) all cores lost to the hypervisor so far, and all
# ticks so far (user through steal), from /proc/stat.
steal_ticks() {
  awk '$1 == "cpu" { total = 0; for (i = 2; i <= 9; i++) total += $i; print $9, total }' /proc/stat
}

# wait_answer URL PID LOG WHAT: returns once POST URL/analyze answers 200; exits the script with
# the log tail if PID exits first or after READY_TIMEOUT seconds (default 120). For models that
# fail senti's known-answer check by design (the random StructBERT-base-sized benchmark model:
# /readyz stays 503 while /analyze serves).
wait_answer() {
  local url=$1 pid=$2 log=$3 what=$4 i
  for ((i = 0; i < ${READY_TIMEOUT:-120} * 10; i++)); do
    if curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -d '{"text":"很好"}' "$url/analyze" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2
      echo "$what: exited before it answered" >&2
      exit 1
    fi
    sleep 0.1
  done
  tail -n 20 "$log" >&2
  echo "$what: no answer after ${READY_TIMEOUT:-120} s" >&2
  exit 1
}

# start_node NAME CORE [ENV=VALUE...]: `senti serve` (one actor, one ONNX thread) pinned to CORE on a
# free loopback port, with the extra environment (RUST_LOG=warn unless given); records its pid and
# URL in the caller's associative arrays node_pid and node_url, logs to $work/senti-NAME.log, and
# returns once /readyz answers 200. Messages start with $BENCH (the calling script's name).
# SENTI_BIN runs another senti binary than target/release/senti (an A/B of two builds).
start_node() {
  local name=$1 core=$2 port log="$work/senti-$1.log" url pid
  shift 2
  port=$(free_port)
  url="http://127.0.0.1:$port"
  env SENTI__ENGINE__ACTORS=1 SENTI__ENGINE__THREADS_PER_ACTOR=1 RUST_LOG="warn" "$@" \
    taskset -c "$core" "${SENTI_BIN:-target/release/senti}" serve --listen "127.0.0.1:$port" 2>"$log" &
  pid=$!
  node_pid[$name]=$pid
  node_url[$name]=$url
  for _ in $(seq 600); do
    curl -fsS -o /dev/null "$url/readyz" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$log" >&2
      echo "$BENCH: senti ($name) exited before it was ready" >&2
      exit 1
    fi
    sleep 0.1
  done
  tail -n 20 "$log" >&2
  echo "$BENCH: senti ($name) was not ready after 60 s" >&2
  exit 1
}

# start_cluster PREFIX CORES... [ENV=VALUE...]: one node per CORES argument (a taskset list), named
# PREFIX<id> with ids a, b, c, ... (or the caller's array CLUSTER_IDS), seeded with the first node's
# gossip port, with the extra environment; returns once every node lists an actor of every other
# node. Needs the caller's `node_pid` / `node_url` arrays, `stamp`, `work` and `BENCH`.
start_cluster() {
  local prefix=$1 cookie="bench-$stamp-$RANDOM" key_file gossip gossip_first="" i name others
  shift
  local -a cores=() ids=(a b c d e f g h)
  while (($# > 0)) && [[ $1 != *=* ]]; do
    cores+=("$1")
    shift
  done
  if [[ -n ${CLUSTER_IDS+x} ]]; then ids=("${CLUSTER_IDS[@]}"); fi
  if ((${#cores[@]} < 2 || ${#cores[@]} > ${#ids[@]})); then
    echo "$BENCH: start_cluster needs 2 to ${#ids[@]} nodes, got ${#cores[@]}" >&2
    exit 1
  fi
  key_file=$(cluster_key_file)
  for i in "${!cores[@]}"; do
    gossip=$(free_port)
    [[ -n $gossip_first ]] || gossip_first=$gossip
    start_node "$prefix${ids[$i]}" "${cores[$i]}" SENTI__SERVER__NODE_ID="${ids[$i]}" SENTI__CLUSTER__ENABLED=true \
      SENTI_CLUSTER_COOKIE="$cookie" SENTI_CLUSTER_KEY_FILE="$key_file" SENTI__CLUSTER__GOSSIP_LISTEN="127.0.0.1:$gossip" \
      SENTI__CLUSTER__ACTOR_LISTEN="127.0.0.1:$(free_port)" SENTI__CLUSTER__SEEDS="[\"127.0.0.1:$gossip_first\"]" "$@"
  done
  others=$((${#cores[@]} - 1))
  for i in "${!cores[@]}"; do
    name="$prefix${ids[$i]}"
    for _ in $(seq 300); do
      curl -fsS "${node_url[$name]}/v1/cluster" 2>/dev/null |
        jq -e --argjson others "$others" \
          '[.routing.targets[] | select(.local == false) | .target | split("/")[0]] | unique | length >= $others' \
          >/dev/null && continue 2
      sleep 0.1
    done
    echo "$BENCH: node $name lists no actor of some other node after 30 s" >&2
    exit 1
  done
}

# routing_counters URL: a node's routing counters as JSON
# ({"local": n, "remote": n, "hedges": n, "hedges_declined": n, "retries": n, "ejections": n};
# absent counters are 0).
routing_counters() {
  curl -fsS "$1/metrics" | awk '
    /^senti_attempts_total\{hop="local"\}/ { local_n = $2 }
    /^senti_attempts_total\{hop="remote"\}/ { remote_n = $2 }
    /^senti_hedges_total / { hedges = $2 }
    /^senti_hedges_declined_total / { declined = $2 }
    /^senti_retries_total / { retries = $2 }
    /^senti_ejections_total / { ejections = $2 }
    END { printf "{\"local\":%d,\"remote\":%d,\"hedges\":%d,\"hedges_declined\":%d,\"retries\":%d,\"ejections\":%d}\n", local_n, remote_n, hedges, declined, retries, ejections }'
}
