"""Accuracy and calibration of a senti model folder, or of the naive Bayes baseline, on every val file.

    python evaluate.py --model DIR [--variant int8]   # a model folder as the server loads it: its
                                                       # tokenizer.json, max_length, ONNX file, temperature
    python evaluate.py --naive-bayes [--pools ...]     # multinomial naive Bayes over binary character
                                                       # 1-2-grams, trained on the pools' train files
    python evaluate.py --latency DIR [DIR ...]         # batch-1 ms per sentence of each folder's int8 graph,
                                                       # alternating folders for --rounds rounds
    python evaluate.py --ngram-head [--balance S ...]  # the n-gram head alone (ngram.py, as train.py fits
                                                       # it on the pools; sources S class-balanced), T fitted on val

Prints one row per val source (rows, accuracy, ECE with 15 bins at the manifest's temperature) and
writes the same as JSON with --json. Reads ../shared/data; needs the training environment.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tomllib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "export"))
import senti_export as sx  # noqa: E402

VAL_POOLS = ["sentiment", "sentiment-extra"]


def read(path: Path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows]), [r["source"] for r in rows]


def val_sets(data: Path):
    texts, labels, sources = [], [], []
    for pool in VAL_POOLS:
        t, y, s = read(data / pool / "val.tsv")
        texts += t
        labels.append(y)
        # The original val is reported as a whole too, under its pool name.
        sources += s
    return texts, np.concatenate(labels), sources


def pool_of(data: Path):
    return {pool: read(data / pool / "val.tsv")[2] for pool in VAL_POOLS}


def report(logits, labels, sources, temperature, data: Path) -> dict:
    out = sx.by_source(logits, labels, sources, temperature)
    start = 0
    for pool, pool_sources in pool_of(data).items():
        sel = np.zeros(len(labels), bool)
        sel[start : start + len(pool_sources)] = True
        start += len(pool_sources)
        part = sx.by_source(logits[sel], labels[sel], ["x"] * int(sel.sum()), temperature)["all"]
        out[f"pool:{pool}"] = part
    return out


def print_table(result: dict) -> None:
    print(f"{'source':34} {'rows':>6} {'accuracy':>9} {'ECE':>7}")
    for name, r in result.items():
        print(f"{name:34} {r['rows']:6d} {r['accuracy']:9.4f} {r['ece']:7.4f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    p.add_argument("--model", type=Path)
    p.add_argument("--variant")
    p.add_argument("--naive-bayes", action="store_true")
    p.add_argument("--pools", nargs="+", default=VAL_POOLS, help="train files of the naive Bayes baseline")
    p.add_argument("--ngram-head", action="store_true")
    p.add_argument("--latency", nargs="+", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--balance", nargs="*", default=["smp2020_usual"])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    texts, labels, sources = val_sets(args.data)
    if args.latency:
        # The first 1,024 texts of each val file, through each folder's own tokenizer and max_length.
        sample = texts[:1024] + texts[len(read(args.data / "sentiment" / "val.tsv")[0]) :][:1024]
        from tokenizers import Tokenizer

        runs, rounds = {}, []
        for folder in args.latency:
            manifest = tomllib.loads((folder / "model.toml").read_text(encoding="utf-8"))
            ids = sx.encode(Tokenizer.from_file(str(folder / manifest["tokenizer"])), sample, manifest["max_length"])
            runs[folder] = (folder / manifest["variants"][args.variant or "int8"], ids)
        for r in range(args.rounds):
            for folder, (graph, ids) in runs.items():
                lat = sx.measure_latency(graph, ids, seconds=6)
                rounds.append({"round": r + 1, "model": str(folder), "graph": graph.name, "sha256": sx.sha256_file(graph)} | lat)
                print(f"round {r + 1} {str(folder):40} batch 1 {lat['batch1_ms_per_sentence']:.3f} ms  batch 32 {lat['batch32_ms_per_sentence']:.3f} ms", flush=True)
        if args.json:
            args.json.write_text(json.dumps({"variant": args.variant or "int8", "rounds": rounds}, indent=2) + "\n")
        return
    if args.naive_bayes:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.naive_bayes import MultinomialNB

        train_texts, train_labels = [], []
        for pool in args.pools:
            t, y, _ = read(args.data / pool / "train.tsv")
            train_texts += t
            train_labels.append(y)
        vec = CountVectorizer(analyzer="char", ngram_range=(1, 2), binary=True)
        nb = MultinomialNB().fit(vec.fit_transform(train_texts), np.concatenate(train_labels))
        logits = nb.predict_log_proba(vec.transform(texts))
        result = report(logits, labels, sources, 1.0, args.data)
    elif args.ngram_head:
        import ngram
        import train

        tok = sx.build_bert_chinese_tokenizer(args.data / "vocab" / "bert-base-chinese-vocab.txt")
        train_texts, train_labels, train_sources = [], [], []
        for pool in args.pools:
            t, y, src = read(args.data / pool / "train.tsv")
            train_texts += t
            train_labels.append(y)
            train_sources += src
        train_labels = np.concatenate(train_labels)
        weights = train.class_weights(train_labels, train_sources, args.balance)
        head, _ = ngram.fit(sx.encode(tok, train_texts, 512), train_labels, 21128, 1 << 20, 8.0, 20261123, weights)
        s_val = head.scores(sx.encode(tok, texts, 512))
        logits = np.stack([-s_val / 2, s_val / 2], axis=1)
        result = report(logits, labels, sources, sx.fit_temperature(logits, labels), args.data)
    else:
        manifest = tomllib.loads((args.model / "model.toml").read_text(encoding="utf-8"))
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(args.model / manifest["tokenizer"]))
        ids = sx.encode(tok, texts, manifest["max_length"])
        variant = args.variant or manifest["default_variant"]
        logits = sx.ort_logits(sx.ort_session(args.model / manifest["variants"][variant]), ids)
        result = report(logits, labels, sources, manifest["temperature"], args.data)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
