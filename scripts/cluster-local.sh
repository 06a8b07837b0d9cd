#!/usr/bin/env bash
# Three senti nodes on this machine (cluster-config/node-{a,b,c}.toml), HTTP on 8080-8082.
# Ctrl-C stops all three (each drains gracefully). Their gossip key file, .cache/cluster.key, and
# session TLS folder, .cache/cluster-tls, are created on the first run (`senti cluster keygen`,
# `senti cluster tls`), then reused.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p senti-node --bin senti
if [ ! -e .cache/cluster.key ]; then
    mkdir -p .cache
    ./target/release/senti cluster keygen --out .cache/cluster.key
fi
if [ ! -e .cache/cluster-tls/node.key ]; then
    mkdir -p .cache
    ./target/release/senti cluster tls --out .cache/cluster-tls
fi
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
for n in a b c; do
    ./target/release/senti serve --config "cluster-config/node-$n.toml" &
    pids+=($!)
done
echo "cluster starting: try  curl -s localhost:8081/v1/cluster | python3 -m json.tool" >&2
wait || true
