"""Two ceilings of the shipped model measured on val without training anything.

1. An ensembled teacher: the mean encoder logits of the shipped model and of every ablation row's
   final checkpoint still in .cache/finetune (each + the n-gram head, alpha and T refitted). What
   an ensemble of these could hand down by distillation is at most what it scores itself.
2. Calibration under the domain shift: the shipped single temperature, the temperature each
   source would need on its own (and what the others' ECE becomes at Amazon.cn's), and a
   four-parameter calibrator that sees the encoder's and the head's margins and whether they
   disagree, cross-fitted (even / odd rows, as the card's ECE) and leave-one-source-out.

    cd models/train && ../../.cache/venv-train/bin/python ceilings.py     # writes ablations/ceilings.json

Needs the shipped model (models/senti-zh-small) and, for more than one ensemble member, the
checkpoints that `make model-ablation` caches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from scipy.optimize import minimize
from transformers import BertForSequenceClassification

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "export"))
import ablation  # noqa: E402
import ngram  # noqa: E402
import senti_export as sx  # noqa: E402
import train  # noqa: E402

SOURCES = {"douban_book": "Douban", "nlpcc2014_train": "Amazon.cn", "smp2020_usual": "Weibo"}


def shipped_parts(folder: Path, val_ids):
    """The shipped fp32 graph's encoder logits and the n-gram head's score (before alpha)."""
    graph = onnx.load(str(folder / "model.onnx"))
    for name in ("encoder_logits", "ngram/delta"):
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    order = sorted(range(len(val_ids)), key=lambda i: len(val_ids[i]))
    encoder, delta = np.zeros((len(val_ids), 2), np.float32), np.zeros((len(val_ids), 2), np.float32)
    for start in range(0, len(order), 64):
        rows = order[start : start + 64]
        ids, mask, types = sx.pad_batch([val_ids[i] for i in rows])
        encoder[rows], delta[rows] = session.run(["encoder_logits", "ngram/delta"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    alpha = json.loads((folder / "metrics.json").read_text())["ngram_head"]["alpha"]
    return encoder, delta[:, 1] * 2 / alpha


def member_checkpoints():
    """(tag, path) of each ablation row's final weights that are still cached."""
    cache = HERE.parents[1] / ".cache" / "finetune"
    out = []
    for tag, *_ in ablation.RUNS:
        result = HERE / "ablations" / f"{tag}.json"
        if tag == "continue-mlm" or not result.exists():  # continue-mlm is the shipped model itself
            continue
        path = cache / f"ft-{json.loads(result.read_text())['finetune_cache_key']}.pt"
        if path.exists():
            out.append((tag, path))
    return out


def with_head(encoder, scores, labels):
    alpha = ngram.best_alpha(encoder, scores, labels)
    return encoder + np.stack([-alpha * scores / 2, alpha * scores / 2], axis=1)


def accuracy_row(logits, labels, sources, pools) -> dict:
    pred = logits.argmax(1) == labels
    row = {"val (original)": float(pred[pools == "sentiment"].mean())}
    row |= {name: float(pred[sources == source].mean()) for source, name in SOURCES.items()}
    row["extra val"] = float(pred[pools == "sentiment-extra"].mean())
    return row


def ece_row(probs, labels, splits) -> dict:
    """ECE, mean confidence and accuracy per val split; probs: probability of positive."""
    two = np.stack([1 - probs, probs], axis=1)
    out = {}
    for name, sel in splits:
        out[name] = {
            "ece": sx.expected_calibration_error(two[sel], labels[sel]),
            "confidence": float(np.maximum(probs[sel], 1 - probs[sel]).mean()),
            "accuracy": float(((probs[sel] > 0.5) == labels[sel]).mean()),
        }
    return out


def fit_calibrator(features, labels, sel):
    """Weights of a logistic map from the features to the logit of positive (NLL on rows `sel`)."""
    sign = 2 * labels[sel] - 1

    def loss(w):
        return float(np.mean(np.logaddexp(0, -sign * (features[sel] @ w))))

    start = np.zeros(features.shape[1])
    start[:2] = 1 / 2.8
    return minimize(loss, start, method="L-BFGS-B").x


def sigmoid(x):
    return 1 / (1 + np.exp(-np.clip(x, -60, 60)))


