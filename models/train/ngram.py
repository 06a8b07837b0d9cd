"""A hashed n-gram head beside the BERT encoder, inside the same ONNX graph.

The encoder is trained from scratch on ~68k reviews (no pretrained Chinese weights can be had
here), and at that size a linear model over token n-grams knows things it does not: on val the
n-gram model alone is about as accurate as the encoder, and their errors differ. So the shipped
graph adds the two in logit space:

    logits = bert_logits + alpha * [-s/2, +s/2],   s = (sum of w[g] over the text's n-grams g) / sqrt(tokens) + b

where the n-grams are the WordPiece ids (unigrams) and hashed id bigrams and trigrams, [CLS] and
[SEP] included (they mark the start and the end of the text). The head reads only input_ids and
attention_mask, so the model keeps the BERT-family interface and a server needs no change. Its
table is int8 with one scale (1 MB for 2^20 buckets), the same in the fp32 and int8 files.

`features` and `scores` here compute exactly what the ONNX nodes added by `attach` compute; the
training pipeline checks the two against each other.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import scipy.sparse as sp
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression

import senti_export as sx

# Multiplicative hashes of the id bigram (a*V + b) and trigram ((a*V + b)*V + c), taken modulo the
# buckets left after the vocabulary's unigram rows. With V = 21,128 every product stays below 2^62.
BIGRAM_MULTIPLIER = 2654435761
TRIGRAM_MULTIPLIER = 40503
INT64_MAX = np.iinfo(np.int64).max


def _hashed(ids: np.ndarray, vocab: int, buckets: int) -> np.ndarray:
    """Bucket of every unigram, bigram and trigram of one text's ids."""
    rest = buckets - vocab
    bigrams = vocab + (ids[:-1] * vocab + ids[1:]) * BIGRAM_MULTIPLIER % rest
    trigrams = vocab + ((ids[:-2] * vocab + ids[1:-1]) * vocab + ids[2:]) * TRIGRAM_MULTIPLIER % rest
    return np.concatenate([ids, bigrams, trigrams])


def features(id_lists, vocab: int, buckets: int) -> sp.csr_matrix:
    """Counts of each bucket, divided by the square root of the text's length in tokens."""
    rows, cols, vals = [], [], []
    for row, ids in enumerate(id_lists):
        ids = np.asarray(ids, dtype=np.int64)
        hashed = _hashed(ids, vocab, buckets)
        rows.append(np.full(len(hashed), row))
        cols.append(hashed)
        vals.append(np.full(len(hashed), 1.0 / math.sqrt(len(ids))))
    shape = (len(id_lists), buckets)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)


class NgramHead:
    """The fitted head: int8 table, its scale, the bias, and the weight against the encoder."""

    def __init__(self, table: np.ndarray, scale: float, bias: float, vocab: int, alpha: float = 1.0):
        self.table, self.scale, self.bias, self.vocab, self.alpha = table, scale, bias, vocab, alpha

    @property
    def buckets(self) -> int:
        return len(self.table)

    def scores(self, id_lists) -> np.ndarray:
        """s for each text (before alpha), with the quantised table, as the graph computes it."""
        x = features(id_lists, self.vocab, self.buckets)
        return (x @ self.table.astype(np.float64)) * self.scale + self.bias

    def delta(self, id_lists) -> np.ndarray:
        """What the head adds to the encoder's [negative, positive] logits."""
        s = self.alpha * self.scores(id_lists)
        return np.stack([-s / 2, s / 2], axis=1).astype(np.float32)


