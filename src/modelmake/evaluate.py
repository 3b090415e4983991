"""Metrics of an ONNX classifier on this host: accuracy/F1 on labelled texts, latency, size.

Functions only; the build graph decides when they run and where their results are stored.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from modelmake.progress import bar


def _session(model_path: Path, threads: int = 0, settings: dict | None = None):
    """A CPU session: ORT_ENABLE_ALL with `threads` intra-op threads (0 = ORT's default, one per
    physical core), or exactly the `settings` session-tune recorded when they are given."""
    import onnxruntime as ort

    from modelmake.passes.session_tune import session_options

    options = session_options(settings, threads)
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def tuned_settings(model_path: Path) -> dict | None:
    """The session settings session-tune recorded in the model's metadata, or None."""
    from modelmake.passes import onnxmeta
    from modelmake.passes.session_tune import settings_of

    return settings_of(onnxmeta.read(Path(model_path)))


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

    from modelmake import textenc

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
    from modelmake import textenc

    # Cycle the texts so any batch size works; every row is padded/truncated to `sequence`.
    rows = [texts[i % len(texts)] for i in range(batch)]
    return textenc.encode(tokenizer_dir, rows, max_length=sequence, pad_to=sequence)


def measure_latency(model_path: Path, tokenizer_dir: Path, texts: list[str], batch: int = 1,
                    sequence: int = 128, warmup: int = 10, runs: int = 100, threads: int = 0,
                    throughput_batch: int = 32, throughput_runs: int = 10) -> dict:
    """Latency percentiles at batch x sequence, and throughput at throughput_batch x sequence.

    threads = 0 runs the model as it will be deployed: with the session settings session-tune
    recorded in it if it has them (as the package's inference config does), else ORT's defaults.
    threads > 0 forces that many intra-op threads and ignores any recorded settings.
    """
    import numpy as np

    if not texts:
        raise ValueError("latency needs at least one text")
    settings = tuned_settings(model_path) if threads == 0 else None
    if settings is not None:
        threads = settings["intra_op_num_threads"]
    session = _session(model_path, threads, settings)
    feeds = _feeds(session, _fixed_batch(tokenizer_dir, texts, batch, sequence))
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    with bar("latency", runs + throughput_runs) as progress:
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, feeds)
            times.append((time.perf_counter() - t0) * 1e3)
            progress.advance()
        big = _feeds(session, _fixed_batch(tokenizer_dir, texts, throughput_batch, sequence))
        session.run(None, big)  # first call at a new shape allocates; keep it out of the timing
        t0 = time.perf_counter()
        for _ in range(throughput_runs):
            session.run(None, big)
            progress.advance()
        elapsed = time.perf_counter() - t0
    p50, p90, p99 = np.percentile(np.array(times), [50, 90, 99]).tolist()
    return {
        "latency_ms.p50": p50, "latency_ms.p90": p90, "latency_ms.p99": p99,
        "latency_ms.mean": float(np.mean(times)),
        "throughput_per_s": throughput_batch * throughput_runs / elapsed,
        "threads": threads or os.cpu_count(),
        "runs": runs,
    }


def size_mb(model_path: Path) -> float:
    """Bytes of the model file plus any external data files it references, in MB (1e6)."""
    from modelmake.passes import onnxmeta

    model_path = Path(model_path)
    files = [model_path] + [model_path.parent / f for f in onnxmeta.external_files(model_path)]
    return sum(f.stat().st_size for f in files) / 1e6
