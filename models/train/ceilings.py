"""Two ceilings of the shipped model, measured on val without training anything.

1. An ensembled teacher: the mean encoder logits of the shipped model and of the ablation rows in
   MEMBERS (their final weights, cached by `make model-ablation`), each with the n-gram head and
   alpha refitted; and how often the members' answers and mistakes coincide.
2. Calibration under the domain shift: the shipped alpha and temperature per val source, Amazon.cn
   per length band, the temperature each source would need on its own (and what the others' ECE
   becomes at Amazon.cn's), and a four-weight calibrator that also sees the encoder's and the
   head's margins and whether they disagree, cross-fitted (even / odd rows, as the card's ECE)
   and leave-one-source-out.

    cd models/train && ../../.cache/venv-train/bin/python ceilings.py     # writes ablations/ceilings.json
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from scipy.optimize import minimize
from transformers import BertForSequenceClassification

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "export"))
import ngram  # noqa: E402
import senti_export as sx  # noqa: E402
import train  # noqa: E402

SOURCES = {"douban_book": "Douban", "nlpcc2014_train": "Amazon.cn", "smp2020_usual": "Weibo"}
MEMBERS = ["continue-mlm-token", "continue-mlm-word", "continue-mlm-3", "augment", "distill-no-val"]
LENGTH_BANDS = [("0-19 characters", 0, 20), ("20-49 characters", 20, 50), ("50-119 characters", 50, 120), ("120 characters or more", 120, None)]


def shipped_parts(folder: Path, val_ids):
    """The shipped fp32 graph's encoder logits and the n-gram head's margin (at the shipped alpha)."""
    graph = onnx.load(str(folder / "model.onnx"))
    for name in ("encoder_logits", "ngram/delta"):
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    encoder, delta = sx.ort_outputs(sx.ort_session(graph.SerializeToString()), val_ids, ["encoder_logits", "ngram/delta"])
    return encoder, 2 * delta[:, 1]


def member_logits(tag: str, config, encoder_ids):
    """Encoder logits of one ablation row's final weights, from the cache its JSON names."""
    key = json.loads((HERE / "ablations" / f"{tag}.json").read_text())["finetune_cache_key"]
    path = HERE.parents[1] / ".cache" / "finetune" / f"ft-{key}.pt"
    if not path.exists():
        sys.exit(f"{path} is missing: run `python ablation.py --only {tag}` first")
    model = BertForSequenceClassification(config)
    model.load_state_dict(torch.load(path, weights_only=False)["state"])
    model.eval()
    return train.torch_logits(model, encoder_ids)


def two_class(margin):
    """Logits [-m/2, m/2] from the margin of positive over negative."""
    return np.stack([-margin / 2, margin / 2], axis=1)


def two_class_probs(p):
    return np.stack([1 - p, p], axis=1)


def sigmoid(x):
    return 1 / (1 + np.exp(-np.clip(x, -60, 60)))


def accuracy_row(margin, labels, splits) -> dict:
    return {name: float(((margin[sel] > 0) == labels[sel]).mean()) for name, sel in splits}


def ece_row(probs, labels, splits) -> dict:
    """ECE, mean confidence and accuracy per split; probs: probability of positive."""
    return {
        name: {
            "rows": int(sel.sum()),
            "ece": sx.expected_calibration_error(two_class_probs(probs[sel]), labels[sel]),
            "confidence": float(np.maximum(probs[sel], 1 - probs[sel]).mean()),
            "accuracy": float(((probs[sel] > 0.5) == labels[sel]).mean()),
        }
        for name, sel in splits
    }


def fit_calibrator(features, labels, sel, temperature: float):
    """Weights of a logistic map from the features to the logit of positive (NLL on rows `sel`),
    starting from the single temperature on the first two (the margins)."""
    sign = 2 * labels[sel] - 1

    def loss(w):
        return float(np.mean(np.logaddexp(0, -sign * (features[sel] @ w))))

    start = np.zeros(features.shape[1])
    start[:2] = 1 / temperature
    return minimize(loss, start, method="L-BFGS-B").x


