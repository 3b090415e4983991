"""Metrics of an ONNX classifier on this host: accuracy/F1 on labelled texts, latency, memory,
size, and the user's own metrics. How each is measured is described in docs/evaluation.md.

Functions only; the build graph decides when they run and where their results are stored.
"""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Callable

from modelmake.core.progress import bar, say
from modelmake.metrics.catalogue import CUSTOM_ARGS, EMBEDDING_OUTPUTS

LATENCY_BLOCK = 10   # timed runs of one model before the next model takes its turn
MEMORY_RUNS = 10     # inferences of the latency batch in the memory probe


def f1_score(targets: list[int], predictions: list[int], n_classes: int) -> float:
    """F1 of class 1 for a 2-class model; otherwise macro F1 over the classes that occur (as sklearn)."""
    classes = [1] if n_classes == 2 else sorted(set(targets) | set(predictions))

    def f1(c: int) -> float:
        tp = sum(t == c and p == c for t, p in zip(targets, predictions))
        fp = sum(t != c and p == c for t, p in zip(targets, predictions))
        fn = sum(t == c and p != c for t, p in zip(targets, predictions))
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

    return sum(f1(c) for c in classes) / len(classes)


def predict(model_path: Path, tokenizer_dir: Path, texts: list[str], batch_size: int = 32,
            max_length: int = 128) -> tuple[list[int], int]:
    """(argmax class of every text, number of classes); rows of similar length share a batch."""
    from modelmake.core import textenc
    from modelmake.runtime import batches, sessions

    logits = batches.outputs(sessions.session(model_path), textenc.load(tokenizer_dir, max_length), texts,
                             batch_size, label="evaluate")
    return logits.argmax(axis=-1).tolist(), logits.shape[-1]


def measure_quality(model_path: Path, tokenizer_dir: Path, texts: list[str], labels: list[int],
                    batch_size: int = 32, max_length: int = 128) -> dict:
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need as many labels as texts and at least one (got {len(texts)}, {len(labels)})")
    predictions, n_classes = predict(model_path, tokenizer_dir, texts, batch_size, max_length)
    correct = sum(p == y for p, y in zip(predictions, labels))
    return {"accuracy": correct / len(texts), "f1": f1_score(list(labels), predictions, n_classes),
            "samples": len(texts)}


