"""Metrics of an ONNX classifier on this host: accuracy/F1 on labelled texts, latency, memory,
size, and the user's own metrics. How each is measured is described in docs/evaluation.md.

Functions only; the build graph decides when they run and where their results are stored.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from modelmake.core.progress import bar, say

# The metric families a recipe asks for in `[evaluate] metrics`, and the numbers each one puts
# into metrics.json with their direction (True: higher is better), which goals need. A new
# family is a row here and a measuring function in runner._FAMILIES.
FAMILIES: dict[str, dict[str, bool]] = {
    "accuracy": {"accuracy": True},
    "f1": {"f1": True},
    # cosine of the model's outputs (embeddings or logits) with the baseline's, per text
    "similarity": {"similarity.cosine_mean": True, "similarity.cosine_min": True, "similarity.cosine_p5": True,
                   "similarity.agreement": True},
    "latency": {"latency_ms.p50": False, "latency_ms.p90": False, "latency_ms.p99": False,
                "latency_ms.mean": False},
    "throughput": {"throughput_per_s": True},
    "size": {"size_mb": False},
    "memory": {"memory_mb": False},
}
# what a model.task allows: accuracy and F1 need a classifier; similarity compares with a baseline
# (its numbers are already a comparison, so there is no baseline value or delta of them)
TASKS = ("text-classification", "feature-extraction")
CLASSIFIER_ONLY = ("accuracy", "f1", "similarity.agreement")
COMPARED = ("similarity",)
# an encoder's outputs that hold its answer, by preference: onnx-export's pooled embedding,
# sentence-transformers' ONNX files' one, token states (mean-pooled by whoever reads them)
EMBEDDING_OUTPUTS = ("embeddings", "sentence_embedding", "last_hidden_state")
# metrics whose ratio to the baseline is a speed-up (goal min_speedup)
TIMED = ("latency_ms.p50", "latency_ms.p90", "latency_ms.p99", "latency_ms.mean", "throughput_per_s")
# what a custom metric function may take, by parameter name
CUSTOM_ARGS = ("model", "tokenizer", "texts", "labels", "predict")
LATENCY_BLOCK = 10   # timed runs of one model before the next model takes its turn
MEMORY_RUNS = 10     # inferences of the latency batch in the memory probe


def _session(model_path: Path, threads: int = 0, settings: dict | None = None):
    """A CPU session: ORT_ENABLE_ALL with `threads` intra-op threads (0 = ORT's default, one per
    physical core), or exactly the `settings` session-tune recorded when they are given."""
    import onnxruntime as ort

    from modelmake.passes.session_tune import session_options

    options = session_options(settings, threads)
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def tuned_settings(model_path: Path) -> dict | None:
    """The session settings session-tune recorded in the model's metadata, or None."""
    from modelmake.runtime import onnxmeta
    from modelmake.passes.session_tune import settings_of

    return settings_of(onnxmeta.read(Path(model_path)))


def deployed_settings(model_path: Path, threads: int) -> tuple[int, dict | None]:
    """(intra-op threads, session settings) a timing run uses: threads > 0 forces that many and
    ignores recorded settings; 0 runs the model as deployed (session-tune's settings, if any)."""
    settings = tuned_settings(model_path) if threads == 0 else None
    return (settings["intra_op_num_threads"] if settings else threads), settings


def _feeds(session, encoded: dict) -> dict:
    return {i.name: encoded[i.name] for i in session.get_inputs()}


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
    """(argmax class of every text, number of classes); each batch is padded to its longest text."""
    import numpy as np

    from modelmake.core import textenc

    session = _session(model_path)
    tok = textenc.load(tokenizer_dir, max_length)
    predictions: list[int] = []
    n_classes = 0
    n_batches = (len(texts) + batch_size - 1) // batch_size
    with bar("evaluate", n_batches) as progress:
        for start in range(0, len(texts), batch_size):
            encoded = textenc.encode_with(tok, texts[start:start + batch_size])
            logits = session.run(None, _feeds(session, encoded))[0]
            n_classes = logits.shape[-1]
            predictions.extend(np.argmax(logits, axis=-1).tolist())
            progress.advance()
    return predictions, n_classes


