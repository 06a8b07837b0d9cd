#!/usr/bin/env python3
"""How often a text repeats an earlier one in the public review sets behind the shared data.

../shared/data/sentiment/{train,val}.tsv hold each distinct text once: exact duplicates (after
NFKC, lower case, punctuation and spaces removed) were merged, and `all_sources` lists, joined by
'+', every set a merged text appeared in. A set's distinct texts are therefore the rows whose
`all_sources` names it; its published row count minus that is how many of its rows repeated an
earlier one, the hit rate an unbounded result cache would see if the set were replayed as
traffic. It is an upper bound: the 75 texts seen with both labels were dropped from the files,
so they count as repeats here. docs/cache.md quotes the output.

    python3 scripts/data-repeats.py [DATA_DIR]    # default ../shared/data/sentiment
"""

import csv
import sys
from pathlib import Path

# Row counts as published by SophonPlus/ChineseNlpCorpus (its README), for the sets named as in
# `all_sources`.
PUBLISHED = {
    "sophon_online_shopping_10_cats": 62_774,
    "sophon_waimai_10k": 11_987,
    "sophon_ChnSentiCorp_htl_all": 7_766,
}


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "../../shared/data/sentiment"
    csv.field_size_limit(1 << 30)
    distinct = dict.fromkeys(PUBLISHED, 0)
    in_any = 0
    for name in ("train.tsv", "val.tsv"):
        with open(data / name, encoding="utf-8", newline="") as file:
            for row in csv.DictReader(file, delimiter="\t"):
                sources = set(row["all_sources"].split("+"))
                for source in sources & PUBLISHED.keys():
                    distinct[source] += 1
                in_any += bool(sources & PUBLISHED.keys())

    print("| set | published rows | distinct texts | repeated rows | share |")
    print("|---|---:|---:|---:|---:|")
    for source, rows in PUBLISHED.items():
        repeats = rows - distinct[source]
        print(f"| {source} | {rows:,} | {distinct[source]:,} | {repeats:,} | {repeats / rows:.2%} |")
    rows = sum(PUBLISHED.values())
    repeats = rows - sum(distinct.values())
    print(f"| each set on its own, together | {rows:,} | {sum(distinct.values()):,} | {repeats:,} | {repeats / rows:.2%} |")
    # Not traffic repetition: online_shopping_10_cats's hotel category re-publishes most of
    # ChnSentiCorp_htl_all, so the sets overlap by construction.
    print(f"| the three sets as one stream | {rows:,} | {in_any:,} | {rows - in_any:,} | {(rows - in_any) / rows:.2%} |")


if __name__ == "__main__":
    main()