# ---------------------------------------------------------------- latency
def measure_latencies(models: dict[str, tuple[Path, Path]], texts: list[str], batch: int = 1,
                      sequence: int = 128, warmup: int = 10, runs: int = 100, threads: int = 0,
                      throughput_batch: int = 32, throughput_runs: int = 10, max_runs: int | None = None,
                      stable_percent: float = 2.0) -> dict[str, dict]:
    """Latency percentiles at batch x sequence and throughput at throughput_batch x sequence of
    every model ({role: (model.onnx, tokenizer folder)}), timed in turns in one process.

    Every model gets a session and `warmup` untimed runs first. Then the models take turns of
    LATENCY_BLOCK timed runs each (the order reverses every round), each turn starting with one
    untimed run: load from elsewhere on the host falls on all models alike, and an idle session's
    thread pool, still spinning right after its turn, does not slow the next model's timed runs.
    After `runs` runs per model, more rounds follow while the 95% confidence interval of any
    model's median is wider than ±stable_percent of it, up to `max_runs` (None: exactly `runs`).

    threads = 0 runs each model as it will be deployed: with the session settings session-tune
    recorded in it if it has them (as the package's inference config does), else ORT's defaults.
    threads > 0 forces that many intra-op threads and ignores any recorded settings.
    """
    from modelmake.runtime import batches, sessions, timing

    if not texts:
        raise ValueError("latency needs at least one text")
    limit = max(runs, max_runs or runs)
    running, used_threads = {}, {}
    for role, (model_path, tokenizer_dir) in models.items():
        used_threads[role], settings = sessions.deployed_settings(model_path, threads)
        session = sessions.session(model_path, used_threads[role], settings)
        feeds = sessions.feeds(session, batches.fixed(tokenizer_dir, texts, batch, sequence))
        timing.warm(session, feeds, warmup)
        running[role] = (session, feeds)
    times: dict[str, list[float]] = {role: [] for role in models}
    roles, target, rounds = list(models), runs, 0
    with bar("latency", -(-runs // LATENCY_BLOCK) * len(roles)) as progress:
        while True:
            while min(len(t) for t in times.values()) < target:
                for role in roles if rounds % 2 == 0 else roles[::-1]:
                    session, feeds = running[role]
                    timing.warm(session, feeds, 1)
                    times[role] += timing.timed(session, feeds, min(LATENCY_BLOCK, target - len(times[role])))
                    if len(times[role]) <= runs:
                        progress.advance()
                rounds += 1
            spread = {role: timing.ci_percent(t) for role, t in times.items()}
            if max(spread.values()) <= stable_percent or target >= limit:
                break
            if target == runs:
                say(f"    latency: p50 not yet within ±{stable_percent:g}% after {runs} runs "
                    f"({_spread(spread)}); timing up to {limit} runs")
            target = min(limit, target + LATENCY_BLOCK)
    if target > runs:
        say(f"    latency: p50 within {_spread(spread)} after {target} runs")
    out = {}
    for role in roles:
        session, _ = running[role]
        _, tokenizer_dir = models[role]
        big = sessions.feeds(session, batches.fixed(tokenizer_dir, texts, throughput_batch, sequence))
        timing.warm(session, big, 1)  # first call at a new shape allocates; keep it out of the timing
        elapsed = timing.elapsed(session, big, throughput_runs)
        lo, hi = timing.median_ci(times[role])
        out[role] = {
            **{f"latency_ms.{k}": v for k, v in timing.stats(times[role]).items()},
            "latency_ms.p50_ci_low": lo, "latency_ms.p50_ci_high": hi,
            "throughput_per_s": throughput_batch * throughput_runs / elapsed,
            "threads": used_threads[role] or os.cpu_count(),
            "runs": len(times[role]),
        }
    return out


def time_in_turns(models: dict[str, tuple[Path, Path]], texts: list[str], latency: dict) -> dict[str, dict]:
    """measure_latencies with a recipe's normalized `[evaluate] latency` table (its keys are that
    function's parameters: inputs/recipe.py LATENCY)."""
    return measure_latencies(models, texts, **latency)


def _spread(spread: dict[str, float]) -> str:
    return ", ".join(f"±{v:.1f}% {role}" for role, v in spread.items())


# ---------------------------------------------------------------- memory and size
def measure_memory(model_path: Path, tokenizer_dir: Path, texts: list[str], batch: int = 1,
                   sequence: int = 128, threads: int = 0) -> dict:
    """Peak RSS increase (MB) of creating a session and running the latency batch MEMORY_RUNS
    times, measured in a fresh child process (modelmake.metrics.memprobe) so that nothing else this
    process holds or frees counts."""
    if not texts:
        raise ValueError("memory needs at least one text")
    from modelmake.runtime.sessions import deployed_settings

    used, settings = deployed_settings(model_path, threads)
    rows = [texts[i % len(texts)] for i in range(batch)]
    request = {"model": str(model_path), "tokenizer": str(tokenizer_dir), "rows": rows, "sequence": sequence,
               "threads": used, "settings": settings, "runs": MEMORY_RUNS}
    from modelmake.metrics import memprobe

    return memprobe.probe(request, str(model_path))


def size_mb(model_path: Path) -> float:
    """Bytes of the model file plus any external data files it references, in MB (1e6)."""
    from modelmake.runtime import onnxmeta

    model_path = Path(model_path)
    files = [model_path] + [model_path.parent / f for f in onnxmeta.external_files(model_path)]
    return sum(f.stat().st_size for f in files) / 1e6


# ---------------------------------------------------------------- custom metrics
class CustomMetricError(Exception):
    """A custom metric could not be measured. The message names the recipe key and says why;
    runner prints it as it is (no exception class name)."""

    plain = True


def _project_folder(file: Path, function: str) -> Path:
    """The folder `module:function` is imported from, given the module's file in it."""
    depth = function.partition(":")[0].count(".") + (Path(file).name == "__init__.py")
    return Path(file).absolute().parents[depth]


def _is_pair(t) -> bool:
    return isinstance(t, tuple) and len(t) == 2 and all(isinstance(x, str) for x in t)


def _predictor(model_path: Path, tokenizer_dir: Path, batch_size: int, max_length: int):
    state: dict = {}

    def predict(texts: list[str]):
        """Logits of the model for `texts`: a float32 array with one row per text."""
        import numpy as np

        from modelmake.core import textenc
        from modelmake.runtime import batches, sessions

        if isinstance(texts, str) or not all(isinstance(t, str) or _is_pair(t) for t in texts):
            raise TypeError("predict takes a list of strings (or of pairs of strings, for a dataset of pairs)")
        if not texts:
            return np.zeros((0, 0), np.float32)
        if not state:
            state["session"] = sessions.session(model_path)
            state["tok"] = textenc.load(tokenizer_dir, max_length)
        return batches.outputs(state["session"], state["tok"], list(texts), batch_size).astype(np.float32)

    return predict


def measure_custom(name: str, function: str, file: Path, where: str, model_path: Path, tokenizer_dir: Path,
                   texts: list[str], labels: list[int] | None, batch_size: int = 32, max_length: int = 128) -> dict:
    """Call the user's `function` (from `file`) with the arguments it names (CUSTOM_ARGS; labels
    is None for a dataset without labels, texts holds pairs for a dataset of pairs) and return its number as {name: value}, or its dict of numbers as {name.key: value}."""
    from modelmake.core import usercode

    given = {"model": Path(model_path), "tokenizer": Path(tokenizer_dir), "texts": list(texts),
             "labels": None if labels is None else list(labels), "predict": _predictor(Path(model_path), Path(tokenizer_dir),
                                                           batch_size, max_length)}
    with usercode.loaded(_project_folder(file, function), function, where, CustomMetricError) as fn:
        kwargs = _arguments(fn, given, function, where)
        try:
            result = fn(**kwargs)
        except Exception as e:  # noqa: BLE001 - the user's code
            raise CustomMetricError(f"{where}: {function} raised {usercode.first_line(e)}") from e
    return _numbers(name, result, f"{where}: {function}")


def _arguments(fn: Callable, given: dict, function: str, where: str) -> dict:
    """The arguments of `given` that `fn` names (all of them when it takes **kwargs)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    named = [p for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for p in named:
        if p.name not in given and p.default is p.empty:
            raise CustomMetricError(f"{where}: {function} takes {p.name!r}, which evaluation does not give "
                                    f"(it gives {', '.join(CUSTOM_ARGS)})")
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return given
    return {p.name: given[p.name] for p in named if p.name in given}


def _numbers(name: str, result, where: str) -> dict[str, float]:
    def number(v) -> float | None:
        # numbers.Real also admits numpy's scalars (np.float32(0.8) from a numpy computation)
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return None
        v = float(v)
        return v if math.isfinite(v) else None

    if isinstance(result, dict):
        out = {}
        for k, v in result.items():
            if not isinstance(k, str) or not k or not all(c.isalnum() or c == "_" for c in k):
                raise CustomMetricError(f"{where} returned a dict with key {k!r}; keys must be names "
                                        "(letters, digits, '_')")
            if (out_v := number(v)) is None:
                raise CustomMetricError(f"{where} returned {k!r}: {v!r}; expected a finite number")
            out[f"{name}.{k}"] = out_v
        if not out:
            raise CustomMetricError(f"{where} returned an empty dict; expected a number or a dict of numbers")
        return out
    if (value := number(result)) is None:
        shown = repr(result)
        raise CustomMetricError(f"{where} returned {shown[:60]}; expected a finite number or a dict of numbers")
    return {name: value}


# ---------------------------------------------------------------- similarity to the baseline
def output_name(session, task: str) -> str:
    """The output that is the model's answer: a classifier's logits (its first output, as
    accuracy reads it); an encoder's `embeddings` (onnx-export), `sentence_embedding`
    (sentence-transformers' ONNX files) or `last_hidden_state`, else its first output."""
    names = [o.name for o in session.get_outputs()]
    if task != "text-classification":
        return next((n for n in EMBEDDING_OUTPUTS if n in names), names[0])
    return names[0]


def pool_tokens(states, attention_mask):
    """Attention-masked mean of token states [batch, sequence, hidden] -> [batch, hidden]."""
    import numpy as np

    mask = attention_mask[..., None].astype(states.dtype)
    return (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)


def model_outputs(model_path: Path, tokenizer_dir: Path, texts: list[str], task: str, batch_size: int = 32,
                  max_length: int = 128, label: str = "outputs"):
    """One float64 row per text: a classifier's logits or an encoder's sentence embedding (token
    states are mean-pooled over the attention mask). Rows of similar length share a batch."""
    import numpy as np

    from modelmake.core import textenc
    from modelmake.runtime import batches, sessions

    session = sessions.session(model_path)
    name = output_name(session, task)

    def rows(out, encoded):
        if out.ndim == 3:
            out = pool_tokens(out, encoded["attention_mask"])
        if out.ndim != 2:
            raise ValueError(f"{model_path}: output {name!r} has shape {list(out.shape)}; expected "
                             "[batch, values] (or token states [batch, sequence, hidden])")
        return out.astype(np.float64)

    return batches.outputs(session, textenc.load(tokenizer_dir, max_length), texts, batch_size, output=name,
                           rows=rows, label=label)


def cosine_stats(model_rows, baseline_rows, classifier: bool) -> dict:
    """Per-row cosine of two output matrices, summarized: mean, min and 5th percentile (the
    worst texts matter more than the average for a drop-in replacement); for a classifier also
    how often both pick the same class."""
    import numpy as np

    a, b = np.asarray(model_rows, np.float64), np.asarray(baseline_rows, np.float64)
    if a.shape != b.shape or not len(a):
        raise ValueError(f"similarity compares outputs of one shape; the model gives {list(a.shape)}, "
                         f"the baseline {list(b.shape)}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(axis=1) / norms
    # a zero vector has no direction: it matches only itself
    cos = np.where(norms == 0, np.all(a == b, axis=1).astype(np.float64), np.clip(cos, -1.0, 1.0))
    out = {"similarity.cosine_mean": float(cos.mean()), "similarity.cosine_min": float(cos.min()),
           "similarity.cosine_p5": float(np.percentile(cos, 5)), "samples": len(cos)}
    if classifier:
        out["similarity.agreement"] = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    return out


def measure_similarity(model: tuple[Path, Path], baseline: tuple[Path, Path], texts: list[str], task: str,
                       batch_size: int = 32, max_length: int = 128) -> dict:
    """Cosine similarity of the model's outputs with the baseline's on the same texts, batched alike
    ((model.onnx, tokenizer folder) each)."""
    if not texts:
        raise ValueError("similarity needs at least one text")
    rows = [model_outputs(path, tok, texts, task, batch_size, max_length, label=f"similarity {role}")
            for role, (path, tok) in (("model", model), ("baseline", baseline))]
    return cosine_stats(rows[0], rows[1], classifier=task == "text-classification")
