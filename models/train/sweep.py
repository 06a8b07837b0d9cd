"""The comparison behind the default model's size (`make model-sweep`).

Trains each size for one epoch without pre-training (same seed, data and schedule shape), measures
val accuracy and fp32 ONNX latency, and writes sweeps/SWEEP.md. Shorter than `make model` on
purpose: it ranks sizes, it does not reproduce the shipped model. Pass --mlm to add the same
sizes with one epoch of masked-language-model pre-training (about twice as long).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", nargs="+", default=["tiny", "small", "medium"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--mlm", action="store_true")
    args = p.parse_args()
    runs = [(size, 0.0) for size in args.sizes] + ([(size, 1.0) for size in args.sizes] if args.mlm else [])
    for size, mlm in runs:
        # 1.1.0's recipe from scratch: original pool, plain truncation at 256 tokens, no warm start.
        tag = f"sweep-{size}-mlm{mlm:g}"
        cmd = [sys.executable, str(HERE / "train.py"), "--size", size, "--epochs", str(args.epochs), "--mlm-epochs", str(mlm), "--no-export", "--tag", tag,
               "--init", "none", "--mlm-masking", "token", "--pools", "sentiment", "--no-augment", "--balance", "--max-length", "256", "--window-head", "256", "--lr", "3e-4", "--sweep-latency"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=HERE)
    rows = []
    for path in sorted((HERE / "ablations").glob("sweep-*.json")):
        s = json.loads(path.read_text())
        lat = s["latency_fp32"]
        rows.append(
            f"| {s['size']} | {s['hidden']}x{s['layers']} | {s['parameters'] / 1e6:.2f} M | {s['mlm_epochs']:g} | {s['epochs']} | "
            f"{s['stages']['fine-tuned']['encoder']['by_source']['val:sentiment']['accuracy']:.4f} | {lat['batch1_ms_per_sentence']:.2f} | {lat['batch32_ms_per_sentence']:.2f} | {s['minutes_total_training']:.1f} |"
        )
    table = "\n".join(
        [
            "# Size sweep (`make model-sweep`)",
            "",
            "One epoch of fine-tuning per size (no pre-training unless the MLM column says so), same seed and data;",
            "val accuracy from PyTorch; latency of the fp32 ONNX export in ms per sentence on real val texts,",
            "2 ONNX Runtime threads, median. Rerun to reproduce; the machine is shared, so compare rows of one run.",
            "",
            "| size | hidden x layers | parameters | MLM epochs | epochs | val accuracy | ms/sentence batch 1 | ms/sentence batch 32 | train minutes |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    (HERE / "sweeps" / "SWEEP.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
