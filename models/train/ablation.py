"""What each technique of model 2.0.0 buys on each val split (`make model-ablation`).

Runs train.py --no-export once per row (fine-tuned weights are cached by their inputs, so a row that
`make model` or an earlier ablation already trained costs only its evaluation) and writes
ablations/ABLATION.md from ablations/<tag>.json. Every row starts from model 1.1.0's weights and
fine-tunes one epoch; each adds one change to the row named in its `on` column. Figures are the
shipped kind of model: encoder + n-gram head, alpha and temperature fitted on the mixed val (both
val files), accuracy at the argmax, ECE cross-fitted (T from the other half of val).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "ablations"

# tag, the row it changes, what it changes, train.py arguments
RUNS = [
    ("both", None, "one epoch on both pools, Weibo's classes weighted equally", ["--no-augment", "--continue-mlm-epochs", "0", "--distill-epochs", "0"]),
    ("both-2nd-epoch", "both", "+ a second epoch (the control for `distill`)", ["--no-augment", "--continue-mlm-epochs", "0", "--distill-epochs", "1", "--distill-min-confidence", "2"]),
    ("distill", "both", "+ a second epoch with unlabeled.tsv soft-labelled by `both` + head", ["--no-augment", "--continue-mlm-epochs", "0", "--distill-epochs", "1"]),
    ("continue-mlm", "distill", "+ 1 epoch of n-gram-masked MLM on sentiment-extra's train texts first (make model's recipe)", ["--no-augment", "--continue-mlm-epochs", "1"]),
    ("continue-mlm-token", "distill", "+ the same MLM epoch with single tokens masked, not 1-4-character spans (the control for n-gram masking)", ["--no-augment", "--continue-mlm-epochs", "1", "--mlm-masking", "token"]),
    ("continue-mlm-word", "distill", "+ the same MLM epoch with whole words masked (jieba's segmentation), not 1-4-character spans", ["--no-augment", "--continue-mlm-epochs", "1", "--mlm-masking", "word"]),
    ("continue-mlm-3", "distill", "+ three epochs of the same n-gram-masked MLM instead of one (longer MLM)", ["--no-augment", "--continue-mlm-epochs", "3"]),
    ("augment", "continue-mlm", "+ contrast and negation rows for the encoder (augment.py)", ["--augment", "--continue-mlm-epochs", "1"]),
    ("distill-noise", "continue-mlm", "+ noisy student: 10% of each pseudo-labelled text's tokens dropped before the student reads it", ["--no-augment", "--continue-mlm-epochs", "1", "--distill-noise", "0.1"]),
    ("distill-no-val", "continue-mlm", "the val files' texts left out of the distillation set", ["--no-augment", "--continue-mlm-epochs", "1", "--distill-skip-val-texts"]),
]
SOURCES = [
    ("val:sentiment", "val (original)"),
    ("douban_book", "Douban"),
    ("nlpcc2014_train", "Amazon.cn"),
    ("smp2020_usual", "Weibo"),
    ("val:sentiment-extra", "extra val"),
]


# Reference rows from evaluate.py: name, JSON file, evaluate.py arguments
REFERENCES = [
    ("1.1.0 as shipped (int8, its own T)", "model-1.1.0", ["--model", str(HERE.parents[1] / ".cache" / "init" / "model-1.1.0")]),
    ("naive Bayes, char 1-2-grams, both pools", "naive-bayes", ["--naive-bayes"]),
    ("n-gram head alone, both pools, Weibo balanced", "head-balanced", ["--ngram-head"]),
    ("n-gram head alone, both pools, Weibo as it is", "head-unbalanced", ["--ngram-head", "--balance"]),
]


def model_1_1_0() -> None:
    """1.1.0's folder, from git (the commit `make model` starts from)."""
    folder = HERE.parents[1] / ".cache" / "init" / "model-1.1.0"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "model.int8.onnx", "tokenizer.json", "model.toml"):
        if not (folder / name).exists():
            data = subprocess.run(["git", "show", f"08dd09b:models/senti-zh-small/{name}"], check=True, capture_output=True, cwd=HERE).stdout
            (folder / name).write_bytes(data)


def reference_row(label: str, path: Path) -> str:
    r = json.loads(path.read_text())
    key = {"val:sentiment": "pool:sentiment", "val:sentiment-extra": "pool:sentiment-extra"}
    accs = " | ".join(f"{r[key.get(s, s)]['accuracy']:.4f}" for s, _ in SOURCES)
    worst = max(v["ece"] for s, v in r.items() if s not in ("all", "chnsenticorp") and not s.startswith("pool:"))
    return f"| {label} | | {accs} | {worst:.3f} (own T) | | |"


def run(tag: str, extra: list[str]) -> None:
    cmd = [sys.executable, str(HERE / "train.py"), "--no-export", "--tag", tag, *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=HERE)


SHORT = {"douban_book": "Douban", "nlpcc2014_train": "Amazon.cn", "smp2020_usual": "Weibo", "sophon_ChnSentiCorp_htl_all": "hotels", "sophon_online_shopping_10_cats": "shopping", "sophon_waimai_10k": "delivery"}


