"""Shared export code for senti models: ONNX export, int8 quantization, parity checks, calibration,
latency measurement and the model folder layout (model.toml + MODEL_CARD.md).

Both `models/train/train.py` (our own model) and `models/export/export.py` (a user's StructBERT or
BertForSequenceClassification checkpoint) write their model folder through this module, so the
server sees one layout whatever the model's origin.

The folder layout:
    model.onnx        fp32, opset 17, dynamic batch and sequence axes
    model.int8.onnx   the same graph with dynamically quantized int8 weights
    tokenizer.json    Hugging Face tokenizers format (loaded unchanged by the Rust `tokenizers` crate)
    model.toml        the manifest the server reads (see `write_manifest`)
    MODEL_CARD.md     written by the caller
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import numpy as np

LABELS = [("negative", "负面"), ("positive", "正面")]
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT_NAME = "logits"
OPSET = 17


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def build_bert_chinese_tokenizer(vocab_path: Path):
    """The bert-base-chinese WordPiece tokenizer, as Hugging Face's BertTokenizerFast builds it.

    Every Chinese character becomes its own token (BertNormalizer's handle_chinese_chars), text is
    lowercased, and [CLS] ... [SEP] wrap a single sentence. Truncation is not stored in the file: the
    server sets it from the manifest's `max_length`.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {}
    with open(vocab_path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab[line.rstrip("\n")] = i
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def encode(tokenizer, texts, max_length: int):
    """Token ids per text, truncated to max_length (special tokens included)."""
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return [e.ids for e in tokenizer.encode_batch(list(texts))]


def pad_batch(id_lists, pad_id: int = 0):
    """(input_ids, attention_mask, token_type_ids) as int64 arrays, right-padded."""
    width = max(len(ids) for ids in id_lists)
    input_ids = np.full((len(id_lists), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(id_lists), width), dtype=np.int64)
    for row, ids in enumerate(id_lists):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return input_ids, mask, np.zeros_like(input_ids)


# --------------------------------------------------------------------------------------------
# Export and quantization
# --------------------------------------------------------------------------------------------


def export_onnx(model, path: Path, vocab_size: int, window: tuple[int, int] | None = None) -> None:
    """Exports a BertForSequenceClassification-like module to ONNX with dynamic batch/sequence.

    window = (size, head): the graph reads texts of any length (up to the manifest's max_length)
    and gives the encoder at most `size` tokens of each: all of a text that fits, else its first
    `head` tokens and its last `size - head` (right-padded rows, each by its own length). Nodes
    added before the encoder, so the interface stays input_ids/attention_mask/token_type_ids ->
    logits and a server needs no change beyond passing max_length tokens."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            if window is not None:
                size, head = window
                length = attention_mask.sum(1, keepdim=True)  # [batch, 1]
                j = torch.cumsum(torch.ones_like(input_ids[:1]), 1) - 1  # [1, width]: 0, 1, ...
                if head < size:
                    tail = j - head + length - (size - head)
                    j = torch.where((length <= size) | (j < head), j, tail)
                else:
                    j = j.expand_as(input_ids)
                j = j[:, :size]
                input_ids = torch.gather(input_ids, 1, j)
                attention_mask = torch.gather(attention_mask, 1, j)
                token_type_ids = torch.gather(token_type_ids, 1, j)
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).logits

    model = model.eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab_size, (2, 16), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    types = torch.zeros_like(ids)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            Wrapper(model),
            (ids, mask, types),
            str(path),
            input_names=INPUT_NAMES,
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: axes for name in INPUT_NAMES} | {OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8 quantization of the MatMul and Gather weights (activations stay fp32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32_path),
        str(int8_path),
        weight_type=QuantType.QInt8,
        per_channel=False,
        op_types_to_quantize=["MatMul", "Gather"],
    )


def ort_session(path: Path | bytes, threads: int = 2):
    """A CPU session on a model file, or on a serialized graph (bytes)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def ort_logits(session, id_lists, batch_size: int = 64) -> np.ndarray:
    """Logits for every text, in input order, batched by similar length."""
    return ort_outputs(session, id_lists, [OUTPUT_NAME], batch_size)[0]


def ort_outputs(session, id_lists, names: list[str], batch_size: int = 64) -> list[np.ndarray]:
    """The named [batch, 2] graph outputs for every text, in input order, batched by similar length."""
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    out = [np.zeros((len(id_lists), 2), dtype=np.float32) for _ in names]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask, types = pad_batch([id_lists[i] for i in rows])
        values = session.run(names, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        for array, value in zip(out, values):
            array[rows] = value
    return out


def torch_logits(model, id_lists, batch_size: int = 64) -> np.ndarray:
    import torch

    model = model.eval()
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    out = np.zeros((len(id_lists), 2), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask, types = pad_batch([id_lists[i] for i in rows])
            logits = model(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                token_type_ids=torch.from_numpy(types),
            ).logits
            out[rows] = logits.numpy()
    return out


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising negative log-likelihood (golden-section search on log T)."""
    lo, hi = math.log(0.05), math.log(20.0)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(80):
        if nll(logits, labels, math.exp(a)) < nll(logits, labels, math.exp(b)):
            hi = b
        else:
            lo = a
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    return math.exp((lo + hi) / 2)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE over equal-width bins of the predicted label's probability."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi) if lo > 0.5 else (conf >= lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def calibrate(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Fits T on all of val; reports ECE honestly with 2-fold cross-fitting (fit on one half,
    measure on the other) so the 'after' figure is not measured on the data it was fitted on."""
    idx = np.arange(len(labels))
    halves = [idx % 2 == 0, idx % 2 == 1]
    ece_before = expected_calibration_error(softmax(logits), labels)
    ece_after_parts = []
    for fit_sel, test_sel in [(halves[0], halves[1]), (halves[1], halves[0])]:
        t = fit_temperature(logits[fit_sel], labels[fit_sel])
        ece_after_parts.append(
            (test_sel.sum(), expected_calibration_error(softmax(logits[test_sel], t), labels[test_sel]))
        )
    ece_after = sum(n * e for n, e in ece_after_parts) / sum(n for n, _ in ece_after_parts)
    temperature = fit_temperature(logits, labels)
    return {
        "temperature": temperature,
        "ece_before": ece_before,
        "ece_after_cross_fitted": float(ece_after),
        "nll_before": nll(logits, labels, 1.0),
        "nll_after": nll(logits, labels, temperature),
    }


def by_source(logits: np.ndarray, labels: np.ndarray, sources, temperature: float) -> dict:
    """Rows, accuracy and ECE (at `temperature`) of every source, and of all rows ("all")."""
    sources = np.asarray(sources)
    probs = softmax(logits, temperature)
    out = {}
    for source in [*sorted(set(sources.tolist())), "all"]:
        sel = np.ones(len(labels), bool) if source == "all" else sources == source
        out[source] = {
            "rows": int(sel.sum()),
            "accuracy": float((probs[sel].argmax(1) == labels[sel]).mean()),
            "ece": expected_calibration_error(probs[sel], labels[sel]),
        }
    return out


def by_source_cross_fitted(logits: np.ndarray, labels: np.ndarray, sources) -> dict:
    """ECE per source with T fitted on one half of all rows (every source mixed) and measured on
    the other half, both ways round; each row is scored with the T that did not see it."""
    idx = np.arange(len(labels))
    probs = np.zeros_like(logits, dtype=np.float64)
    for fit_sel in (idx % 2 == 0, idx % 2 == 1):
        t = fit_temperature(logits[fit_sel], labels[fit_sel])
        probs[~fit_sel] = softmax(logits[~fit_sel], t)
    sources = np.asarray(sources)
    out = {}
    for source in [*sorted(set(sources.tolist())), "all"]:
        sel = np.ones(len(labels), bool) if source == "all" else sources == source
        out[source] = expected_calibration_error(probs[sel], labels[sel])
    return out


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------


def measure_latency(path: Path, id_lists, threads: int = 2, seconds: float = 8.0) -> dict:
    """Milliseconds per sentence at batch 1 and batch 32 on real texts (median of runs)."""
    session = ort_session(path, threads)
    result = {}
    for batch in (1, 32):
        per_sentence = []
        deadline = time.perf_counter() + seconds
        pos = 0
        ort_logits(session, id_lists[:batch], batch)  # warm-up
        while time.perf_counter() < deadline:
            chunk = [id_lists[(pos + i) % len(id_lists)] for i in range(batch)]
            pos += batch
            start = time.perf_counter()
            ids, mask, types = pad_batch(chunk)
            session.run(
                [OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
            per_sentence.append((time.perf_counter() - start) * 1000 / batch)
        result[f"batch{batch}_ms_per_sentence"] = float(np.median(per_sentence))
    return result


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(
    folder: Path,
    *,
    name: str,
    version: str,
    description: str,
    max_length: int,
    temperature: float,
    default_variant: str,
    variants: dict,
) -> None:
    """Writes model.toml; the format is documented in docs/models.md and parsed by crates/model."""
    files = sorted({*variants.values(), "tokenizer.json"})
    lines = [
        "# senti model manifest: read by crates/model (see docs/models.md). Generated; do not edit by hand.",
        f'name = "{name}"',
        f'version = "{version}"',
        f'description = "{description}"',
        f"max_length = {max_length}",
        f"temperature = {temperature:.6f}",
        'tokenizer = "tokenizer.json"',
        f'default_variant = "{default_variant}"',
        "",
        "[variants]",
        *[f'{k} = "{v}"' for k, v in sorted(variants.items())],
        "",
        "[io]",
        *[f'{n} = "{n}"' for n in INPUT_NAMES],
        f'logits = "{OUTPUT_NAME}"',
        "",
        *[
            line
            for index, (label, zh) in enumerate(LABELS)
            for line in ("[[labels]]", f"index = {index}", f'name = "{label}"', f'name_zh = "{zh}"', "")
        ],
        "[sha256]",
        *[f'"{f}" = "{sha256_file(folder / f)}"' for f in files],
        "",
    ]
    (folder / "model.toml").write_text("\n".join(lines), encoding="utf-8")


def file_size_mb(path: Path) -> float:
    return os.path.getsize(path) / 1e6


# --------------------------------------------------------------------------------------------
# Parity snapshot for the Rust tests
# --------------------------------------------------------------------------------------------

PARITY_TEXTS = [
    "这家酒店非常好，服务周到",
    "太差了，再也不会来了",
    "物流很快，包装完好，东西也不错，下次还会再来买。",
    "等了两个小时才送到，饭菜都凉了，客服态度也很差",
    "屏幕显示效果一般，但是性价比还可以 OK",
    "iPhone 15 Pro 的电池续航真的让人失望!!!",
    "房间干净整洁，早餐种类丰富，前台服务热情，交通也方便，强烈推荐给大家。" * 3,
    # Longer than a 256-token window: the verdict is at the end.
    "这本书我是在朋友的推荐下买的，" + "书中讲了很多作者年轻时在各地旅行的经历，也写了不少关于家乡和亲人的回忆。" * 8 + "但说实话，读完之后很失望，内容空洞，不推荐。",
]


def write_parity(folder: Path, tokenizer_path: Path, variants: dict, max_length: int) -> None:
    """Writes parity.json: for fixed texts, the token ids (tokenizers in Python) and the logits
    (ONNX Runtime in Python) of every variant. crates/model's parity test checks that the Rust
    tokenizer gives the same ids and the Rust session the same logits."""
    import json

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    ids = encode(tok, PARITY_TEXTS, max_length)
    out = {"max_length": max_length, "texts": PARITY_TEXTS, "token_ids": ids, "logits": {}}
    for variant, file in variants.items():
        session = ort_session(folder / file)
        # One text at a time, so no padding is involved on the Python side.
        out["logits"][variant] = [ort_logits(session, [one], 1)[0].tolist() for one in ids]
    (folder / "parity.json").write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
