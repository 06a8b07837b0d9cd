#!/usr/bin/env bash
# Prints the markdown tables of a `make bench-vs-nginx` result: bash scripts/bench-vs-nginx-report.sh
# bench-results/vs-nginx-<time>.json. Medians over the rounds; errors summed.
set -euo pipefail
jq -r '
  def med: map(select(. != null)) | sort
    | if length == 0 then null elif length % 2 == 1 then .[(length - 1) / 2] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def r(x): if x == null then "-" else (x * 10 | round / 10 | tostring) end;
  def errs: map(.errors | to_entries | map(.value) | add // 0) | add // 0;
  def dead_entry: map(.dead_entry_errors // 0) | add // 0;
  def scen(s): map(select(.scenario == s));
  # Per round: the highest open load served within the p99 objective with no error, as texts/s.
  def at_objective($obj):
    group_by(.round) | map(map(select((.scenario | startswith("open-")) and .latency_ms.p99 <= $obj
                                      and ((.errors | length) == 0)))
                           | max_by(.rate) | if . == null then 0 else .texts_per_s end) | med;
  . as $all
  | ($all.runs | map(select(.round > 0)) | group_by(.setup)) as $groups
  | "Reference load C = \($all.capacity_texts_per_s) texts/s (\($all.capacity_source // "nginx least_conn, closed loop of \($all.concurrency)")); p99 objective \($all.p99_objective_ms) ms; \($groups[0] | map(.round) | max) rounds.",
    "",
    "| setup | closed loop texts/s | p99 ms at 0.7 C | p99 ms at 0.85 C | texts/s within the p99 objective | errors in open runs | remote attempts |",
    "|---|---:|---:|---:|---:|---:|---:|",
    ($groups[] | . as $g
      | ($g | map(select(.scenario | startswith("open-")))) as $open
      | "| \($g[0].setup) | \(r($g | scen("closed") | map(.texts_per_s) | med)) | \(r($g | scen("open-0.7") | map(.latency_ms.p99) | med)) | \(r($g | scen("open-0.85") | map(.latency_ms.p99) | med)) | \(r($g | at_objective($all.p99_objective_ms))) | \($open | errs) | \(if ($g[0].setup | startswith("senti")) then (($open | map(.attempts.remote) | add) / ([($open | map(.attempts.local + .attempts.remote) | add), 1] | max) * 100 | round | tostring) + "%" else "-" end) |"),
    "",
    "Faults at \($all.fault_load) x C (open loop):",
    "",
    "| setup | slowed: p50 / p99 ms | slowed: errors | killed: p50 / p99 ms | killed: errors (of them sent to the dead node itself) |",
    "|---|---:|---:|---:|---:|",
    ($groups[] | . as $g
      | "| \($g[0].setup) | \(r($g | scen("slowed") | map(.latency_ms.p50) | med)) / \(r($g | scen("slowed") | map(.latency_ms.p99) | med)) | \($g | scen("slowed") | errs) | \(r($g | scen("killed") | map(.latency_ms.p50) | med)) / \(r($g | scen("killed") | map(.latency_ms.p99) | med)) | \($g | scen("killed") | errs) (\($g | scen("killed") | dead_entry)) |"),
    "",
    "Open loop p99 ms by offered load:",
    "",
    "| setup | \($all.loads | map("\(.) C") | join(" | ")) |",
    "|---|\($all.loads | map("---:") | join("|"))|",
    ($groups[] | . as $g
      | "| \($g[0].setup) | \($all.loads | map(. as $l | "\(r($g | scen("open-\($l)") | map(.latency_ms.p99) | med))\(if ($g | scen("open-\($l)") | errs) > 0 then " (\($g | scen("open-\($l)") | errs) errors)" else "" end)") | join(" | ")) |"),
    "",
    "Each round: closed loop texts/s, p99 ms at 0.85 C (a round slower as a whole shows in both), and the largest share of CPU time the hypervisor took in any of its runs:",
    "",
    "| setup | \($groups[0] | map(.round) | unique | map("round \(.)") | join(" | ")) |",
    "|---|\($groups[0] | map(.round) | unique | map("---:") | join("|"))|",
    ($groups[] | . as $g
      | "| \($g[0].setup) | \($g | group_by(.round) | map("\(r(scen("closed") | map(.texts_per_s) | med)) / \(r(scen("open-0.85") | map(.latency_ms.p99) | med)) / \(map(.steal_share // null) | if all(. == null) then "-" else (map(select(. != null)) | max * 1000 | round / 10 | tostring) + "%" end)") | join(" | ")) |")
' "$1"