def main():
    sys.argv = sys.argv[:1]
    args = train.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = sx.build_bert_chinese_tokenizer(args.data / "vocab" / "bert-base-chinese-vocab.txt")
    config = train.bert_config(args, tokenizer)
    texts, labels, sources, pools = train.load_pools(args, "val")
    sources = np.asarray(sources)
    val_ids = sx.encode(tokenizer, texts, args.max_length)
    folder = HERE.parent / "senti-zh-small"
    encoder, scores = shipped_parts(folder, val_ids)
    splits = [("val (original)", pools == "sentiment"), *[(n, sources == s) for s, n in SOURCES.items()]]

    members = {"shipped (continue-mlm)": encoder}
    for tag, path in member_checkpoints():
        model = BertForSequenceClassification(config)
        model.load_state_dict(torch.load(path, weights_only=False)["state"])
        model.eval()
        members[tag] = train.torch_logits(model, train.encoder_view(val_ids, args))
        print(f"{tag}: logits done", flush=True)
    ensemble = {name: accuracy_row(with_head(e, scores, labels), labels, sources, pools) for name, e in members.items()}
    ensemble[f"mean of the {len(members)}"] = accuracy_row(with_head(np.mean(list(members.values()), axis=0), scores, labels), labels, sources, pools)

    # Calibration, on the shipped logits (encoder + head at the shipped alpha).
    margin_e = encoder[:, 1] - encoder[:, 0]
    alpha = ngram.best_alpha(encoder, scores, labels)
    margin_h = alpha * scores
    margin = margin_e + margin_h
    t = sx.fit_temperature(np.stack([-margin / 2, margin / 2], 1), labels)
    calibration = {"single T (as shipped)": {"temperature": t} | ece_row(sigmoid(margin / t), labels, splits)}
    amazon, length, probs = sources == "nlpcc2014_train", np.array([len(text) for text in texts]), sigmoid(margin / t)
    calibration["Amazon.cn by length at the shipped T"] = {
        (f"{lo}-{hi - 1} characters" if hi < 100_000 else f"{lo} characters or more"): {"rows": int(sel.sum()), "confidence": float(np.maximum(probs[sel], 1 - probs[sel]).mean()), "accuracy": float(((probs[sel] > 0.5) == labels[sel]).mean())}
        for lo, hi in ((0, 20), (20, 50), (50, 120), (120, 100_000))
        for sel in [amazon & (length >= lo) & (length < hi)]
    }
    need = {}
    for name, sel in splits:
        need[name] = sx.fit_temperature(np.stack([-margin[sel] / 2, margin[sel] / 2], 1), labels[sel])
    calibration["T each source would need"] = need
    calibration["single T = Amazon.cn's"] = {"temperature": need["Amazon.cn"]} | ece_row(sigmoid(margin / need["Amazon.cn"]), labels, splits)
    disagree = (np.sign(margin_e) != np.sign(margin_h)).astype(float)
    features = np.stack([margin_e, margin_h, margin_e * disagree, margin_h * disagree], 1)
    rows = np.arange(len(labels))
    probs = np.zeros(len(labels))
    for fit in (rows % 2 == 0, rows % 2 == 1):
        probs[~fit] = sigmoid(features[~fit] @ fit_calibrator(features, labels, fit))
    calibration["disagreement-aware, cross-fitted"] = ece_row(probs, labels, splits)
    for name, sel in splits:
        probs[sel] = sigmoid(features[sel] @ fit_calibrator(features, labels, ~sel))
    calibration["disagreement-aware, leave-one-source-out"] = ece_row(probs, labels, splits)

    result = {"model": {"file": "model.onnx", "sha256": sx.sha256_file(folder / "model.onnx")}, "ensemble_accuracy": ensemble, "calibration": calibration}
    (HERE / "ablations" / "ceilings.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print("| ensemble member | " + " | ".join(next(iter(ensemble.values()))) + " |")
    for name, row in ensemble.items():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in row.values()) + " |")
    print("\n| calibration: ECE (confidence / accuracy) | " + " | ".join(["val (original)", *SOURCES.values()]) + " |")
    for name, row in calibration.items():
        if name == "Amazon.cn by length at the shipped T":
            print(f"| {name} | " + " | ".join(f"{k}: {v['confidence']:.3f} / {v['accuracy']:.3f}" for k, v in row.items()) + " |")
        elif name == "T each source would need":
            print(f"| {name} | " + " | ".join(f"T {v:.2f}" for v in row.values()) + " |")
        else:
            print(f"| {name} | " + " | ".join(f"{v['ece']:.3f} ({v['confidence']:.3f} / {v['accuracy']:.3f})" for k, v in row.items() if k != "temperature") + " |")


if __name__ == "__main__":
    main()
