"""Text -> model inputs with the `tokenizers` library alone, matching transformers' AutoTokenizer.

Evaluation, benchmarking and the packaged predict.py use this instead of transformers so that
they stay light; tests check that the ids equal AutoTokenizer's for the same settings.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
# every file of a tokenizer folder that evaluation, calibration and packages read: what a step
# fetches of a folder it reads only as a tokenizer (a fine-tuned checkpoint's weights stay behind)
TOKENIZER_FILES = ("special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


def padding_of(tokenizer_dir: Path, tok) -> tuple[int, str]:
    """(pad id, pad token) as AutoTokenizer would pad with this tokenizer folder."""
    # tokenizer_config.json is what AutoTokenizer honours; tokenizer.json may carry stale padding.
    name = None
    cfg = tokenizer_dir / "tokenizer_config.json"
    if cfg.exists():
        value = json.loads(cfg.read_text(encoding="utf-8")).get("pad_token")
        name = value.get("content") if isinstance(value, dict) else value
    if name is None and tok.padding:
        name = tok.padding.get("pad_token")
    name = name or "[PAD]"
    pad_id = tok.token_to_id(name)
    return (0 if pad_id is None else pad_id), name


def load(tokenizer_dir: Path, max_length: int, pad_to: int | None = None):
    """A configured `tokenizers.Tokenizer`; reuse it across batches to avoid re-reading the file."""
    from tokenizers import Tokenizer

    tokenizer_dir = Path(tokenizer_dir)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    pad_id, pad_token = padding_of(tokenizer_dir, tok)
    # A fixed width shorter than max_length must also truncate there, or rows would not fit it.
    limit = min(max_length, pad_to) if pad_to else max_length
    tok.enable_truncation(max_length=limit)
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token, length=pad_to)
    return tok


def as_columns(texts: list) -> tuple[list[str]] | tuple[list[str], list[str]]:
    """Texts as transformers' tokenizer takes them: (texts,), or (first texts, second texts) when
    they are pairs. `tokenizers` takes pairs as they are (tuples) in encode_batch."""
    if texts and isinstance(texts[0], (tuple, list)):
        return [a for a, _ in texts], [b for _, b in texts]
    return (list(texts),)


def as_pairs(texts: list) -> list:
    """Texts that came through JSON (pairs as lists) as encode_batch reads them (pairs as tuples)."""
    return [tuple(t) if isinstance(t, list) else t for t in texts]


def encode_with(tok, texts: list[str]) -> dict[str, np.ndarray]:
    return _arrays(tok.encode_batch(list(texts)))


def encode_each(tok, texts: list[str]) -> list:
    """Every text's `tokenizers.Encoding`, truncated but not yet padded: tokenized once, then cut
    into batches in any order and padded with pad_batch."""
    padding = tok.padding
    tok.no_padding()
    try:
        return tok.encode_batch(list(texts))
    finally:
        if padding:
            tok.enable_padding(**padding)


def pad_batch(tok, encodings: list) -> dict[str, np.ndarray]:
    """Model inputs of encode_each's encodings, padded as encode_with pads the same texts (to the
    longest of them, or the tokenizer's fixed length); pads the encodings in place."""
    p = tok.padding
    length = p["length"] or max(len(e) for e in encodings)
    if p["pad_to_multiple_of"]:
        length = -(-length // p["pad_to_multiple_of"]) * p["pad_to_multiple_of"]
    for e in encodings:
        e.pad(length, direction=p["direction"], pad_id=p["pad_id"], pad_type_id=p["pad_type_id"],
              pad_token=p["pad_token"])
    return _arrays(encodings)


def _arrays(encodings: list) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def encode(tokenizer_dir: Path, texts: list[str], max_length: int,
           pad_to: int | None = None) -> dict[str, np.ndarray]:
    """Truncate to `max_length` tokens (specials included) and pad to the longest row or `pad_to`."""
    return encode_with(load(tokenizer_dir, max_length, pad_to), texts)
