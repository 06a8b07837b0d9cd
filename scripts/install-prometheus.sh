#!/usr/bin/env bash
# Makes `prometheus` and `promtool` available: Debian's `prometheus` package, installed with
# apt-get when missing. Idempotent; silent when both are already on PATH.
#
# The package's maintainer script would start a system Prometheus (systemd unit or init.d
# script) on :9090; nothing here wants one, so the install runs under a policy-rc.d that
# forbids starting services (Debian's documented switch, the one container images use), and
# the file is removed again afterwards. The checks start their own Prometheus on a free port.
#
# Exit status: 0 ready; 2 cannot be installed on this machine (no apt-get, or not root): callers
# skip with the printed reason; 1 the install was attempted and failed (an error, not a skip).
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-prometheus: prometheus/promtool not on PATH and no apt-get to install them" \
    "(install Prometheus 2.x by hand)" >&2
  exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-prometheus: prometheus/promtool not on PATH and I am not root; install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus" >&2
  exit 2
fi

policy=/usr/sbin/policy-rc.d
added_policy=""
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# written by senti scripts/install-prometheus.sh for one apt-get run\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  added_policy=1
fi
cleanup() { if [[ -n $added_policy ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "install-prometheus: installing Debian's prometheus package with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends prometheus; then
  # A fresh machine has no package lists yet.
  apt-get update
  apt-get install -y --no-install-recommends prometheus
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "install-prometheus: $(prometheus --version 2>&1 | head -n 1)" >&2