def measure_quality(model_path: Path, tokenizer_dir: Path, texts: list[str], labels: list[int],
                    batch_size: int = 32, max_length: int = 128) -> dict:
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need as many labels as texts and at least one (got {len(texts)}, {len(labels)})")
    predictions, n_classes = predict(model_path, tokenizer_dir, texts, batch_size, max_length)
    correct = sum(p == y for p, y in zip(predictions, labels))
    return {"accuracy": correct / len(texts), "f1": f1_score(list(labels), predictions, n_classes),
            "samples": len(texts)}


def _fixed_batch(tokenizer_dir: Path, texts: list[str], batch: int, sequence: int) -> dict:
    from modelmake.core import textenc

    # Cycle the texts so any batch size works; every row is padded/truncated to `sequence`.
    rows = [texts[i % len(texts)] for i in range(batch)]
    return textenc.encode(tokenizer_dir, rows, max_length=sequence, pad_to=sequence)


# ---------------------------------------------------------------- latency
def median_ci(times: list[float]) -> tuple[float, float]:
    """A distribution-free 95% confidence interval of the median: two order statistics whose
    ranks come from the binomial(n, 1/2) distribution (normal approximation). Below 8 runs the
    interval is the whole range, which covers the median with at least 94% confidence."""
    xs = sorted(times)
    n = len(xs)
    half = 1.96 * math.sqrt(n)
    lo = max(int(math.floor((n - half) / 2)), 1)        # 1-based ranks
    hi = min(int(math.ceil(1 + (n + half) / 2)), n)
    return xs[lo - 1], xs[hi - 1]


