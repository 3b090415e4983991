"""Decoder language models as onnxruntime-genai's model builder writes them: a folder with
model.onnx (+ model.onnx.data), genai_config.json and the tokenizer files.

Two engines read such a folder. Perplexity runs the graph itself with plain ONNX Runtime (a
session from sessions.py): each text in one pass with an empty key/value cache, so the logits of
every position come out at once (teacher forcing). Generation goes through onnxruntime-genai,
which is how the model is deployed: its own session options from genai_config.json, its cache
management and search.

onnxruntime-genai 0.18, as used here:
- `Generator.append_tokens(prompt)` runs the prompt through the model (the prefill) and keeps its
  logits; `generate_next_token()` then picks a token from the logits it has, and only from the
  second call on runs the model first (one decode step each). The first new token therefore
  exists after append_tokens + one generate_next_token; with the Generator a request creates
  first, that is the time to first token. The other M-1 calls are the decode steps.
- `max_length` and `min_length` count the prompt too; min_length = max_length keeps EOS from
  ending a timed generation early (its logit is masked until then).
- intra-op threads come from genai_config.json's `model.decoder.session_options`
  (`intra_op_num_threads`), changed in memory by `og.Config.overlay`. Without it onnxruntime-genai
  sets min(max(1, hardware threads / 2), 16), not ORT's own default (one per physical core).
"""
from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from modelmake.core.progress import bar

CONFIG = "genai_config.json"
# logits of one batch (rows x longest row x vocabulary, float32) stay under this; a real
# vocabulary (50k-150k) leaves one or two long rows per batch, a tiny test model many
LOGITS_BYTES = 256 * 2 ** 20
MAX_BATCH = 16
SCORE_ROWS = 256   # positions turned into float64 log-probabilities at a time
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(int64)": "int64", "tensor(int32)": "int32"}


class DecoderError(Exception):
    """A folder is not a decoder this module can run; the message names the folder and says why."""

    plain = True


@dataclass(frozen=True)
class Decoder:
    """What genai_config.json says about a decoder folder."""

    folder: Path
    model: Path                 # the ONNX file (model.decoder.filename)
    model_type: str
    bos: int | None             # prepended to every text; None when the model has no BOS token
    eos: tuple[int, ...]
    context_length: int | None  # longest sequence the model takes (its rotary tables' length)
    kv_heads: int | None
    head_size: int | None
    session_options: dict       # model.decoder.session_options as deployed


