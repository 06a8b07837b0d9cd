"""The peer senti is measured against: the seed recipe's Flask app, rebuilt.

The recipe: a StructBERT sentiment model loaded once per process, a Flask app with one route,
`POST /analyze` {"text": "..."} -> {"text", "label" (正面/负面), "score"}, each instance run as
`gunicorn -w 1 --preload app:app` on its own port, several instances behind nginx least_conn
(benches/peers/peers.sh starts all of it). Two engines, chosen by environment variables:

  PEER_ENGINE=torch   the recipe as published: PyTorch through transformers, on a Hugging Face
                      checkpoint folder (PEER_MODEL: config.json, weights, vocab.txt), with
                      PyTorch's default number of threads.
  PEER_ENGINE=onnx    what a careful Python user would do: ONNX Runtime on the very ONNX file senti
                      serves (PEER_MODEL: a senti model folder with model.toml; PEER_VARIANT
                      fp32|int8, default the manifest's), PEER_THREADS intra-op threads per instance
                      (default 1: one instance per core), the `tokenizers` library on the folder's
                      tokenizer.json, and the manifest's temperature and labels.

Both truncate at the model's maximum length (PEER_MAX_LENGTH for torch, default 512; the
manifest's max_length for onnx). Every answer carries `x-peer-engine`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request

ENGINE = os.environ.get("PEER_ENGINE", "onnx")
MODEL = Path(os.environ["PEER_MODEL"])
LABELS_ZH = ["负面", "正面"]  # index order of the recipe's model and of senti's manifests


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


if ENGINE == "torch":
    import torch
    from transformers import BertForSequenceClassification, BertTokenizerFast

    MAX_LENGTH = int(os.environ.get("PEER_MAX_LENGTH", "512"))
    tokenizer = BertTokenizerFast(vocab_file=str(MODEL / "vocab.txt"))
    model = BertForSequenceClassification.from_pretrained(MODEL).eval()

    def classify(text: str) -> tuple[str, float]:
        inputs = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**inputs).logits[0].numpy()
        p = softmax(logits)
        return LABELS_ZH[int(p.argmax())], float(p.max())

elif ENGINE == "onnx":
    import onnxruntime as ort
    from tokenizers import Tokenizer

    manifest = tomllib.loads((MODEL / "model.toml").read_text(encoding="utf-8"))
    variant = os.environ.get("PEER_VARIANT") or manifest["default_variant"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("PEER_THREADS", "1"))
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL / manifest["variants"][variant]), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(MODEL / manifest["tokenizer"]))
    tokenizer.enable_truncation(manifest["max_length"])
    tokenizer.no_padding()
    io = manifest["io"]
    temperature = float(manifest["temperature"])
    labels_zh = [label["name_zh"] for label in sorted(manifest["labels"], key=lambda label: label["index"])]

    def classify(text: str) -> tuple[str, float]:
        encoding = tokenizer.encode(text)
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds = {
            io["input_ids"]: ids,
            io["attention_mask"]: np.ones_like(ids),
            io["token_type_ids"]: np.zeros_like(ids),
        }
        logits = session.run([io["logits"]], feeds)[0][0]
        p = softmax(logits / temperature)
        return labels_zh[int(p.argmax())], float(p.max())

else:
    raise SystemExit(f"PEER_ENGINE must be torch or onnx, got {ENGINE!r}")

app = Flask(__name__)


@app.after_request
def engine_header(response):
    response.headers["x-peer-engine"] = ENGINE
    return response


@app.post("/analyze")
def analyze():
    body = request.get_json(silent=True)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text:
        return jsonify({"error": "JSON body with a non-empty string field `text` required"}), 400
    label, score = classify(text)
    return jsonify({"text": text, "label": label, "score": score})


@app.get("/health")
def health():
    return jsonify({"status": "ok", "engine": ENGINE})
