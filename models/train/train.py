"""Trains senti's default Chinese sentiment model from scratch, then exports, checks and ships it.

One command does it all (`make model`, which runs this file with the pinned virtualenv):
    data -> tokenizer -> optional masked-language-model pre-training -> fine-tuning -> n-gram head ->
    calibration -> ONNX fp32 + int8 export -> parity and agreement checks -> latency ->
    models/<name>/ (model.onnx, model.int8.onnx, tokenizer.json, model.toml, MODEL_CARD.md, metrics.json)

No pretrained Chinese weights can be had on these machines, so the encoder starts from random
weights. Everything is seeded; the log goes to models/train/logs/<name>.log.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "export"))
import ngram  # noqa: E402
import senti_export as sx  # noqa: E402

SIZES = {
    # name: (hidden, layers, heads)
    "tiny": (128, 4, 2),
    "small": (192, 4, 3),
    "medium": (256, 4, 4),
}

log = logging.getLogger("train")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    p.add_argument("--out", type=Path, default=HERE.parent / "senti-zh-small")
    p.add_argument("--name", default="senti-zh-small")
    p.add_argument("--version", default="1.1.0")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--mlm-epochs", type=float, default=2.0, help="MLM pre-training epochs over unlabeled+train text (0: none)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--mlm-lr", type=float, default=7e-4)
    p.add_argument("--max-length", type=int, default=256, help="tokens, [CLS] and [SEP] included")
    p.add_argument("--train-limit", type=int, default=0, help="use only N training rows, a seeded sample (smoke tests)")
    p.add_argument("--seed", type=int, default=20261123)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-export", action="store_true", help="stop after training and evaluation (size sweeps)")
    p.add_argument("--ngram-buckets", type=int, default=20, help="log2 of the n-gram head's table rows (0: no head; see ngram.py)")
    p.add_argument("--ngram-c", type=float, default=8.0, help="inverse L2 strength of the n-gram head's logistic regression")
    return p.parse_args()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def read_labeled(path: Path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows]), [r["source"] for r in rows]


def read_unlabeled(path: Path):
    with open(path, encoding="utf-8", newline="") as f:
        return [r["text"] for r in csv.DictReader(f, delimiter="\t")]


def length_batches(id_lists, batch: int, rng: random.Random, shuffle: bool = True):
    """Batches of similar length (little padding): shuffle, sort inside windows of 50 batches,
    cut, shuffle the batches."""
    order = list(range(len(id_lists)))
    if shuffle:
        rng.shuffle(order)
    window = batch * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(id_lists[i]))
        batches.extend(chunk[i : i + batch] for i in range(0, len(chunk), batch))
    if shuffle:
        rng.shuffle(batches)
    return batches


def to_tensors(id_lists):
    ids, mask, types = sx.pad_batch(id_lists)
    return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)


def linear_schedule(optimizer, total_steps: int, warmup: float = 0.06):
    warm = max(1, int(total_steps * warmup))

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model, lr: float):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def mask_tokens(ids: torch.Tensor, attention: torch.Tensor, vocab_size: int, gen: torch.Generator):
    """BERT masking: 15% of real non-special tokens; of those 80% [MASK], 10% random, 10% kept."""
    special = (ids == 101) | (ids == 102) | (attention == 0)  # [CLS], [SEP], padding
    chosen = (torch.rand(ids.shape, generator=gen) < 0.15) & ~special
    inputs = ids.clone()
    roll = torch.rand(ids.shape, generator=gen)
    inputs[chosen & (roll < 0.8)] = 103  # [MASK]
    random_sel = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[random_sel] = torch.randint(1000, vocab_size, (int(random_sel.sum()),), generator=gen)
    return inputs, chosen


def pretrain_mlm(config, texts_ids, args, rng):
    """Masked-language-model pre-training; returns the encoder's state dict. The MLM head is
    applied only at masked positions (a full 21,128-way softmax at every position would cost more
    than the encoder itself)."""
    model = BertForMaskedLM(config)
    model.train()
    batches_per_epoch = math.ceil(len(texts_ids) / 64)
    total = int(batches_per_epoch * args.mlm_epochs)
    opt = make_optimizer(model, args.mlm_lr)
    sched = linear_schedule(opt, total, warmup=0.1)
    gen = torch.Generator().manual_seed(args.seed + 1)
    step = 0
    bar = tqdm(total=total, desc="mlm pre-training", unit="step", mininterval=5)
    running = None
    while step < total:
        for batch in length_batches(texts_ids, 64, rng):
            if step >= total:
                break
            ids, attention, types = to_tensors([texts_ids[i] for i in batch])
            inputs, chosen = mask_tokens(ids, attention, config.vocab_size, gen)
            hidden = model.bert(input_ids=inputs, attention_mask=attention, token_type_ids=types).last_hidden_state
            logits = model.cls(hidden[chosen])
            loss = torch.nn.functional.cross_entropy(logits, ids[chosen])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            step += 1
            bar.update(1)
            if step % 200 == 0:
                bar.set_postfix(loss=f"{running:.3f}")
                log.info("mlm step %d/%d loss %.4f", step, total, running)
    bar.close()
    return model.bert.state_dict(), running


def evaluate(model, id_lists, labels):
    logits = sx.torch_logits(model, id_lists, batch_size=128)
    return logits, float((logits.argmax(1) == labels).mean())


def finetune(config, encoder_state, train_ids, train_labels, val_ids, val_labels, args, rng):
    model = BertForSequenceClassification(config)
    if encoder_state is not None:
        missing, unexpected = model.bert.load_state_dict(encoder_state, strict=False)
        log.info("encoder loaded from MLM; missing %s unexpected %s", missing, unexpected)
    total = math.ceil(len(train_ids) / args.batch) * args.epochs
    opt = make_optimizer(model, args.lr)
    sched = linear_schedule(opt, total)
    labels_t = torch.from_numpy(train_labels)
    history = []
    bar = tqdm(total=total, desc="fine-tuning", unit="step", mininterval=5)
    for epoch in range(args.epochs):
        model.train()
        running = None
        for batch in length_batches(train_ids, args.batch, rng):
            ids, attention, types = to_tensors([train_ids[i] for i in batch])
            out = model(input_ids=ids, attention_mask=attention, token_type_ids=types, labels=labels_t[batch])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            running = out.loss.item() if running is None else 0.98 * running + 0.02 * out.loss.item()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running:.3f}", refresh=False)
        _, acc = evaluate(model, val_ids, val_labels)
        history.append({"epoch": epoch + 1, "train_loss": running, "val_accuracy": acc})
        log.info("epoch %d train loss %.4f val accuracy %.4f", epoch + 1, running, acc)
    bar.close()
    return model, history


def per_source_accuracy(pred, labels, sources):
    hits, counts = defaultdict(int), Counter(sources)
    for p, y, s in zip(pred, labels, sources):
        hits[s] += int(p == y)
    return {s: {"rows": counts[s], "accuracy": hits[s] / counts[s]} for s in sorted(counts)}


def add_ngram_head(out, train_ids, train_labels, val_ids, val_labels, encoder_logits, args, vocab):
    """Fits the hashed n-gram head (ngram.py) on train, weighs it against the encoder on val, and
    adds its nodes to both exported graphs in place."""
    started = time.time()
    head, info = ngram.fit(train_ids, train_labels, vocab, 1 << args.ngram_buckets, args.ngram_c, args.seed)
    scores = head.scores(val_ids)
    head.alpha = ngram.best_alpha(encoder_logits["fp32"], scores, val_labels)
    info.update(
        {
            "alpha": head.alpha,
            "table_mb": head.table.nbytes / 1e6,
            "val_accuracy_head_alone": float(((scores > 0) == val_labels).mean()),
            "val_accuracy_encoder_alone": {v: float((l.argmax(1) == val_labels).mean()) for v, l in encoder_logits.items()},
            "val_accuracy_cross_fitted": ngram.cross_fitted_accuracy(encoder_logits["fp32"], scores, val_labels),
            "minutes": (time.time() - started) / 60,
        }
    )
    log.info("n-gram head %s", info)
    for file in ("model.onnx", "model.int8.onnx"):
        ngram.attach(out / file, out / file, head)
    return head, info


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    rng = random.Random(args.seed)
    logs = HERE / "logs"
    logs.mkdir(exist_ok=True)
    tag = args.name if not args.no_export else f"sweep-{args.size}-mlm{args.mlm_epochs:g}"
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(logs / f"{tag}.log", mode="w"), logging.StreamHandler()],
    )
    logging.getLogger("root").setLevel(logging.INFO)
    for noisy in ("onnxruntime", "onnxruntime.quantization"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log.info("arguments %s", vars(args))
    started = time.time()

    data = args.data / "sentiment"
    train_texts, train_labels, _ = read_labeled(data / "train.tsv")
    if args.train_limit:
        # A seeded sample, not the first rows: the file is sorted by label.
        pick = sorted(random.Random(args.seed).sample(range(len(train_texts)), args.train_limit))
        train_texts, train_labels = [train_texts[i] for i in pick], train_labels[pick]
    val_texts, val_labels, val_sources = read_labeled(data / "val.tsv")
    tokenizer = sx.build_bert_chinese_tokenizer(args.data / "vocab" / "bert-base-chinese-vocab.txt")
    train_ids = sx.encode(tokenizer, train_texts, args.max_length)
    val_ids = sx.encode(tokenizer, val_texts, args.max_length)
    unk = sum(ids.count(100) for ids in train_ids) / sum(len(ids) for ids in train_ids)
    log.info("train %d rows, val %d rows, [UNK] rate %.4f", len(train_ids), len(val_ids), unk)

    hidden, layers, heads = SIZES[args.size]
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
        type_vocab_size=2,
        num_labels=2,
        id2label={i: name for i, (name, _) in enumerate(sx.LABELS)},
        label2id={name: i for i, (name, _) in enumerate(sx.LABELS)},
        attn_implementation="eager",
    )

    encoder_state, mlm_loss = None, None
    if args.mlm_epochs > 0:
        unlabeled = read_unlabeled(data / "unlabeled.tsv")
        mlm_ids = sx.encode(tokenizer, unlabeled + train_texts, 128)
        log.info("mlm corpus %d texts", len(mlm_ids))
        encoder_state, mlm_loss = pretrain_mlm(config, mlm_ids, args, rng)
    mlm_minutes = (time.time() - started) / 60

    model, history = finetune(config, encoder_state, train_ids, train_labels, val_ids, val_labels, args, rng)
    train_minutes = (time.time() - started) / 60
    torch_val_logits, acc = evaluate(model, val_ids, val_labels)
    n_params = sum(p.numel() for p in model.parameters())
    summary = {
        "size": args.size,
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "parameters": n_params,
        "mlm_epochs": args.mlm_epochs,
        "mlm_final_loss": mlm_loss,
        "epochs": args.epochs,
        "history": history,
        "val_accuracy_torch": acc,
        "minutes_mlm": mlm_minutes,
        "minutes_total_training": train_minutes,
    }
    log.info("val accuracy %.4f after %.1f min", acc, train_minutes)
    if args.no_export:
        out = HERE / "sweeps"
        out.mkdir(exist_ok=True)
        tmp = out / f"{tag}.onnx"
        sx.export_onnx(model, tmp, config.vocab_size)
        summary["latency_fp32"] = sx.measure_latency(tmp, val_ids[:512], seconds=4)
        tmp.unlink()
        (out / f"{tag}.json").write_text(json.dumps(summary, indent=2))
        return

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tokenizer.no_truncation()
    tokenizer.save(str(out / "tokenizer.json"))
    fp32, int8 = out / "model.onnx", out / "model.int8.onnx"
    sx.export_onnx(model, fp32, config.vocab_size)
    sx.quantize_int8(fp32, int8)

    # Checks on the encoder alone: fp32 ONNX against PyTorch.
    encoder_logits = {"fp32": sx.ort_logits(sx.ort_session(fp32), val_ids), "int8": sx.ort_logits(sx.ort_session(int8), val_ids)}
    max_diff = float(np.abs(encoder_logits["fp32"] - torch_val_logits).max())
    log.info("fp32 onnx vs torch max |diff| %.2e", max_diff)
    assert max_diff <= 1e-4, f"fp32 ONNX logits differ from PyTorch by {max_diff}"

    head, head_info = None, None
    if args.ngram_buckets:
        head, head_info = add_ngram_head(out, train_ids, train_labels, val_ids, val_labels, encoder_logits, args, config.vocab_size)

    # Checks on the shipped graphs: the head's nodes compute what ngram.py computes; int8 against fp32.
    if head is None:
        fp32_logits, int8_logits = encoder_logits["fp32"], encoder_logits["int8"]
    else:
        fp32_logits = sx.ort_logits(sx.ort_session(fp32), val_ids)
        int8_logits = sx.ort_logits(sx.ort_session(int8), val_ids)
        delta = head.delta(val_ids)
        head_diff = max(float(np.abs(fp32_logits - encoder_logits["fp32"] - delta).max()), float(np.abs(int8_logits - encoder_logits["int8"] - delta).max()))
        log.info("n-gram head: ONNX vs numpy max |diff| %.2e", head_diff)
        assert head_diff <= 1e-4, f"the n-gram head's ONNX nodes differ from ngram.py by {head_diff}"
        head_info["onnx_vs_numpy_max_abs_diff"] = head_diff
    agreement = float((int8_logits.argmax(1) == fp32_logits.argmax(1)).mean())
    log.info("int8 label agreement %.4f", agreement)
    assert agreement >= 0.995, f"int8 agrees with fp32 on only {agreement:.4f} of val"

    variants = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    results = {}
    for variant, logits in (("fp32", fp32_logits), ("int8", int8_logits)):
        pred = logits.argmax(1)
        results[variant] = {
            "file": variants[variant],
            "size_mb": sx.file_size_mb(out / variants[variant]),
            "val_accuracy": float((pred == val_labels).mean()),
            "val_accuracy_by_source": per_source_accuracy(pred, val_labels, val_sources),
            "latency": sx.measure_latency(out / variants[variant], val_ids[:1024]),
            "calibration": sx.calibrate(logits, val_labels),
        }
    # Default: int8 when it loses at most 0.5 points of accuracy and is faster at batch 32.
    loss_points = 100 * (results["fp32"]["val_accuracy"] - results["int8"]["val_accuracy"])
    faster = results["int8"]["latency"]["batch32_ms_per_sentence"] < results["fp32"]["latency"]["batch32_ms_per_sentence"]
    default = "int8" if loss_points <= 0.5 and faster else "fp32"
    summary.update(
        {
            "fp32_vs_torch_max_abs_diff": max_diff,
            "int8_label_agreement": agreement,
            "ngram_head": head_info,
            "variants": results,
            "default_variant": default,
            "minutes_total": (time.time() - started) / 60,
        }
    )
    sx.write_manifest(
        out,
        name=args.name,
        version=args.version,
        description="BERT-family Chinese review sentiment classifier trained from scratch for senti",
        max_length=args.max_length,
        temperature=results[default]["calibration"]["temperature"],
        default_variant=default,
        variants=variants,
    )
    sx.write_parity(out, out / "tokenizer.json", variants, args.max_length)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    import model_card

    (out / "MODEL_CARD.md").write_text(model_card.render(args, summary), encoding="utf-8")
    log.info("wrote %s in %.1f min total", out, summary["minutes_total"])


if __name__ == "__main__":
    main()