def read(folder: Path) -> Decoder:
    """The decoder in `folder`, from its genai_config.json."""
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file():
        what = "does not exist" if not folder.exists() else f"has no {CONFIG}"
        raise DecoderError(f"{folder} {what}: a text-generation model is a folder written by onnxruntime-genai's "
                           f"model builder (model.onnx, {CONFIG} and the tokenizer files)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        model = config["model"]
        decoder = model["decoder"]
    except (ValueError, KeyError, TypeError) as e:
        raise DecoderError(f"{path}: not a readable onnxruntime-genai config ({e.__class__.__name__}: {e})") from None
    eos = model.get("eos_token_id")
    eos = tuple(eos) if isinstance(eos, list) else () if eos is None else (eos,)
    onnx_file = folder / decoder.get("filename", "model.onnx")
    if not onnx_file.is_file():
        raise DecoderError(f"{folder}: {CONFIG} names the model file {onnx_file.name}, which is missing")
    return Decoder(folder=folder, model=onnx_file, model_type=str(model.get("type", "")),
                   bos=model.get("bos_token_id"), eos=eos, context_length=model.get("context_length"),
                   kv_heads=decoder.get("num_key_value_heads"), head_size=decoder.get("head_size"),
                   session_options=dict(decoder.get("session_options") or {}))


def tokenizer(folder: Path):
    """The folder's tokenizer.json as a `tokenizers.Tokenizer`, with no truncation or padding."""
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise DecoderError(f"{folder}: no tokenizer.json (the model builder copies it from the Hugging Face model)")
    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()   # a tokenizer.json may carry its training-time settings
    tok.no_padding()
    return tok


def token_ids(folder: Path, texts: list[str], max_length: int) -> list[list[int]]:
    """Per text: [bos] + its tokens without special tokens, truncated to max_length in total.

    Special tokens are left to us rather than to the tokenizer's post-processor: some add BOS,
    some add BOS and EOS, some nothing, and perplexity should score the same sequence PyTorch
    and the generator see."""
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1 (got {max_length})")
    head, encodings = _bos_and_tokens(folder, texts)
    return [(head + ids)[:max_length] for ids in encodings]


def _bos_and_tokens(folder: Path, texts: list[str]) -> tuple[list[int], list[list[int]]]:
    """([bos] or [] when the model has none, each text's token ids without special tokens)."""
    head = [] if (bos := read(folder).bos) is None else [int(bos)]
    return head, [e.ids for e in tokenizer(folder).encode_batch(list(texts), add_special_tokens=False)]


def prompt_ids(folder: Path, texts: list[str], n: int) -> list[int]:
    """Exactly `n` token ids: [bos] + the texts' tokens one after another, repeated when short."""
    head, encodings = _bos_and_tokens(folder, texts)
    pool = [i for ids in encodings for i in ids]
    body = n - len(head)
    if body <= 0:
        return head[:max(n, 0)]
    if not pool:
        raise ValueError(f"a prompt of {n} tokens needs texts with at least one token")
    return head + (pool * (body // len(pool) + 1))[:body]


# ---------------------------------------------------------------- perplexity (plain ONNX Runtime)
def _feeds(session, info: Decoder, rows: list[list[int]]) -> dict:
    """Inputs of right-padded `rows` with an empty key/value cache: every past_key_values.* input
    an array [batch, kv_heads, 0, head_size] of its own dtype."""
    import numpy as np

    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    feeds = {}
    for inp in session.get_inputs():
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise DecoderError(f"{info.model}: input {inp.name} has type {inp.type}, which perplexity cannot feed")
        if inp.name == "input_ids":
            feeds[inp.name] = ids.astype(dtype)
        elif inp.name == "attention_mask":
            feeds[inp.name] = mask.astype(dtype)
        elif inp.name == "position_ids":
            # positions of padding are never read: only a row's own tokens are scored
            feeds[inp.name] = np.broadcast_to(np.arange(width), ids.shape).astype(dtype)
        elif inp.name.startswith("past_key_values."):
            heads, size = inp.shape[1], inp.shape[3]
            heads = heads if isinstance(heads, int) else info.kv_heads
            size = size if isinstance(size, int) else info.head_size
            if not heads or not size:
                raise DecoderError(f"{info.folder}: cannot tell the shape of {inp.name} ({inp.shape}); "
                                   f"{CONFIG} gives no num_key_value_heads/head_size")
            feeds[inp.name] = np.zeros((len(rows), heads, 0, size), dtype)
        else:
            raise DecoderError(f"{info.model}: unexpected input {inp.name}; perplexity feeds input_ids, "
                               "attention_mask, position_ids and past_key_values.*")
    return feeds


def _scores(logits, row: list[int]) -> float:
    """Summed negative log-likelihood of row[1:] given the logits of row[:-1], in float64."""
    import numpy as np

    total = 0.0
    for start in range(0, len(row) - 1, SCORE_ROWS):
        stop = min(start + SCORE_ROWS, len(row) - 1)
        chunk = logits[start:stop].astype(np.float64)
        top = chunk.max(axis=-1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(chunk - top).sum(axis=-1))
        total += float((log_z - chunk[np.arange(stop - start), row[start + 1:stop + 1]]).sum())
    return total


def _batches(lengths: list[int], vocab: int, max_batch: int) -> list[list[int]]:
    """Indices of the rows, shortest first, in batches whose logits stay under LOGITS_BYTES."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    out: list[list[int]] = []
    for i in order:
        # sorted by length, so the new row is the batch's longest
        if out and len(out[-1]) < max_batch and (len(out[-1]) + 1) * lengths[i] * vocab * 4 <= LOGITS_BYTES:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def sequence_nll(folder: Path, sequences: list[list[int]], threads: int = 0, max_batch: int = MAX_BATCH,
                 label: str | None = None) -> list[tuple[float, int]]:
    """(summed negative log-likelihood, predicted tokens) of every token sequence, in order: the
    model scores tokens 1..T-1 of each from the positions before them, with its full float64
    log-softmax. A sequence of fewer than 2 tokens predicts nothing: (0.0, 0).

    Rows of similar length share a batch, right-padded with an attention mask. That is exact, not
    just close: with an empty cache GroupQueryAttention reads each row's length from its mask and
    masks keys causally, padding sits after a row's tokens where causality hides it anyway, and
    the MatMuls (MLAS float and MatMulNBits alike) reduce each output row in the same order
    whatever the batch; the tests compare batched and one-at-a-time NLL bit for bit. max_batch = 1
    runs one sequence at a time. With a `label`, a progress bar counts the sequences."""
    from modelmake.runtime import sessions

    info = read(folder)
    if info.context_length and max(map(len, sequences), default=0) > info.context_length:
        raise DecoderError(f"{folder}: sequences of up to {max(map(len, sequences))} tokens, but the model takes "
                           f"at most {info.context_length} (context_length in {CONFIG}); lower max_length")
    session = sessions.session(info.model, threads)
    names = [o.name for o in session.get_outputs()]
    if "logits" not in names:
        raise DecoderError(f"{info.model}: no 'logits' output (outputs: {', '.join(names)})")
    vocab = session.get_outputs()[names.index("logits")].shape[-1]
    vocab = vocab if isinstance(vocab, int) else 1
    scored = [i for i, s in enumerate(sequences) if len(s) >= 2]
    out = [(0.0, 0)] * len(sequences)
    with bar(label, len(sequences)) if label else nullcontext(None) as progress:
        if progress and len(scored) < len(sequences):
            progress.advance(len(sequences) - len(scored))
        for batch in _batches([len(sequences[i]) for i in scored], vocab, max(1, max_batch)):
            rows = [sequences[scored[j]] for j in batch]
            logits = session.run(["logits"], _feeds(session, info, rows))[0]
            if logits.shape[1] != max(map(len, rows)):
                raise DecoderError(f"{info.model}: logits for {logits.shape[1]} positions of {max(map(len, rows))}; "
                                   "perplexity needs every position's logits (a model built with only the last "
                                   "token's logits cannot be scored)")
            for k, row in enumerate(rows):
                out[scored[batch[k]]] = (_scores(logits[k], row), len(row) - 1)
            if progress:
                progress.advance(len(rows))
    return out


# ---------------------------------------------------------------- generation (onnxruntime-genai)
def default_threads() -> int:
    """onnxruntime-genai's intra-op threads when the config names none (its model.cpp)."""
    return min(max(1, (os.cpu_count() or 2) // 2), 16)


def generation_threads(folder: Path, threads: int = 0) -> int:
    """Intra-op threads a generation runs with: `threads` when > 0, else what the folder's config
    deploys (its session_options, or onnxruntime-genai's default)."""
    if threads > 0:
        return threads
    configured = read(folder).session_options.get("intra_op_num_threads")
    return int(configured) if configured else default_threads()


def load(folder: Path, threads: int = 0):
    """An `og.Model` of the folder on the CPU: its genai_config.json as deployed (threads = 0) or
    with `threads` intra-op threads (the file on disk stays as it is)."""
    import onnxruntime_genai as og

    read(folder)  # a clear error for a folder that is not a decoder
    config = og.Config(str(folder))
    if threads > 0:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    return og.Model(config)


def _generator(model, prompt: list[int], total: int, forced: bool):
    import numpy as np
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    # random_seed = -1 (the default) seeds from std::random_device at every Generator: 12-15 ms of
    # CPU on hosts without RDSEED, more than a small model's prefill; greedy search draws nothing
    params.set_search_options(max_length=total, min_length=total if forced else 0, do_sample=False,
                              random_seed=0)
    generator = og.Generator(model, params)
    return generator, np.asarray(prompt, dtype=np.int32)


@dataclass(frozen=True)
class TimedRun:
    ttft_s: float      # a new Generator, append_tokens and the first generate_next_token
    decode_s: float    # the other generate_next_token calls, back to back
    tokens: list[int]  # the new tokens, in order


def timed_run(model, prompt: list[int], new_tokens: int) -> TimedRun:
    """One greedy generation of exactly `new_tokens` tokens after `prompt` (EOS cannot end it),
    timed as time to first token and decode time."""
    if new_tokens < 1 or not prompt:
        raise ValueError(f"a timed generation needs a prompt and at least one new token (got {len(prompt)}, "
                         f"{new_tokens})")
    t0 = time.perf_counter()   # a request starts with its own Generator (and key/value buffers)
    generator, ids = _generator(model, prompt, len(prompt) + new_tokens, forced=True)
    generator.append_tokens(ids)
    generator.generate_next_token()
    t1 = time.perf_counter()
    while not generator.is_done():   # no clock reads between steps: one rate for the run
        generator.generate_next_token()
    t2 = time.perf_counter()
    tokens = generator.get_sequence(0)[len(prompt):].tolist()
    if len(tokens) != new_tokens:
        raise RuntimeError(f"generation stopped after {len(tokens)} of {new_tokens} new tokens")
    return TimedRun(t1 - t0, t2 - t1, tokens)


def prefill(model, prompt: list[int]) -> None:
    """The prompt through the model and nothing more: an untimed run that lets the thread pools of
    the model timed before it go idle."""
    generator, ids = _generator(model, prompt, len(prompt) + 1, forced=False)
    generator.append_tokens(ids)


def complete(folder: Path, prompt: str, new_tokens: int, threads: int = 0) -> str:
    """The text a greedy generation adds to `prompt`: up to `new_tokens` tokens, fewer when the
    model emits EOS (special tokens are left out of the text)."""
    info = read(folder)
    limit = info.context_length or (1 << 30)
    ids = token_ids(folder, [prompt], limit)[0]
    if not ids:
        raise ValueError("the prompt has no tokens and the model no BOS token to start from")
    total = min(len(ids) + new_tokens, limit)
    if total <= len(ids):
        return ""
    generator, array = _generator(load(folder, threads), ids, total, forced=False)
    generator.append_tokens(array)
    while not generator.is_done():
        generator.generate_next_token()
    new = generator.get_sequence(0)[len(ids):].tolist()
    if new and new[-1] in info.eos:   # the EOS that ended it, special to the tokenizer or not
        new.pop()
    return tokenizer(folder).decode(new, skip_special_tokens=True)