def main():
    args = train.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = sx.build_bert_chinese_tokenizer(args.data / "vocab" / "bert-base-chinese-vocab.txt")
    config = train.bert_config(args, tokenizer)
    texts, labels, sources, pools = train.load_pools(args, "val")
    sources = np.asarray(sources)
    val_ids = sx.encode(tokenizer, texts, args.max_length)
    folder = HERE.parent / "senti-zh-small"
    metrics = json.loads((folder / "metrics.json").read_text())
    encoder, head_margin = shipped_parts(folder, val_ids)  # head_margin: at the shipped alpha
    scores = head_margin / metrics["ngram_head"]["alpha"]
    source_splits = [("val (original)", pools == "sentiment"), *[(n, sources == s) for s, n in SOURCES.items()]]
    splits = [*source_splits, ("extra val", pools == "sentiment-extra")]

    # 1. The ensemble.
    members = {"shipped (continue-mlm)": encoder} | {tag: member_logits(tag, config, train.encoder_view(val_ids, args)) for tag in MEMBERS}

    def with_head(logits):
        alpha = ngram.best_alpha(logits, scores, labels)
        return logits[:, 1] - logits[:, 0] + alpha * scores

    margins = {name: with_head(logits) for name, logits in members.items()}
    ensemble = {name: accuracy_row(m, labels, splits) for name, m in margins.items()}
    ensemble[f"mean of the {len(members)}"] = accuracy_row(with_head(np.mean(list(members.values()), axis=0)), labels, splits)
    right = {name: (m > 0) == labels for name, m in margins.items()}
    shipped_wrong = ~right["shipped (continue-mlm)"]
    overlap = {
        "mean pairwise agreement of answers": float(np.mean([((margins[a] > 0) == (margins[b] > 0)).mean() for a, b in itertools.combinations(margins, 2)])),
        "shipped model's mistakes every member makes": float((~np.any(list(right.values()), axis=0))[shipped_wrong].sum() / shipped_wrong.sum()),
        "val texts no member gets right": float((~np.any(list(right.values()), axis=0)).mean()),
    }

    # 2. Calibration, on the shipped margin (encoder + head at the shipped alpha) and T.
    margin_e = encoder[:, 1] - encoder[:, 0]
    margin = margin_e + head_margin
    t = metrics["variants"][metrics["default_variant"]]["calibration"]["temperature"]  # the manifest's
    shipped = sigmoid(margin / t)
    amazon, length = sources == "nlpcc2014_train", np.array([len(text) for text in texts])
    bands = [(name, amazon & (length >= lo) & (length < (hi or length.max() + 1))) for name, lo, hi in LENGTH_BANDS]
    need = {name: sx.fit_temperature(two_class(margin[sel]), labels[sel]) for name, sel in source_splits}
    disagree = (np.sign(margin_e) != np.sign(head_margin)).astype(float)
    features = np.stack([margin_e, head_margin, margin_e * disagree, head_margin * disagree], 1)
    rows = np.arange(len(labels))
    cross_fitted, left_out = np.zeros(len(labels)), np.zeros(len(labels))
    for fit in (rows % 2 == 0, rows % 2 == 1):
        cross_fitted[~fit] = sigmoid(features[~fit] @ fit_calibrator(features, labels, fit, t))
    for _, sel in source_splits:
        left_out[sel] = sigmoid(features[sel] @ fit_calibrator(features, labels, ~sel, t))
    calibration = {
        "shipped T": {"temperature": t} | ece_row(shipped, labels, source_splits),
        "Amazon.cn by length at the shipped T": ece_row(shipped, labels, bands),
        "T each source would need": need,
        "single T = Amazon.cn's": {"temperature": need["Amazon.cn"]} | ece_row(sigmoid(margin / need["Amazon.cn"]), labels, source_splits),
        "disagreement-aware, cross-fitted": ece_row(cross_fitted, labels, source_splits),
        "disagreement-aware, leave-one-source-out": ece_row(left_out, labels, source_splits),
    }

    result = {
        "model": {"file": "model.onnx", "sha256": sx.sha256_file(folder / "model.onnx")},
        "ensemble_accuracy": ensemble,
        "ensemble_overlap": overlap,
        "calibration": calibration,
    }
    (HERE / "ablations" / "ceilings.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    sys.argv = sys.argv[:1]  # train.parse_args() reads train.py's defaults; this script takes no arguments
    main()
