"""ONNX -> ONNX: time a grid of ONNX Runtime session settings on this host and record the fastest.

The graph is left as it is; the winner (and the table of every candidate measured) goes into the
`modelmake.session_options` metadata entry, which evaluation's latency runs and the package's
inference config then use. Thread counts and execution modes only pay off relative to a CPU, so
the pass is host dependent: its result is never reused on another kind of host.

Timing uses one fixed sentence, repeated and cut to exactly `sequence` tokens, rather than a
dataset: an encoder's run time depends on the input's shape, not on which tokens fill it, and a
dataset would add its content to the step's key for nothing.
"""
from __future__ import annotations

import itertools
import json

from modelmake.runtime import onnxmeta, sessions, timing
from modelmake.passes.base import ONNX, Field, Pass, PassConfig, StepContext
from modelmake.core.progress import bar

EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
GRAPH_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
METRICS = ("p50", "p90", "mean")
SENTENCE = "the film follows a family through a long war and its quiet ending is moving and well acted"

PASS = Pass(
    type="session-tune",
    summary="Time ORT session settings (threads, execution mode, graph level) on this host; record the fastest",
    fields=(
        Field("intra_op_threads", "list[int]", [1, 2],
              "intra-op thread counts to try; 0 = ORT's default (one per physical core)", min=0, min_items=1),
        Field("inter_op_threads", "list[int]", [1],
              "inter-op thread counts to try (only the parallel execution mode uses them); 0 = ORT's default",
              min=0, min_items=1),
        Field("execution_modes", "list[str]", ["sequential"],
              "execution modes to try: 'sequential' and/or 'parallel' (independent nodes run concurrently)",
              choices=tuple(EXECUTION_MODES), min_items=1),
        Field("graph_levels", "list[str]", ["all"],
              "ORT graph optimization levels to try: any of 'basic', 'extended', 'all'",
              choices=tuple(GRAPH_LEVELS), min_items=1),
        Field("batch", "int", 1, "rows per timed run", min=1),
        Field("sequence", "int", 128, "tokens per row in timed runs (a fixed sentence repeated to this length)",
              min=1, max=4096),
        Field("warmup", "int", 5, "untimed runs in each fresh session (every candidate, every round) before timing", min=0),
        Field("runs", "int", 30, "timed runs per candidate", min=5),
        Field("rounds", "int", 3,
              "sweeps over the grid, each timing a share of every candidate's runs, so a burst of load "
              "elsewhere on the host is spread over all candidates instead of sinking one", min=1),
        Field("metric", "str", "p50", "statistic of the timed runs that picks the winner",
              choices=METRICS),
    ),
    input_format=ONNX,
    output_format=ONNX,
    computes="as-input",
    version=1,
    libraries=("onnx", "onnxruntime"),
    run="modelmake.passes.session_tune:run",
    needs_tokenizer=True,
    host_dependent=True,
)


def candidates(config: PassConfig) -> list[dict]:
    """Every combination of the config's lists (each value once), as session settings in ORT's
    enum names. The recipe check has made sure each list holds at least one valid value."""
    intra, inter, modes, levels = (list(dict.fromkeys(values)) for values in (
        config.intra_op_threads, config.inter_op_threads, config.execution_modes, config.graph_levels))
    grid = []
    for mode, level, a, e in itertools.product(modes, levels, intra, inter):
        if mode == "sequential" and e != inter[0]:
            continue  # ORT ignores inter-op threads when sequential: timing them again says nothing
        grid.append({"intra_op_num_threads": a, "inter_op_num_threads": e,
                     "execution_mode": EXECUTION_MODES[mode], "graph_optimization_level": GRAPH_LEVELS[level]})
    return grid


def _time(model_path, settings: dict, encoded: dict, warmup: int, runs: int) -> list[float]:
    """Milliseconds of `runs` calls in a fresh session (one session alive at a time: another
    session's idle thread pool would spin on the cores being measured)."""
    session = sessions.session(model_path, settings=settings)
    feeds = sessions.feeds(session, encoded)
    timing.warm(session, feeds, warmup)
    return timing.timed(session, feeds, runs)


def _row(c: dict) -> str:
    return (f"{c['intra_op_num_threads']:>5} {c['inter_op_num_threads']:>5} "
            f"{c['execution_mode'].removeprefix('ORT_').lower():<10} "
            f"{c['graph_optimization_level'].removeprefix('ORT_ENABLE_').lower():<8}")


def run(ctx: StepContext) -> None:
    import onnx

    from modelmake.core.hostinfo import host_fingerprint
    from modelmake.runtime import batches

    cfg = ctx.config
    grid = candidates(cfg)
    if ctx.tokenizer_dir is None:
        raise ValueError("session-tune needs the tokenizer of the model (none was given to the step)")
    src = ctx.model_dir / onnxmeta.MODEL_FILE
    dst = ctx.out_dir / onnxmeta.MODEL_FILE
    words = SENTENCE.split()
    # Enough words that truncation, not padding, sets the length: every position is a real token.
    text = " ".join(words[i % len(words)] for i in range(cfg.sequence))
    encoded = batches.fixed(ctx.tokenizer_dir, [text], cfg.batch, cfg.sequence)

    rounds = min(cfg.rounds, cfg.runs)
    share, extra = divmod(cfg.runs, rounds)
    ctx.log(f"timing {len(grid)} candidates at batch {cfg.batch} x sequence {cfg.sequence}, "
            f"{cfg.runs} runs each over {rounds} rounds")
    times: list[list[float]] = [[] for _ in grid]
    with bar("session-tune", rounds * len(grid)) as progress:
        for r in range(rounds):
            # alternate the order so a steady drift in host load favours no end of the grid
            order = range(len(grid)) if r % 2 == 0 else reversed(range(len(grid)))
            for i in order:
                times[i] += _time(src, grid[i], encoded, cfg.warmup, share + (r < extra))
                progress.advance()
    for c, t in zip(grid, times):
        c.update(timing.stats(t, METRICS))
    # min() keeps the first of equal times, so ties go to the earlier (usually cheaper) candidate
    best = min(grid, key=lambda c: c[cfg.metric])
    ctx.log("intra inter mode       level     p50 ms   p90 ms  mean ms")
    for c in grid:
        mark = "  <- best" if c is best else ""
        ctx.log(f"{_row(c)} {c['p50']:8.2f} {c['p90']:8.2f} {c['mean']:8.2f}{mark}")

    record = {k: best[k] for k in sessions.SETTINGS}
    record["measured"] = {
        "metric": cfg.metric, "batch": cfg.batch, "sequence": cfg.sequence,
        "warmup": cfg.warmup, "runs": cfg.runs, "rounds": rounds, "host": host_fingerprint(),
        "candidates": [{k: round(v, 4) if isinstance(v, float) else v for k, v in c.items()} for c in grid],
    }
    model = onnx.load(str(src))
    onnxmeta.finish(dst, {onnxmeta.SESSION_OPTIONS: json.dumps(record, sort_keys=True, separators=(",", ":"))},
                    proto=model)
    worst = max(grid, key=lambda c: c[cfg.metric])
    ctx.log(f"best by {cfg.metric}: intra {best['intra_op_num_threads']}, inter "
            f"{best['inter_op_num_threads']}, {best['execution_mode']}, {best['graph_optimization_level']}: "
            f"{best[cfg.metric]:.2f} ms (slowest candidate {worst[cfg.metric]:.2f} ms)")
