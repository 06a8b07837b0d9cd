#!/usr/bin/env bash
# The recipe senti replaces, started and stopped for the benchmark (scripts/bench.sh):
# INSTANCES x `gunicorn -w 1 --preload app:app` (benches/peers/app.py) on free loopback ports,
# behind nginx `least_conn` on 127.0.0.1:PORT.
#
#   peers.sh install                     nginx from Debian (if missing) and .cache/venv-peers
#   peers.sh install-nginx               nginx only (scripts/bench-vs-nginx.sh)
#   peers.sh start WORKDIR ENGINE MODEL VARIANT INSTANCES PORT
#                                        ENGINE torch (MODEL: Hugging Face checkpoint folder) or
#                                        onnx (MODEL: senti model folder; VARIANT fp32|int8);
#                                        returns once nginx answers POST /analyze
#   peers.sh stop WORKDIR                SIGTERM everything started there (SIGKILL after 10 s)
#
# Everything a run writes (nginx config, pid files, logs, temp paths) stays in WORKDIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv="$repo/.cache/venv-peers"

die() {
  echo "peers: $*" >&2
  exit 1
}

install_nginx() {
  if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    echo "peers: installing nginx from Debian" >&2
    # Debian's package would start a system nginx on port 80; forbid service starts meanwhile
    # unless the machine already does (its own /usr/sbin/policy-rc.d).
    local policy_added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      policy_added=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >&2; }
    [[ $policy_added == 1 ]] && rm -f /usr/sbin/policy-rc.d
  fi
  return 0
}

install() {
  install_nginx
  if [[ ! -x $venv/bin/python || $here/requirements.txt -nt $venv/bin/python || $repo/models/train/requirements.txt -nt $venv/bin/python ]]; then
    echo "peers: creating $venv (PyTorch, transformers, ONNX Runtime, Flask, gunicorn; a few minutes)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$here/requirements.txt" >&2
    touch "$venv/bin/python"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for URL PID LOG: until URL answers 2xx (GET, or POST with a text for /analyze).
wait_for() {
  local url=$1 pid=$2 log=$3 i
  for ((i = 0; i < 1800; i++)); do
    if [[ $url == */analyze ]]; then
      curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -d '{"text":"很好"}' "$url" 2>/dev/null && return 0
    else
      curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; die "process $pid exited before $url answered"; }
    sleep 0.1
  done
  tail -n 30 "$log" >&2
  die "$url did not answer within 180 s"
}

start() {
  [[ $# == 6 ]] || die "usage: peers.sh start WORKDIR ENGINE MODEL VARIANT INSTANCES PORT"
  local work=$1 engine=$2 model=$3 variant=$4 instances=$5 port=$6 i p upstreams="" nginx
  [[ -x $venv/bin/gunicorn ]] || die "no $venv: run peers.sh install"
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  mkdir -p "$work/logs" "$work/tmp"
  work=$(cd "$work" && pwd)
  model=$(cd "$model" && pwd)
  : >"$work/pids"
  for ((i = 0; i < instances; i++)); do
    p=$(free_port)
    # The recipe's command line; --no-control-socket only keeps gunicorn 27's instances from
    # sharing one control socket in ~/.gunicorn. setsid: one process group per instance, so stop
    # reaches the worker too (with --preload the worker can hang at exit: see stop).
    (cd "$here" && PEER_ENGINE=$engine PEER_MODEL=$model PEER_VARIANT=$variant \
      exec setsid "$venv/bin/gunicorn" -w 1 --preload --no-control-socket -b "127.0.0.1:$p" app:app) \
      >"$work/logs/gunicorn-$i.log" 2>&1 &
    echo $! >>"$work/pids"
    upstreams+="    server 127.0.0.1:$p;"$'\n'
    echo "127.0.0.1:$p $!" >>"$work/instances"
  done
  while read -r addr pid; do
    wait_for "http://$addr/health" "$pid" "$work/logs/gunicorn-$(grep -n "^$addr " "$work/instances" | cut -d: -f1).log"
  done <"$work/instances"
  # The recipe's balancer: least_conn over the instances, plain proxy_pass (no upstream
  # keep-alive), otherwise nginx's defaults; one worker process.
  cat >"$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/logs/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/tmp/body;
  proxy_temp_path $work/tmp/proxy;
  fastcgi_temp_path $work/tmp/fastcgi;
  uwsgi_temp_path $work/tmp/uwsgi;
  scgi_temp_path $work/tmp/scgi;
  upstream peers {
    least_conn;
$upstreams  }
  server {
    listen 127.0.0.1:$port;
    location / { proxy_pass http://peers; }
  }
}
EOF
  setsid "$nginx" -p "$work" -c "$work/nginx.conf" >"$work/logs/nginx.log" 2>&1 &
  echo $! >>"$work/pids"
  wait_for "http://127.0.0.1:$port/analyze" "$!" "$work/logs/nginx-error.log"
  echo "peers: $instances x gunicorn ($engine, $(basename "$model") $variant) behind nginx on 127.0.0.1:$port" >&2
}

# Each gunicorn instance is a process group of its own (setsid); nginx is one process group with
# its worker. A gunicorn worker forked after --preload created the model (ONNX Runtime's thread
# pool, PyTorch's) may hang at exit after "Worker exiting", so whatever is left after 10 s gets
# SIGKILL, group-wide.
stop() {
  [[ $# == 1 ]] || die "usage: peers.sh stop WORKDIR"
  local work=$1 pid i alive
  [[ -f $work/pids ]] || return 0
  while read -r pid; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done <"$work/pids"
  for ((i = 0; i < 100; i++)); do
    alive=0
    while read -r pid; do
      { kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null; } && alive=1
    done <"$work/pids"
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  while read -r pid; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done <"$work/pids"
  rm -f "$work/pids"
}

case ${1:-} in
  install) install ;;
  install-nginx) install_nginx ;;
  start) shift && start "$@" ;;
  stop) shift && stop "$@" ;;
  *) die "usage: peers.sh install | install-nginx | start WORKDIR ENGINE MODEL VARIANT INSTANCES PORT | stop WORKDIR" ;;
esac
