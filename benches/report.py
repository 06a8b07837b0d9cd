"""Tables and plots of one `make bench` run (scripts/bench.sh).

    python benches/report.py bench-results/bench-<UTC time>

Reads the JSON files the run wrote into that folder and writes, into the same folder, report.md
(printed too) and the plots latency-<model>.svg (p50 and p99 against concurrency, closed loop) and
throughput-<model>.svg (answered requests per second and p99 against the offered arrival rate,
open loop). Every figure comes from the folder: nothing is typed in by hand. The targets are the
ones of the benchmark issue (docs/benchmarks.md quotes them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402

# Every concurrency scripts/bench.sh may run (its CONCURRENCIES); a report shows those present.
CONCURRENCIES = (1, 5, 10, 20, 40)
MODEL_TITLES = {"small": "default model (senti-zh-small)", "base": "StructBERT-base-sized model (random weights)"}
SYSTEM_TITLES = {
    "senti-int8": "senti, int8",
    "senti-fp32": "senti, fp32",
    "onnx-peer-int8": "ONNX Runtime peer, int8",
    "onnx-peer-fp32": "ONNX Runtime peer, fp32",
    "torch-recipe": "recipe as published (PyTorch)",
}


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def f(x, digits=1):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def errors_text(report) -> str:
    errs = report.get("errors") or {}
    if not errs:
        return "0"
    return ", ".join(f"{k} {v}" for k, v in sorted(errs.items()))


class System:
    def __init__(self, folder: Path):
        self.name = folder.name
        self.meta = load(folder / "system.json") or {}
        self.closed = {c: load(folder / f"closed-c{c}.json") for c in CONCURRENCIES}
        self.closed = {c: r for c, r in self.closed.items() if r}
        self.open = sorted((load(p) for p in folder.glob("open-*.json")), key=lambda r: r["rate"])
        self.max_rate = load(folder / "max-rate.json") or {}
        self.overload = load(folder / "overload.json")

    @property
    def title(self):
        return SYSTEM_TITLES.get(self.name, self.name)

    def best_qps(self):
        return max((r["ok_qps"] for r in self.closed.values()), default=None)

    def closed_errors(self):
        return sum(sum((r.get("errors") or {}).values()) for r in self.closed.values())


def raw_best(raw):
    return raw["best"]["texts_per_s"] if raw and raw.get("best") else None


def model_section(out: Path, model: str, peak, lines: list[str], checks: list[tuple[str, str, bool | None]]):
    folder = out / model
    systems = {p.name: System(p) for p in sorted(folder.iterdir()) if p.is_dir()}
    raws = {p.stem.removeprefix("raw-"): load(p) for p in sorted(folder.glob("raw-*.json"))}
    flops = {p.stem.removeprefix("flops-"): load(p) for p in sorted(folder.glob("flops-*.json"))}
    accuracy = load(folder / "accuracy.json")
    any_raw = next(iter(raws.values()), None)
    lines += [f"## {MODEL_TITLES.get(model, model)}", ""]
    if any_raw:
        m = any_raw["model"]
        lines += [
            f"Model {m['name']} {m['version']} from `{m['source']}`; payload: {any_raw['texts']:,} review texts "
            f"shuffled with seed {any_raw['seed']}, {any_raw['mean_tokens']:.1f} tokens on average.",
            "",
        ]

    # The ceiling and the arithmetic.
    lines += [
        "### Raw ONNX Runtime (the ceiling) and the arithmetic",
        "",
        "| variant | best configuration | texts/s | one inference, batch 1, 1 thread (ms) | 2 threads (ms) "
        "| GFLOP per text (mean) | achieved GFLOP/s | share of ONNX Runtime's measured matmul peak of that type, all cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, raw in raws.items():
        peak_all = (peak or {}).get("ort_int8_gops_all_cores" if variant == "int8" else "ort_fp32_gflops_all_cores")
        fl = flops.get(variant) or {}
        gflop = fl.get("mean_flops_per_text", 0) / 1e9 if fl.get("mean_flops_per_text") else None
        best = raw_best(raw)
        achieved = gflop * best if gflop and best else None
        share = achieved / peak_all if achieved and peak_all else None
        single = raw.get("single_inference_ms", {})
        lines.append(
            f"| {variant} | {raw['best']['shape']} batch {raw['best']['batch']}{' grouped' if raw['best'].get('grouped') else ''} | {f(best, 0)} | {f(single.get('1'), 2)} "
            f"| {f(single.get('2'), 2)} | {f(gflop, 2)} | {f(achieved, 1)} | {f(share * 100 if share else None, 1)}% |"
        )
    lines += ["", "Every raw configuration (median of 3 interleaved rounds):", ""]
    lines += ["| variant | shape | batch | texts/s | padding efficiency |", "|---|---|---:|---:|---:|"]
    for variant, raw in raws.items():
        for r in raw["results"]:
            batch = f"{r['batch']} grouped" if r.get("grouped") else str(r["batch"])
            lines.append(f"| {variant} | {r['shape']} | {batch} | {f(r['texts_per_s'], 0)} | {f(r['padding_efficiency'], 2)} |")
    lines.append("")

    if accuracy:
        lines += [
            f"### What int8 costs: accuracy on {accuracy['texts']:,} labeled validation texts",
            "",
            "| variant | accuracy | same label as the first variant | largest difference in P(positive) | texts/s (batch 1, 2 threads) |",
            "|---|---:|---:|---:|---:|",
        ]
        for v in accuracy["variants"]:
            lines.append(
                f"| {v['variant']} | {v['accuracy']:.4f} | {v['agreement_with_first']:.4f} | {v['max_probability_diff']:.4f} "
                f"| {f(v['texts_per_s_batch1'], 1)} |"
            )
        if model == "base":
            lines.append("")
            lines.append(
                "(Random weights: accuracy means nothing here, agreement does. The int8 accuracy cost is "
                "measured on the trained default model above.)"
            )
        lines.append("")

    # The recipe's table.
    lines += [
        "### The recipe's table: closed loop on `POST /analyze`, one text per request",
        "",
        "| system | concurrency | mean ms | p50 ms | p99 ms | errors | requests/s |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for s in systems.values():
        for c, r in sorted(s.closed.items()):
            lat = r["latency_ms"]
            lines.append(
                f"| {s.title} | {c} | {f(lat['mean'], 1)} | {f(lat['p50'], 1)} | {f(lat['p99'], 1)} | {errors_text(r)} | {f(r['ok_qps'], 1)} |"
            )
    lines += [
        "",
        "### Highest arrival rate with p99 under 200 ms (open loop, no errors) and beyond capacity",
        "",
        "| system | sustained requests/s (p99 < 200 ms) | first failing rate probed | overload: offered /s | answered ok /s "
        "| errors | error answers p50 / p99 ms | ok p99 ms |",
        "|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for s in systems.values():
        o = s.overload or {}
        el = o.get("error_latency_ms") or {}
        lines.append(
            f"| {s.title} | {f(s.max_rate.get('max_rate_under_limit'), 1)} | {f(s.max_rate.get('first_failing_rate'), 1)} "
            f"| {f(o.get('rate'), 1)} | {f(o.get('ok_qps'), 1)} | {errors_text(o) if o else 'n/a'} "
            f"| {f(el.get('p50'), 1)} / {f(el.get('p99'), 1)} | {f((o.get('latency_ms') or {}).get('p99'), 1)} |"
        )
    lines.append("")
    plots(out, model, systems, lines)
    targets(model, systems, raws, accuracy, checks)


def plots(out: Path, model: str, systems: dict[str, System], lines: list[str]):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for s in systems.values():
        cs = sorted(s.closed)
        if not cs:
            continue
        (line,) = ax.plot(cs, [s.closed[c]["latency_ms"]["p99"] for c in cs], marker="o", label=f"{s.title} p99")
        ax.plot(cs, [s.closed[c]["latency_ms"]["p50"] for c in cs], marker=".", linestyle="--", color=line.get_color(), label=f"{s.title} p50")
    ax.set_yscale("log")
    ax.set_xlabel("concurrency (closed loop)")
    ax.set_ylabel("latency, ms (log scale)")
    ax.set_title(f"Latency against concurrency: {MODEL_TITLES.get(model, model)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"latency-{model}.svg")
    plt.close(fig)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for s in systems.values():
        runs = list(s.open) + ([s.overload] if s.overload else [])
        runs.sort(key=lambda r: r["rate"])
        if not runs:
            continue
        rates = [r["rate"] for r in runs]
        (line,) = top.plot(rates, [r["ok_qps"] for r in runs], marker="o", label=s.title)
        bottom.plot(rates, [r["latency_ms"]["p99"] if r["ok"] else float("nan") for r in runs], marker="o", color=line.get_color())
    top.set_ylabel("answered ok, requests/s")
    top.set_title(f"Throughput and p99 against offered load: {MODEL_TITLES.get(model, model)}", fontsize=10)
    top.grid(True, alpha=0.3)
    top.legend(fontsize=7)
    bottom.axhline(200, color="grey", linestyle=":", linewidth=1)
    bottom.set_yscale("log")
    bottom.set_xscale("log")
    bottom.set_xlabel("offered arrival rate, requests/s (open loop; log scale)")
    bottom.set_ylabel("p99 of ok answers, ms (log)")
    bottom.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"throughput-{model}.svg")
    plt.close(fig)
    lines += [f"Plots: `latency-{model}.svg`, `throughput-{model}.svg`.", ""]


def ratio(a, b):
    return a / b if a is not None and b else None


def targets(model, systems, raws, accuracy, checks):
    def best(name):
        s = systems.get(name)
        return s.best_qps() if s else None

    if model == "small":
        senti, peer = systems.get("senti-int8"), systems.get("onnx-peer-int8")
        r = ratio(best("senti-int8"), best("onnx-peer-int8"))
        checks.append(("small: senti int8 throughput ÷ ONNX Runtime peer (same file), best closed loop", f"{f(r, 2)}x (target >= 3)", r is not None and r >= 3))
        if senti and peer:
            worst = None
            for c in CONCURRENCIES:
                if c in senti.closed and c in peer.closed:
                    q = senti.closed[c]["latency_ms"]["p99"] / peer.closed[c]["latency_ms"]["p99"]
                    worst = q if worst is None else max(worst, q)
            slower = [c for c in CONCURRENCIES if c in senti.closed and c in peer.closed and senti.closed[c]["ok_qps"] < peer.closed[c]["ok_qps"]]
            shown = [c for c in CONCURRENCIES if c in senti.closed and c in peer.closed]
            checks.append(("small: senti int8 throughput >= the peer's at every concurrency", f"c={','.join(map(str, shown))}: " + (f"slower at c={','.join(map(str, slower))}" if slower else "yes"), bool(shown) and not slower))
            checks.append(("small: senti p99 ÷ peer p99, worst concurrency", f"{f(worst, 2)} (target <= 0.5)", worst is not None and worst <= 0.5))
        r = ratio(best("senti-int8"), raw_best(raws.get("int8")))
        # Not a target of this benchmark: one text per request pays HTTP and JSON per text.
        # Issue 3's 0.95 of raw is measured at saturation with multi-text requests (make bench-node).
        checks.append(("small: senti int8 best closed-loop texts/s on /analyze (one text per request) ÷ raw int8 ceiling", f"{f(r, 2)} (no target here; saturation with several texts per request: make bench-node)", None))
        if accuracy:
            v = {x["variant"]: x["accuracy"] for x in accuracy["variants"]}
            if "int8" in v and "fp32" in v:
                d = (v["fp32"] - v["int8"]) * 100
                checks.append(("small: int8 accuracy cost (fp32 - int8), points", f"{d:+.2f} (target <= 0.5)", d <= 0.5))
    if model == "base":
        senti, peer = systems.get("senti-fp32"), systems.get("onnx-peer-fp32")
        if senti and peer:
            ok = True
            detail = []
            for c in CONCURRENCIES:
                if c in senti.closed and c in peer.closed:
                    a, b = senti.closed[c], peer.closed[c]
                    good = a["ok_qps"] >= b["ok_qps"] and a["latency_ms"]["p99"] <= b["latency_ms"]["p99"]
                    ok &= good
                    detail.append(f"c={c}: {a['ok_qps'] / b['ok_qps']:.2f}x qps, p99 {a['latency_ms']['p99']:.0f} vs {b['latency_ms']['p99']:.0f} ms")
            checks.append(("base fp32: senti >= ONNX Runtime peer in throughput and p99 at every concurrency", "; ".join(detail), ok))
        r = ratio(best("senti-fp32"), raw_best(raws.get("fp32")))
        checks.append(("base fp32: senti best texts/s ÷ raw fp32 ceiling", f"{f(r, 2)} (target >= 0.95)", r is not None and r >= 0.95))
        r = ratio(best("senti-int8"), best("onnx-peer-fp32"))
        checks.append(("base: senti int8 ÷ ONNX Runtime peer fp32, throughput", f"{f(r, 2)}x (target >= 2)", r is not None and r >= 2))
        r = ratio(best("senti-int8"), best("torch-recipe"))
        checks.append(("base: senti int8 ÷ recipe as published (PyTorch), throughput", f"{f(r, 2)}x (target >= 2.5)", r is not None and r >= 2.5))
    for name, s in systems.items():
        if not name.startswith("senti"):
            continue
        n = s.closed_errors()
        checks.append((f"{model}: {s.title}: errors in the closed-loop runs (below capacity)", str(n), n == 0))
        o = s.overload or {}
        errs = o.get("errors") or {}
        only_429 = all(k == "status_429" for k in errs)
        p99 = (o.get("error_latency_ms") or {}).get("p99")
        fast = p99 is not None and p99 < 50 if errs else True
        checks.append((f"{model}: {s.title}: beyond capacity only fast 429s", f"{errors_text(o) if o else 'n/a'}; error p99 {f(p99, 1)} ms", bool(o) and only_429 and fast))


def main():
    out = Path(sys.argv[1])
    machine = load(out / "machine.json") or {}
    peak = load(out / "peak.json")
    lines = [f"# senti against the recipe it replaces: `make bench` {machine.get('date', '')}", ""]
    if machine.get("quick"):
        lines += ["**QUICK smoke run: the figures are not meaningful.**", ""]
    lines += [
        f"Machine: {machine.get('cpu')}, {machine.get('nproc')} cores ({machine.get('cpu_flags', '').strip()}); "
        f"load average {machine.get('loadavg_before')} before, {machine.get('loadavg_after')} after. "
        f"Load runs: {machine.get('duration_s')} s (base model {machine.get('base_duration_s')} s) after {machine.get('warmup_s')} s warm-up; peers: "
        f"{machine.get('peer_instances')} gunicorn instances behind nginx least_conn.",
        "",
    ]
    if peak:
        lines += [
            "Measured matrix-multiply peak (benches/peers/flops.py peak; 2048 x 2048 x 2048, best run), one core / all cores:",
            "",
            "| kernel | one core | all cores |",
            "|---|---:|---:|",
            f"| numpy float32 matmul ({peak.get('blas', 'BLAS')}) | {f(peak.get('one_core_gflops'))} GFLOP/s | {f(peak.get('all_cores_gflops'))} GFLOP/s |",
            f"| ONNX Runtime float32 MatMul | {f(peak.get('ort_fp32_gflops_one_core'))} GFLOP/s | {f(peak.get('ort_fp32_gflops_all_cores'))} GFLOP/s |",
            f"| ONNX Runtime int8 MatMulInteger | {f(peak.get('ort_int8_gops_one_core'))} GOP/s | {f(peak.get('ort_int8_gops_all_cores'))} GOP/s |",
            "",
        ]
    checks: list[tuple[str, str, bool | None]] = []
    for model in ("small", "base"):
        if (out / model).is_dir():
            model_section(out, model, peak, lines, checks)
    lines += ["## Against the targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, measured, met in checks:
        lines.append(f"| {name} | {measured} | {'-' if met is None else 'yes' if met else '**no**'} |")
    lines.append("")
    text = "\n".join(lines)
    (out / "report.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
