"""Training texts made from training texts, aimed at two kinds of error the model makes on other
domains: mixed sentiment with a contrast (但/不过/可是/然而) and negation.

- Contrast: two short clauses (review texts of 4-20 characters) of one review source with opposite labels joined by a contrast connective,
  "{A}，但是{B}" or "虽然{A}，但是{B}", labelled as B: the clause after the contrast carries the verdict.
  (就是 is left out: in "挺好的，就是有点贵" the clause after it is a reservation, not the verdict.)
- Negation (counterfactual pairs): a text of at most 25 characters with exactly one opinion word of the list below and
  no other negator gets the opposite label when a 不 is put in front of the word (满意 -> 不满意) or
  taken away (不推荐 -> 推荐). Degree adverbs stay where they are: 很满意 -> 很不满意.

Deterministic for a seed. Only the encoder trains on these; the n-gram head and every val figure use
real texts only.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict

CONNECTIVES = ["{a}，但是{b}", "{a}，但{b}", "{a}，不过{b}", "{a}，可是{b}", "{a}，然而{b}", "虽然{a}，但是{b}", "虽然{a}，可{b}"]
CONTRAST_WORDS = ("但", "不过", "可是", "然而", "却", "虽然", "就是", "只是")
# Opinion words that 不 negates cleanly (不满意, 不推荐, ...). Longest first, so 好吃 is found before 好.
OPINION_WORDS = sorted(
    ["满意", "喜欢", "推荐", "值得", "好吃", "好用", "好看", "好听", "划算", "舒服", "方便", "干净", "新鲜", "实惠", "清晰", "流畅", "精彩", "失望", "后悔"],
    key=len,
    reverse=True,
)
# Negating these flips a negative verdict (不后悔, 不失望 read positive). 不错 is not listed: 错 alone is no verdict.
NEGATIVE_WORDS = {"失望", "后悔"}
NEGATORS = ("不", "没", "别", "无", "非", "未")
NOT_REVIEWS = {"smp2020_usual"}
END_PUNCT = "。！!？?～~，,.…、 "


def _clause(text: str) -> str | None:
    """A short text usable as one side of a contrast: 4-20 characters, one sentence, no contrast."""
    text = text.strip().rstrip(END_PUNCT)
    if not 4 <= len(text) <= 20 or any(w in text for w in CONTRAST_WORDS) or re.search(r"[。！!？?\n]", text):
        return None
    return text


def contrast(texts, labels, sources, count: int, rng: random.Random):
    pools = defaultdict(lambda: ([], []))
    for text, label, source in zip(texts, labels, sources):
        clause = _clause(text)
        if clause is not None:
            pools[source][int(label)].append(clause)
    # Weibo posts are not opinions about one thing: two of them joined by 但是 do not read as one text.
    usable = sorted(s for s, (neg, pos) in pools.items() if len(neg) >= 50 and len(pos) >= 50 and s not in NOT_REVIEWS)
    weights = [len(pools[s][0]) + len(pools[s][1]) for s in usable]
    out = []
    for i in range(count):
        source = rng.choices(usable, weights)[0]
        label = i % 2
        a = rng.choice(pools[source][1 - label])
        b = rng.choice(pools[source][label])
        out.append((rng.choice(CONNECTIVES).format(a=a, b=b), label, source))
    return out


def negation(texts, labels, sources, max_chars: int = 25):
    out = []
    for text, label, source in zip(texts, labels, sources):
        if len(text) > max_chars:
            continue
        hits = [(m.start(), w) for w in OPINION_WORDS for m in re.finditer(w, text)]
        spans = {(p, p + len(w)) for p, w in hits}
        if len(spans) != 1:
            continue
        pos, word = hits[0]
        negated = pos > 0 and text[pos - 1] == "不"
        others = text[: pos - 1 if negated else pos] + text[pos + len(word) :]
        if any(n in others for n in NEGATORS):
            continue
        polarity = 0 if word in NEGATIVE_WORDS else 1  # the word's own polarity
        if negated:
            polarity = 1 - polarity
        if polarity != int(label):
            continue  # the opinion word disagrees with the label: the verdict lies elsewhere
        flipped = text[: pos - 1] + text[pos:] if negated else text[:pos] + "不" + text[pos:]
        out.append((flipped, 1 - int(label), source))
    return out


def build(texts, labels, sources, seed: int, contrast_count: int):
    rng = random.Random(seed)
    made = contrast(texts, labels, sources, contrast_count, rng) + negation(texts, labels, sources)
    seen = set(texts)
    return [row for row in made if row[0] not in seen]