def row(label: str, on: str, figures: dict, minutes: str) -> str:
    """ECE: cross-fitted, per source; chnsenticorp (5 rows) is left out, and so is the val file
    as a whole. Shown: the largest, and the largest without Amazon.cn (whose labels are noisy)."""
    by = figures["by_source"]
    accs = " | ".join(f"{by[s]['accuracy']:.4f}" for s, _ in SOURCES)
    eces = {s: v["ece_cross_fitted"] for s, v in by.items() if s in SHORT}
    worst = max(eces, key=eces.get)
    rest = max((s for s in eces if s != "nlpcc2014_train"), key=eces.get)
    return f"| {label} | {on} | {accs} | {eces[worst]:.3f} ({SHORT[worst]}) | {eces[rest]:.3f} ({SHORT[rest]}) | {minutes} |"


VAL_TEXTS_NOTE = (
    "† distilled on unlabeled.tsv with the 2,105 Weibo val texts it holds (their inputs, labelled by the\n"
    "model itself, not their labels): transductive, so its Weibo figure may be flattered.\n"
    "train.py --distill-skip-val-texts leaves them out: the `distill-no-val` row, level with `continue-mlm`\n"
    "on Weibo (off in make model's recipe, whose committed files were distilled with them)."
)


def tables(tags: list[str]) -> tuple[list[str], list[str]]:
    """The two Markdown tables (encoder + head, encoder alone), as lines; model_card.py shows the first."""
    head = "| run | on | " + " | ".join(name for _, name in SOURCES) + " | worst ECE | worst ECE but Amazon.cn | train min |"
    lines = [head, "|" + "---|" * (len(SOURCES) + 5)]
    enc = [head, "|" + "---|" * (len(SOURCES) + 5)]
    for label, name, _ in REFERENCES:
        if (OUT / f"{name}.json").exists():
            lines.append(reference_row(label, OUT / f"{name}.json"))
    init_done = False
    for tag, on, what, _ in RUNS:
        path = OUT / f"{tag}.json"
        stage_name = None
        if tag == "both" and not path.exists():
            # The same cached weights as the fine-tuned stage of `distill` (its first epoch).
            path, stage_name = OUT / "distill.json", "fine-tuned"
        if tag not in tags or not path.exists():
            continue
        s = json.loads(path.read_text())
        stages = s["stages"]
        if "init" in stages and not init_done and s["pools"] == ["sentiment", "sentiment-extra"]:
            lines.append(row("1.1.0 encoder, head on both pools, no fine-tuning", "", stages["init"]["sum"], "0"))
            enc.append(row("1.1.0 encoder (no fine-tuning)", "", stages["init"]["encoder"], "0"))
            init_done = True
        final = stages[stage_name or ("distilled" if "distilled" in stages else "fine-tuned")]
        minutes = f"{s['minutes_training'] - (s['distillation'] or {}).get('minutes', 0) if stage_name else s['minutes_training']:.0f}"
        # Runs from before distillation left out the val files' texts: marked (see VAL_TEXTS_NOTE).
        mark = " †" if s.get("distillation") and s["distillation"]["kept"] and not s["distillation"].get("left_out_as_val") and not stage_name else ""
        lines.append(row(f"`{tag}`{mark}: {what}", f"`{on}`" if on else "1.1.0", final["sum"], minutes))
        enc.append(row(f"`{tag}`{mark}", f"`{on}`" if on else "1.1.0", final["encoder"], minutes))
    return lines, enc


def render(tags: list[str]) -> str:
    lines, enc = tables(tags)
    return "\n".join(
        [
            "# Ablations (`make model-ablation`)",
            "",
            "Generated by models/train/ablation.py from ablations/<tag>.json; see its docstring for the method.",
            "Accuracy per val split; worst ECE is the largest cross-fitted ECE over the six val sources",
            "(ChnSentiCorp's 5 rows left out). train min: minutes of fine-tuning and distillation, without the",
            "pre-training step.",
            "",
            "Encoder + n-gram head (what ships):",
            "",
            *lines,
            "",
            "Encoder alone:",
            "",
            *enc,
            "",
            VAL_TEXTS_NOTE,
            "",
        ]
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", help="tags to run (default: all)")
    p.add_argument("--render", action="store_true", help="only rewrite ABLATION.md from the JSON files")
    args = p.parse_args()
    tags = [t for t, *_ in RUNS]
    if not args.render:
        model_1_1_0()
        for _, name, extra in REFERENCES:
            if not args.only or name in args.only:
                cmd = [sys.executable, str(HERE / "evaluate.py"), *extra, "--json", str(OUT / f"{name}.json")]
                print("+", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True, cwd=HERE)
        for tag, _, _, extra in RUNS:
            if not args.only or tag in args.only:
                run(tag, extra)
    OUT.mkdir(exist_ok=True)
    table = render(tags)
    (OUT / "ABLATION.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
