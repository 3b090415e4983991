"""Batched inference over texts, with as little padding as the texts allow.

A batch is padded to its longest row, so batching texts in the order given makes short rows
carry the padding of long ones. Here rows are sorted by token count first (a stable sort: equal
lengths keep their order), cut into batches, and the outputs are put back in the order of the
texts. Attention masks keep padding from reaching a row's output, so a row's answer does not
depend on which rows share its batch, except where a model's kernels look across the whole batch
(dynamic int8 quantization picks one activation scale per batch).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

from modelmake.core import textenc
from modelmake.core.progress import bar
from modelmake.runtime.sessions import feeds


class _Quiet:
    def advance(self, n: int = 1, **info: object) -> None:
        pass


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices of the rows, shortest first, cut into batches of `batch_size`."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def fixed(tokenizer_dir, texts: list[str], batch: int, sequence: int) -> dict:
    """Inputs of exactly batch x sequence tokens, for timing: the texts cycled to `batch` rows (any
    batch size works), each truncated or padded to `sequence`."""
    rows = [texts[i % len(texts)] for i in range(batch)]
    return textenc.encode(tokenizer_dir, rows, max_length=sequence, pad_to=sequence)


def outputs(session, tok, texts: list[str], batch_size: int, output: str | None = None,
            rows: Callable | None = None, label: str | None = None):
    """The session's output for every text, one row per text in the order of `texts`.

    `tok` is a configured tokenizer (textenc.load); `output` names the output to read (None: the
    first); `rows(out, encoded)` turns a batch's output into its rows (default: as it is); with a
    `label`, a progress bar counts the batches.
    """
    import numpy as np

    encodings = textenc.encode_each(tok, texts)
    batches = length_batches([len(e) for e in encodings], batch_size)
    parts = []
    with bar(label, len(batches)) if label else nullcontext(_Quiet()) as progress:
        for batch in batches:
            encoded = textenc.pad_batch(tok, [encodings[i] for i in batch])
            out = session.run(None if output is None else [output], feeds(session, encoded))[0]
            parts.append(rows(out, encoded) if rows else out)
            progress.advance()
    stacked = np.concatenate(parts)
    ordered = np.empty_like(stacked)
    ordered[[i for batch in batches for i in batch]] = stacked
    return ordered
