"""Exports a BERT-family sentiment checkpoint into a senti model folder (the layout of models/senti-zh-small).

Two uses:
  python models/export/export.py --checkpoint DIR --out models/my-model
      DIR is a Hugging Face BertForSequenceClassification folder (config.json + model.safetensors or
      pytorch_model.bin, with tokenizer.json or vocab.txt), or a ModelScope StructBERT sentiment
      checkpoint such as damo/nlp_structbert_sentiment-classification_chinese-base (same layout;
      its weights are BERT-shaped, so they load into BertForSequenceClassification after renaming).
  python models/export/export.py --random-base models/bench/structbert-base-random
      (`make bench-model`) writes a randomly initialised model with StructBERT-base's configuration
      (12 layers, hidden 768, 12 heads, 21,128 vocabulary): exactly the real model's compute, for
      benchmarks. It first saves it as a Hugging Face checkpoint and then exports that checkpoint
      through the same path as a user's, so the user path is exercised too. Never committed (~400 MB).

Nothing downloads: the checkpoint must already be on disk. Needs the training environment
(.cache/venv-train, `make model` creates it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
import senti_export as sx  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VOCAB = REPO.parent / "shared" / "data" / "vocab" / "bert-base-chinese-vocab.txt"
LABEL_ALIASES = {"负面": "negative", "negative": "negative", "neg": "negative", "正面": "positive", "positive": "positive", "pos": "positive"}


def load_checkpoint(folder: Path) -> BertForSequenceClassification:
    config_json = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config_json.get("model_type") == "bert":
        return BertForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    # ModelScope StructBERT: BERT-shaped weights under another prefix and model_type.
    keep = {k: v for k, v in config_json.items() if k in BertConfig().to_dict()}
    keep["model_type"] = "bert"
    config = BertConfig(**keep, attn_implementation="eager")
    model = BertForSequenceClassification(config)
    weights = folder / "pytorch_model.bin"
    if weights.exists():
        state = torch.load(weights, map_location="cpu", weights_only=True)
    else:
        from safetensors.torch import load_file

        state = load_file(folder / "model.safetensors")
    renamed = {}
    for key, value in state.items():
        for prefix in ("sbert.", "structbert.", "bert."):
            if key.startswith(prefix):
                key = "bert." + key[len(prefix) :]
                break
        renamed[key] = value
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise SystemExit(f"checkpoint lacks weights the BERT encoder needs: {missing[:8]} ...")
    if unexpected:
        print(f"warning: ignored weights {unexpected[:8]}", file=sys.stderr)
    return model.eval()


def label_order(model) -> list[tuple[str, str]]:
    """Manifest labels in the checkpoint's index order, with English and Chinese names."""
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    if len(id2label) != 2:
        raise SystemExit(f"expected a 2-class sentiment head, got labels {id2label}")
    names = []
    for index in range(2):
        english = LABEL_ALIASES.get(str(id2label[index]).lower(), LABEL_ALIASES.get(str(id2label[index])))
        if english is None:
            english = sx.LABELS[index][0]
            print(f"warning: label {index} is {id2label[index]!r}; assuming {english}", file=sys.stderr)
        names.append((english, dict(sx.LABELS)[english]))
    return names


def export(checkpoint: Path, out: Path, name: str, version: str, max_length: int, vocab: Path) -> dict:
    model = load_checkpoint(checkpoint)
    labels = label_order(model)
    out.mkdir(parents=True, exist_ok=True)
    if (checkpoint / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    else:
        tokenizer = sx.build_bert_chinese_tokenizer(checkpoint / "vocab.txt" if (checkpoint / "vocab.txt").exists() else vocab)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.save(str(out / "tokenizer.json"))
    fp32, int8 = out / "model.onnx", out / "model.int8.onnx"
    sx.export_onnx(model, fp32, model.config.vocab_size)
    sx.quantize_int8(fp32, int8)

    ids = sx.encode(tokenizer, sx.PARITY_TEXTS, max_length)
    torch_logits = sx.torch_logits(model, ids)
    fp32_logits = sx.ort_logits(sx.ort_session(fp32), ids)
    int8_logits = sx.ort_logits(sx.ort_session(int8), ids)
    diff = float(np.abs(torch_logits - fp32_logits).max())
    agreement = float((int8_logits.argmax(1) == fp32_logits.argmax(1)).mean())
    if diff > 1e-4:
        raise SystemExit(f"fp32 ONNX differs from PyTorch by {diff}")
    variants = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    saved = sx.LABELS
    sx.LABELS = labels  # the manifest lists labels in this checkpoint's order
    try:
        sx.write_manifest(
            out,
            name=name,
            version=version,
            description=f"exported from {checkpoint.name} by models/export/export.py",
            max_length=max_length,
            temperature=1.0,
            default_variant="fp32",
            variants=variants,
        )
    finally:
        sx.LABELS = saved
    sx.write_parity(out, out / "tokenizer.json", variants, max_length)
    report = {"fp32_vs_torch_max_abs_diff": diff, "int8_label_agreement_on_parity_texts": agreement, "labels": labels}
    print(json.dumps(report, ensure_ascii=False))
    return report


def random_base(out: Path, vocab: Path) -> None:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=21128,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        type_vocab_size=2,
        num_labels=2,
        id2label={0: "负面", 1: "正面"},
        label2id={"负面": 0, "正面": 1},
        attn_implementation="eager",
    )
    model = BertForSequenceClassification(config).eval()
    checkpoint = out.parent / (out.name + "-checkpoint")
    model.save_pretrained(checkpoint)
    (checkpoint / "vocab.txt").write_text(vocab.read_text(encoding="utf-8"), encoding="utf-8")
    export(checkpoint, out, "structbert-base-random", "0.0.0", 512, vocab)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="Hugging Face or ModelScope checkpoint folder")
    p.add_argument("--random-base", type=Path, metavar="OUT", help="write a random StructBERT-base-sized model to OUT")
    p.add_argument("--out", type=Path)
    p.add_argument("--name", default="custom")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB, help="vocab.txt when the checkpoint has no tokenizer")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.random_base:
        random_base(args.random_base, args.vocab)
    elif args.checkpoint and args.out:
        export(args.checkpoint, args.out, args.name, args.version, args.max_length, args.vocab)
    else:
        p.error("give --checkpoint DIR --out DIR, or --random-base OUT")


if __name__ == "__main__":
    main()
