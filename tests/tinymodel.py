"""A tiny random BERT classifier and a matching toy reviews CSV, for fast tests of passes and builds.

Both are deterministic for a given seed, so tests can compare bytes and digests across runs.
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

GOOD = ["good", "great", "wonderful", "brilliant", "moving", "fun", "superb", "charming"]
BAD = ["bad", "awful", "boring", "dull", "terrible", "messy", "weak", "tedious"]
PLOT = ["story", "hero", "city", "war", "family", "journey", "secret", "island"]
# Over 128 vocabulary entries in all: ORT's embedding fusion tells the word table from the
# position table (128 rows) by size.
NEUTRAL = """the a an movie film was is are and but or very quite plot acting this that it its of
about with in on at by for from to as into over after before during while when then than so
too also just only even still yet again once here there where who whom which what why how
director actor actress scene scenes script camera music score sound ending start middle cast
crew studio sequel remake version cut screen theatre ticket audience critic review minute
hour night day year time place people man woman child friend mother father brother sister
! . , ? ; :""".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABELS = {0: "rotten", 1: "fresh"}


def make_tiny_bert(dir: Path, seed: int = 0) -> Path:
    """Write a 2-layer BertForSequenceClassification (2 labels) with its tokenizer into `dir`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + sorted(set(GOOD + BAD + PLOT + NEUTRAL))
    (dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                        id2label=dict(LABELS), label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(dir)
    # transformers 5 takes the word list as `vocab` (v4's `vocab_file` is silently ignored there).
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=128)
    tokenizer.save_pretrained(dir)  # writes tokenizer.json (transformers 5 no longer writes vocab.txt)
    return dir


def make_tiny_reviews_csv(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Write `n` reviews (text, category, movie_name); fresh reviews use GOOD words, rotten BAD, plot PLOT."""
    rng = random.Random(seed)
    words = {"fresh": GOOD, "rotten": BAD, "plot": PLOT}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "category", "movie_name"])
        for i in range(n):
            category = ("fresh", "rotten", "plot")[i % 3]
            tokens = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 10))]
            for _ in range(rng.randint(1, 3)):
                tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(words[category]))
            w.writerow([" ".join(tokens), category, f"movie {i % 17}"])
    return path
