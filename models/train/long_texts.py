"""How should the encoder read a text longer than its 256-token window? Measured on the val texts
(both val files) longer than 256 tokens:

    python long_texts.py --model DIR [--json FILE]   # DIR/model.onnx: a graph train.py exported

The encoder's weights are read back from the fp32 graph (train.state_from_onnx) into PyTorch, and
each way of choosing 256 of a text's tokens is scored by the encoder alone (the n-gram head reads
every token whatever the window). A last row scores the folder as the server runs it: its default
ONNX graph (with the head, if it has one) on the ids cut at its manifest's max_length. Prints
accuracy per way, on all long texts and per val file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import torch
from transformers import BertForSequenceClassification

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "export"))
import senti_export as sx  # noqa: E402
import train  # noqa: E402


def cut(ids, n):
    return ids if len(ids) <= n else ids[: n - 1] + [102]


WAYS = {
    "first 256 (1.1.0)": lambda ids: cut(ids, 256),
    "first 128 + last 128": lambda ids: train.window(ids, 256, 128),
    "first 64 + last 192": lambda ids: train.window(ids, 256, 64),
    "first 192 + last 64": lambda ids: train.window(ids, 256, 192),
    "[CLS] + last 255": lambda ids: [101] + ids[-255:],
    "first 512 (positions past 256 barely trained)": lambda ids: cut(ids, 512),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--max-tokens", type=int, default=512, help="what the server passes (the texts are cut here first)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    torch.set_num_threads(2)
    tok = sx.build_bert_chinese_tokenizer(args.data / "vocab" / "bert-base-chinese-vocab.txt")
    ns = argparse.Namespace(data=args.data, size="small", pools=train.VAL_POOLS)
    model = BertForSequenceClassification(train.bert_config(ns, tok))
    missing, unexpected = model.load_state_dict(train.state_from_onnx(args.model / "model.onnx"), strict=False)
    assert not unexpected, unexpected
    texts, labels, _, pools = train.load_pools(ns, "val")
    ids = sx.encode(tok, texts, args.max_tokens)
    long = np.flatnonzero([len(i) > 256 for i in ids])
    print(f"{len(long)} val texts longer than 256 tokens ({(pools[long] == 'sentiment').sum()} original, {(pools[long] == 'sentiment-extra').sum()} extra)")
    print(f"{'way':48} {'all':>14} {'original':>9} {'extra':>9}")
    result = {"texts": len(long), "by_pool": {pool: int((pools[long] == pool).sum()) for pool in train.VAL_POOLS}, "ways": {}}

    def show(name, logits):
        hit = logits.argmax(1) == labels[long]
        by = {pool: float(hit[pools[long] == pool].mean()) for pool in train.VAL_POOLS}
        result["ways"][name] = {"accuracy": float(hit.mean()), "right": int(hit.sum())} | by
        print(f"{name:48} {hit.mean():.4f} ({hit.sum():3d}) {by['sentiment']:9.4f} {by['sentiment-extra']:9.4f}")

    for name, way in WAYS.items():
        show(name, sx.torch_logits(model, [way(ids[i]) for i in long], 32))
    manifest = tomllib.loads((args.model / "model.toml").read_text(encoding="utf-8"))
    served = sx.encode(tok, [texts[i] for i in long], manifest["max_length"])
    graph = args.model / manifest["variants"][manifest["default_variant"]]
    show(f"as served ({graph.name}, max_length {manifest['max_length']})", sx.ort_logits(sx.ort_session(graph), served))
    result["served"] = {"graph": graph.name, "sha256": sx.sha256_file(graph), "max_length": manifest["max_length"]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