def ci_percent(times: list[float]) -> float:
    """Half-width of the median's 95% confidence interval, in percent of the median."""
    import statistics

    lo, hi = median_ci(times)
    return 100 * (hi - lo) / 2 / statistics.median(times)


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
    """
    import numpy as np

    if not texts:
        raise ValueError("latency needs at least one text")
    limit = max(runs, max_runs or runs)
    sessions, used_threads = {}, {}
    for role, (model_path, tokenizer_dir) in models.items():
        used_threads[role], settings = deployed_settings(model_path, threads)
        session = _session(model_path, used_threads[role], settings)
        feeds = _feeds(session, _fixed_batch(tokenizer_dir, texts, batch, sequence))
        for _ in range(warmup):
            session.run(None, feeds)
        sessions[role] = (session, feeds)
    times: dict[str, list[float]] = {role: [] for role in models}
    roles, target, rounds = list(models), runs, 0
    with bar("latency", -(-runs // LATENCY_BLOCK) * len(roles)) as progress:
        while True:
            while min(len(t) for t in times.values()) < target:
                for role in roles if rounds % 2 == 0 else roles[::-1]:
                    session, feeds = sessions[role]
                    session.run(None, feeds)
                    for _ in range(min(LATENCY_BLOCK, target - len(times[role]))):
                        t0 = time.perf_counter()
                        session.run(None, feeds)
                        times[role].append((time.perf_counter() - t0) * 1e3)
                    if len(times[role]) <= runs:
                        progress.advance()
                rounds += 1
            spread = {role: ci_percent(t) for role, t in times.items()}
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
        session, _ = sessions[role]
        _, tokenizer_dir = models[role]
        big = _feeds(session, _fixed_batch(tokenizer_dir, texts, throughput_batch, sequence))
        session.run(None, big)  # first call at a new shape allocates; keep it out of the timing
        t0 = time.perf_counter()
        for _ in range(throughput_runs):
            session.run(None, big)
        elapsed = time.perf_counter() - t0
        p50, p90, p99 = np.percentile(np.array(times[role]), [50, 90, 99]).tolist()
        lo, hi = median_ci(times[role])
        out[role] = {
            "latency_ms.p50": p50, "latency_ms.p90": p90, "latency_ms.p99": p99,
            "latency_ms.mean": float(np.mean(times[role])),
            "latency_ms.p50_ci_low": lo, "latency_ms.p50_ci_high": hi,
            "throughput_per_s": throughput_batch * throughput_runs / elapsed,
            "threads": used_threads[role] or os.cpu_count(),
            "runs": len(times[role]),
        }
    return out


def _spread(spread: dict[str, float]) -> str:
    return ", ".join(f"±{v:.1f}% {role}" for role, v in spread.items())


def measure_latency(model_path: Path, tokenizer_dir: Path, texts: list[str], batch: int = 1,
                    sequence: int = 128, warmup: int = 10, runs: int = 100, threads: int = 0,
                    throughput_batch: int = 32, throughput_runs: int = 10, max_runs: int | None = None,
                    stable_percent: float = 2.0) -> dict:
    """measure_latencies of one model.

    threads = 0 runs the model as it will be deployed: with the session settings session-tune
    recorded in it if it has them (as the package's inference config does), else ORT's defaults.
    threads > 0 forces that many intra-op threads and ignores any recorded settings.
    """
    return measure_latencies({"model": (model_path, tokenizer_dir)}, texts, batch, sequence, warmup, runs,
                             threads, throughput_batch, throughput_runs, max_runs, stable_percent)["model"]


# ---------------------------------------------------------------- memory and size
def measure_memory(model_path: Path, tokenizer_dir: Path, texts: list[str], batch: int = 1,
                   sequence: int = 128, threads: int = 0) -> dict:
    """Peak RSS increase (MB) of creating a session and running the latency batch MEMORY_RUNS
    times, measured in a fresh child process (modelmake.metrics.memprobe) so that nothing else this
    process holds or frees counts."""
    if not texts:
        raise ValueError("memory needs at least one text")
    used, settings = deployed_settings(model_path, threads)
    rows = [texts[i % len(texts)] for i in range(batch)]
    request = {"model": str(model_path), "tokenizer": str(tokenizer_dir), "rows": rows, "sequence": sequence,
               "threads": used, "settings": settings, "runs": MEMORY_RUNS}
    # -P: the project folder (the working directory) stays off sys.path, so a module of the
    # user's named like a library cannot stand in for it
    proc = subprocess.run([sys.executable, "-P", "-m", "modelmake.metrics.memprobe"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RuntimeError(f"memory probe of {model_path} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def _predictor(model_path: Path, tokenizer_dir: Path, batch_size: int, max_length: int):
    state: dict = {}

    def predict(texts: list[str]):
        """Logits of the model for `texts`: a float32 array with one row per text."""
        import numpy as np

        from modelmake.core import textenc

        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("predict takes a list of strings")
        if not state:
            state["session"] = _session(model_path)
            state["tok"] = textenc.load(tokenizer_dir, max_length)
        session, out = state["session"], []
        for start in range(0, len(texts), batch_size):
            encoded = textenc.encode_with(state["tok"], list(texts[start:start + batch_size]))
            out.append(session.run(None, _feeds(session, encoded))[0])
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    return predict


def measure_custom(name: str, function: str, file: Path, where: str, model_path: Path, tokenizer_dir: Path,
                   texts: list[str], labels: list[int], batch_size: int = 32, max_length: int = 128) -> dict:
    """Call the user's `function` (from `file`) with the arguments it names (CUSTOM_ARGS) and
    return its number as {name: value}, or its dict of numbers as {name.key: value}."""
    from modelmake.core import usercode

    given = {"model": Path(model_path), "tokenizer": Path(tokenizer_dir), "texts": list(texts),
             "labels": list(labels), "predict": _predictor(Path(model_path), Path(tokenizer_dir),
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
def default_metrics(task: str, has_baseline: bool) -> list[str]:
    """The `[evaluate] metrics` of a recipe that lists none: every family that applies. For a
    classifier that leaves out similarity (accuracy and F1 say more); an encoder has no accuracy,
    so it gets similarity whenever there is a baseline to compare with."""
    return [f for f in FAMILIES
            if not (task != "text-classification" and f in CLASSIFIER_ONLY)
            and not (f in COMPARED and (task == "text-classification" or not has_baseline))]


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
    states are mean-pooled over the attention mask). Batches are padded to their longest text."""
    import numpy as np

    from modelmake.core import textenc

    session = _session(model_path)
    tok = textenc.load(tokenizer_dir, max_length)
    name = output_name(session, task)
    rows = []
    with bar(label, (len(texts) + batch_size - 1) // batch_size) as progress:
        for start in range(0, len(texts), batch_size):
            encoded = textenc.encode_with(tok, texts[start:start + batch_size])
            out = session.run([name], _feeds(session, encoded))[0]
            if out.ndim == 3:
                out = pool_tokens(out, encoded["attention_mask"])
            if out.ndim != 2:
                raise ValueError(f"{model_path}: output {name!r} has shape {list(out.shape)}; expected "
                                 "[batch, values] (or token states [batch, sequence, hidden])")
            rows.append(out.astype(np.float64))
            progress.advance()
    return np.concatenate(rows)


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