def fit(train_ids, train_labels, vocab: int, buckets: int, c: float, seed: int, weights=None) -> tuple[NgramHead, dict]:
    """L2 logistic regression (liblinear) on the hashed features, each row with its weight (None:
    1), then an int8 table. The held-out figure comes from a fit on 90% of train, measured on the
    other 10%."""
    x = features(train_ids, vocab, buckets)
    weights = np.ones(len(train_labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    held = np.random.default_rng(seed).random(len(train_labels)) < 0.1
    probe = LogisticRegression(C=c, solver="liblinear", max_iter=2000).fit(x[~held], train_labels[~held], sample_weight=weights[~held])
    held_accuracy = float((probe.predict(x[held]) == train_labels[held]).mean())
    model = LogisticRegression(C=c, solver="liblinear", max_iter=2000).fit(x, train_labels, sample_weight=weights)
    weights = model.coef_[0]
    scale = float(np.abs(weights).max() / 127)
    table = np.round(weights / scale).astype(np.int8)
    head = NgramHead(table, scale, float(model.intercept_[0]), vocab)
    info = {
        "buckets": buckets,
        "c": c,
        "train_held_out_accuracy": held_accuracy,
        "nonzero_buckets": int((table != 0).sum()),
    }
    return head, info


def best_alpha(bert_logits: np.ndarray, s: np.ndarray, labels: np.ndarray) -> float:
    """The weight of the head against the encoder, alpha >= 0: for each alpha on a grid (0, then
    0.01 to 100 in log steps), the temperature that best fits val, and the alpha whose sum has the
    lowest log-loss (a smooth criterion, not accuracy, so one scalar does not chase val's noise).
    Never negative: a head that points the wrong way would be worse than no head."""
    best, best_loss = 0.0, math.inf
    for alpha in np.concatenate([[0.0], np.logspace(-2, 2, 81)]):
        logits = bert_logits + np.stack([-alpha * s / 2, alpha * s / 2], axis=1)
        loss = sx.nll(logits, labels, sx.fit_temperature(logits, labels))
        if loss < best_loss:
            best, best_loss = float(alpha), loss
    return best


def cross_fitted_accuracy(bert_logits: np.ndarray, s: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the sum with alpha fitted on one half of val and measured on the other."""
    idx = np.arange(len(labels))
    hits = 0
    for fit_sel in (idx % 2 == 0, idx % 2 == 1):
        a = best_alpha(bert_logits[fit_sel], s[fit_sel], labels[fit_sel])
        test = ~fit_sel
        pred = (bert_logits[test, 1] - bert_logits[test, 0] + a * s[test]) > 0
        hits += int((pred == labels[test]).sum())
    return hits / len(labels)


def attach(path_in, path_out, head: NgramHead) -> None:
    """Adds the head's nodes to an exported BERT graph; the output keeps its name (`logits`)."""
    model = onnx.load(str(path_in))
    graph = model.graph
    logits = graph.output[0].name
    encoder_out = "encoder_logits"
    for node in graph.node:
        node.output[:] = [encoder_out if o == logits else o for o in node.output]

    def const(name, value, dtype):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), f"ngram/{name}"))
        return f"ngram/{name}"

    def node(op, inputs, name, **attrs):
        graph.node.append(helper.make_node(op, inputs, [f"ngram/{name}"], name=f"ngram/{name}", **attrs))
        return f"ngram/{name}"

    ids, mask = "input_ids", "attention_mask"
    axis1 = const("axis1", [1], np.int64)
    vocab = const("vocab", head.vocab, np.int64)
    rest = const("rest", head.buckets - head.vocab, np.int64)

    def cut(x, start, end, name):
        return node("Slice", [x, const(f"{name}_start", [start], np.int64), const(f"{name}_end", [end], np.int64), axis1], name)

    def bucket(key, multiplier, name):
        hashed = node("Mod", [node("Mul", [key, const(f"{name}_mul", multiplier, np.int64)], f"{name}_mul_out"), rest], f"{name}_mod")
        return node("Add", [hashed, vocab], name)

    maskf = node("Cast", [mask], "maskf", to=TensorProto.FLOAT)
    a2, b2 = cut(ids, 0, -1, "a2"), cut(ids, 1, INT64_MAX, "b2")
    key2 = node("Add", [node("Mul", [a2, vocab], "a2v"), b2], "key2")
    a3, b3, c3 = cut(ids, 0, -2, "a3"), cut(ids, 1, -1, "b3"), cut(ids, 2, INT64_MAX, "c3")
    key3 = node("Add", [node("Mul", [node("Add", [node("Mul", [a3, vocab], "a3v"), b3], "ab3"), vocab], "ab3v"), c3], "key3")
    index = node("Concat", [ids, bucket(key2, BIGRAM_MULTIPLIER, "h2"), bucket(key3, TRIGRAM_MULTIPLIER, "h3")], "index", axis=1)
    present = node("Concat", [maskf, cut(maskf, 1, INT64_MAX, "m2"), cut(maskf, 2, INT64_MAX, "m3")], "present", axis=1)
    table = const("table", head.table, np.int8)
    weights = node("Cast", [node("Gather", [table, index], "gathered", axis=0)], "weights", to=TensorProto.FLOAT)
    total = node("ReduceSum", [node("Mul", [weights, present], "masked"), axis1], "total", keepdims=1)
    length = node("Sqrt", [node("ReduceSum", [maskf, axis1], "tokens", keepdims=1)], "sqrt_tokens")
    scaled = node("Div", [node("Mul", [total, const("scale", head.alpha * head.scale, np.float32)], "scaled_total"), length], "per_root")
    score = node("Add", [scaled, const("bias", head.alpha * head.bias, np.float32)], "score")
    delta = node("Mul", [score, const("halves", [-0.5, 0.5], np.float32)], "delta")
    graph.node.append(helper.make_node("Add", [encoder_out, delta], [logits], name="ngram/logits"))
    onnx.checker.check_model(model)
    onnx.save(model, str(path_out))
