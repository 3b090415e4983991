"""Metrics of a decoder language model (the text-generation task) on this host: perplexity on
texts, generation speed (time to first token, decode rate), peak memory and size.

A model is a folder written by onnxruntime-genai's model builder (runtime/decoder.py reads it).
Functions only; the build graph decides when they run and where their results are stored.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from modelmake.core.progress import bar


def measure_perplexity(model_dir: Path, texts: list[str], max_length: int, threads: int = 0) -> dict:
    """exp(total negative log-likelihood / total predicted tokens) over the texts, each scored as
    [bos] + its tokens (at most max_length in all) in one teacher-forced pass."""
    from modelmake.runtime import decoder

    if not texts:
        raise ValueError("perplexity needs at least one text")
    sequences = decoder.token_ids(model_dir, texts, max_length)
    scored = decoder.sequence_nll(model_dir, sequences, threads, label="perplexity")
    nll = sum(s for s, _ in scored)
    tokens = sum(n for _, n in scored)
    if not tokens:
        raise ValueError(f"perplexity needs a text of at least one token after the first "
                         f"(max_length = {max_length}; {len(texts)} texts)")
    return {"perplexity": math.exp(nll / tokens), "perplexity_tokens": tokens, "samples": len(texts)}


def _fits(model_dir: Path, g: dict) -> None:
    from modelmake.runtime import decoder

    limit = decoder.read(model_dir).context_length
    if limit and g["prompt_tokens"] + g["new_tokens"] > limit:
        raise ValueError(f"{model_dir}: prompt_tokens + new_tokens = {g['prompt_tokens'] + g['new_tokens']} is more "
                         f"than the model's context length ({limit})")


def time_generation(models: dict[str, Path], texts: list[str], generation: dict) -> dict[str, dict]:
    """Greedy generation speed of every model ({role: folder}) at batch 1, timed in turns in this
    process: a prompt of exactly prompt_tokens tokens (the texts' tokens, repeated if short) and
    exactly new_tokens new ones (EOS cannot end a run early).

    Every model is loaded once and runs `warmup` untimed generations. Then each round gives every
    model one timed run, in an order that reverses every round, so load from elsewhere on the host
    falls on all models alike; each turn starts with an untimed prefill, so that the thread pool
    of the model before, still spinning right after its turn, does not slow the prompt timed next.

    Time to first token is a new generator, the prefill and the first token's pick; the decode
    rate is the other new_tokens - 1 tokens over their time, the median of the runs' rates.
    threads = 0 runs each model with its genai_config.json as deployed; threads > 0 forces that
    many intra-op threads. `generation` is a recipe's normalized [evaluate.generation] table
    (inputs/recipe.py GENERATION: prompt_tokens, new_tokens, warmup, runs, threads).
    """
    from modelmake.runtime import decoder, timing

    if not texts:
        raise ValueError("generation timing needs at least one text to make the prompt of")
    loaded, prompts, used = {}, {}, {}
    for role, folder in models.items():
        _fits(folder, generation)
        prompts[role] = decoder.prompt_ids(folder, texts, generation["prompt_tokens"])
        used[role] = decoder.generation_threads(folder, generation["threads"])
        loaded[role] = decoder.load(folder, generation["threads"])
        for _ in range(generation["warmup"]):
            decoder.timed_run(loaded[role], prompts[role], generation["new_tokens"])
    ttft: dict[str, list[float]] = {role: [] for role in models}
    per_token: dict[str, list[float]] = {role: [] for role in models}
    roles = list(models)
    with bar("generation", generation["runs"] * len(roles)) as progress:
        for r in range(generation["runs"]):
            for role in roles if r % 2 == 0 else roles[::-1]:
                decoder.prefill(loaded[role], prompts[role])
                run = decoder.timed_run(loaded[role], prompts[role], generation["new_tokens"])
                ttft[role].append(run.ttft_s * 1e3)
                per_token[role].append(run.decode_s * 1e3 / (generation["new_tokens"] - 1))
                progress.advance()
    out = {}
    for role in roles:
        first = timing.stats(ttft[role], ("p50", "p90"))
        out[role] = {"ttft_ms.p50": first["p50"], "ttft_ms.p90": first["p90"],
                     "decode_tokens_per_s": statistics.median(1e3 / ms for ms in per_token[role]),
                     "decode_ms_per_token.p50": timing.stats(per_token[role], ("p50",))["p50"],
                     "runs": generation["runs"], "threads": used[role]}
    return out


def measure_generation_memory(model_dir: Path, texts: list[str], generation: dict) -> dict:
    """Peak RSS increase (MB) of loading the model with onnxruntime-genai and generating once
    (prompt_tokens + new_tokens), measured in a fresh child process (modelmake.metrics.memprobe)."""
    from modelmake.metrics import memprobe
    from modelmake.runtime import decoder

    if not texts:
        raise ValueError("memory needs at least one text to make the prompt of")
    _fits(model_dir, generation)
    request = {"kind": "generation", "folder": str(model_dir), "threads": generation["threads"],
               "prompt": decoder.prompt_ids(model_dir, texts, generation["prompt_tokens"]),
               "new_tokens": generation["new_tokens"]}
    return memprobe.probe(request, str(model_dir))


def size_mb(model_dir: Path) -> float:
    """Bytes of every .onnx and .onnx.data file in the folder, in MB (1e6)."""
    files = [p for p in Path(model_dir).iterdir() if p.is_file() and p.name.endswith((".onnx", ".onnx.data"))]
    if not files:
        raise ValueError(f"{model_dir}: no .onnx file")
    return sum(p.stat().st_size for p in files) / 1e6
