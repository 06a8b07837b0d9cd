#!/usr/bin/env bash
# Offline checks of the shipped Prometheus files (cluster-config/prometheus/), no cluster needed:
#   1. installs Debian's prometheus package if promtool is missing (scripts/install-prometheus.sh),
#   2. promtool check config on both configurations (static targets and file_sd),
#   3. the example file_sd targets file is valid JSON,
#   4. promtool check rules on the alert rules,
#   5. promtool test rules: the unit tests of every alert on synthetic series.
# The live checks are Rust tests: tests/tests/prometheus.rs (a real Prometheus scrapes a 3-node
# cluster) and tests/tests/dashboard.rs (the Grafana dashboard's queries against real /metrics).
# Usage, from anywhere: bash scripts/prometheus-check.sh
# Where Prometheus cannot be installed (no apt-get, not root) it says so and exits 0 (a skip).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=cluster-config/prometheus

status=0
bash scripts/install-prometheus.sh || status=$?
if [[ $status -eq 2 ]]; then
  echo "prometheus-check: SKIPPED: promtool is not available and cannot be installed here (see above)" >&2
  exit 0
elif [[ $status -ne 0 ]]; then
  exit "$status"
fi

# promtool resolves rule_files and the test files' rule_files against the file's own folder.
promtool check config "$dir/prometheus.yml"
promtool check config "$dir/prometheus-file-sd.yml"
python3 -m json.tool "$dir/senti-targets.json" >/dev/null
echo "prometheus-check: $dir/senti-targets.json is valid JSON"
promtool check rules "$dir/senti-alerts.yml"
(cd "$dir" && promtool test rules senti-alerts.test.yml)
echo "prometheus-check: all Prometheus checks passed"
