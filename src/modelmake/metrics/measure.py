"""Evaluation of one recipe's model and its baseline: every metric family the recipe asks for,
each measurement a stored result of its own (keyed by what determines it), combined into flat
metrics and judged against the recipe's goals.

The build's eval step (build/runner.py) hands over an `Evaluation`, the test rows (loaded on first
use), a `keep` function that gets a result from the store or computes and stores it, and a
`local` function that gives the folder holding a model's or tokenizer's files; nothing here knows
about doit or the store. Keys use only the folders' content digests, and the files are asked for
inside `compute` alone, so a measurement found in the store reads no model file (a folder whose
files are still in the remote is not downloaded for it). A new metric family is one function in
`_FAMILIES` and a row in the metric catalogue.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from modelmake.core import digest
from modelmake.core.digest import folder_content
from modelmake.core.progress import say
from modelmake.metrics import goals

# (key, label, compute) -> the result: from the store, or computed and stored
Keep = Callable[[str, str, Callable[[], dict]], dict]
# () -> (texts, labels) of the test split: a text may be a pair; labels None for text alone
Rows = Callable[[], tuple[list, "list[int] | None"]]
# (folder, only these files or None) -> a local folder holding that folder's files
Local = Callable[[str, "tuple[str, ...] | None"], Path]


def as_is(folder: str, names: tuple[str, ...] | None = None) -> Path:
    """`Local` for folders that hold their files."""
    return Path(folder)


@dataclass(frozen=True)
class Evaluation:
    """What an eval step measures, and with what settings (build/steps.EvalStep.evaluation())."""

    label: str                                 # the task, for messages ("eval:bert-int8")
    recipe: str
    evaluate: dict[str, Any]                   # the recipe's normalized [evaluate]
    model_task: str
    data_dir: str                              # the dataset's folder (as its source step fetched it)
    data: dict[str, Any]                       # what is read of it: columns, labels, split
    models: dict[str, tuple[str, str]]         # role -> (model folder, tokenizer folder)
    version: int
    libraries: dict[str, str]
    host: dict[str, Any]
    custom_files: dict[str, str]               # custom metric -> its module file
    custom_code: dict[str, str]                # custom metric -> that file's digest
    recipe_file: str                           # the recipe as the user knows it, for messages
    batching: str                              # how rows are grouped into batches (build/steps.EvalStep)
    # role -> whether that model computes in integers, as its chain of passes says; None: read
    # from the model's ops (a user's ONNX file, a plugin pass that does not say)
    integer: dict[str, bool | None] = field(default_factory=dict)


@dataclass
class _Measuring:
    """What every metric family needs: the models, the test split, how results are kept, the key parts."""

    e: Evaluation
    rows: Rows
    keep: Keep
    local: Local = as_is
    _loaded: tuple[list[str], list[int]] | None = None

    @property
    def texts(self) -> list[str]:
        return self._rows()[0]

    @property
    def labels(self) -> list[int]:
        return self._rows()[1]

    def _rows(self) -> tuple[list[str], list[int]]:
        if self._loaded is None:
            self._loaded = self.rows()
        return self._loaded
    _integer: dict[str, bool] = field(default_factory=dict)   # role -> its model has quantized ops

    @property
    def ev(self) -> dict:
        return self.e.evaluate

    @property
    def models(self) -> dict[str, tuple[str, str]]:
        return self.e.models

    def key(self, kind: str, role: str | None = None, **parts) -> str:
        """A measurement's key: the data, versions and, for one model, its content. Goals and the
        other settings of [evaluate] stay out, so changing them re-measures nothing."""
        e = self.e
        common = {"kind": kind, "data": folder_content(e.data_dir), "data_spec": e.data,
                  "max_samples": e.evaluate["max_samples"], "version": e.version, "libraries": e.libraries}
        if role is not None:
            folder, tok = self.models[role]
            common.update(model=folder_content(folder), tokenizer=folder_content(tok))
        return digest.key_of({**common, **parts})

    def arithmetic(self, *roles: str) -> dict[str, str]:
        """The key part of an output measurement (quality, similarity, custom metrics) that says
        how the host computes integers: ONNX Runtime's int8 kernels give other outputs on CPUs
        without VNNI (docs/quantization.md, "int8 arithmetic differs between CPUs"), so a result
        measured on an integer model is reused only on hosts of the same int8 path. Float models
        give the same outputs everywhere and stay host-independent."""
        if any(self.is_integer(role) for role in roles):
            from modelmake.core import hostinfo

            return {"int8_path": hostinfo.int8_path()}
        return {}

    def is_integer(self, role: str) -> bool:
        if role not in self._integer:
            known = self.e.integer.get(role)
            if known is None:  # the model's files are needed (fetched, if they are in the remote)
                from modelmake.runtime import onnxmeta

                known = bool(onnxmeta.quantized_ops(self.path(role)[0]))
            self._integer[role] = known
        return self._integer[role]

    def stored(self, key: str, what: str, compute: Callable[[], dict]) -> dict:
        return self.keep(key, f"{self.e.label} {what}", compute)

    def path(self, role: str) -> tuple[Path, Path]:
        """(model.onnx, tokenizer folder) of a model, their files fetched when they are elsewhere:
        call it inside a computation only."""
        from modelmake.core.textenc import TOKENIZER_FILES

        folder, tok = self.models[role]
        return self.local(folder, None) / "model.onnx", self.local(tok, TOKENIZER_FILES)

    def folder(self, role: str) -> Path:
        """A decoder's whole folder (model, its data file, genai_config.json, tokenizer), fetched
        when it is elsewhere: call it inside a computation only."""
        return self.local(self.models[role][0], None)

    @property
    def decoder(self) -> bool:
        return self.e.model_task == "text-generation"


def _quality(m: _Measuring) -> dict[str, dict]:
    """Accuracy and F1, stored per model: a property of the model and data alone."""
    if not {"accuracy", "f1"} & set(m.ev["metrics"]):
        return {}
    from modelmake.metrics import evaluate

    out = {}
    for role in m.models:
        key = m.key("quality", role, max_length=m.ev["max_length"], batch_size=m.ev["batch_size"],
                    batching=m.e.batching, **m.arithmetic(role))
        out[role] = m.stored(key, f"{role} quality", lambda role=role: evaluate.measure_quality(
            *m.path(role), m.texts, m.labels, batch_size=m.ev["batch_size"], max_length=m.ev["max_length"]))
    return out


def _similarity(m: _Measuring) -> dict[str, dict]:
    """Cosine of the model's outputs with the baseline's on the test texts: one result of the
    model, stored under a key holding both models' content."""
    if "similarity" not in m.ev["metrics"]:
        return {}
    from modelmake.metrics import evaluate

    task = m.e.model_task
    key = m.key("similarity", task=task, max_length=m.ev["max_length"], batch_size=m.ev["batch_size"],
                batching=m.e.batching, **m.arithmetic(*m.models),
                models={role: [folder_content(f), folder_content(t)] for role, (f, t) in m.models.items()})
    return {"model": m.stored(key, "similarity", lambda: evaluate.measure_similarity(
        m.path("model"), m.path("baseline"), m.texts, task, batch_size=m.ev["batch_size"],
        max_length=m.ev["max_length"]))}


def _timings(m: _Measuring) -> dict[str, dict]:
    """Latency and throughput of every model, timed in turns in one run and stored as one
    object keyed by all of them and by the host: a speed-up is a ratio of two timings, and
    timings taken at different moments on a shared machine do not make a trustworthy one."""
    if not {"latency", "throughput"} & set(m.ev["metrics"]):
        return {}
    from modelmake.metrics import evaluate

    lat = m.ev["latency"]
    key = m.key("latency", latency=lat, host=m.e.host,
                models={role: [folder_content(f), folder_content(t)] for role, (f, t) in m.models.items()})

    def timings() -> dict:
        return evaluate.time_in_turns({role: m.path(role) for role in m.models}, m.texts, lat)
    return m.stored(key, "latency", timings)


def _perplexity(m: _Measuring) -> dict[str, dict]:
    """A language model's perplexity on the test texts, per model: a property of the model and
    data alone (and, for an integer model, of the host's int8 path)."""
    if "perplexity" not in m.ev["metrics"]:
        return {}
    from modelmake.metrics import textgen

    out = {}
    for role in m.models:
        key = m.key("perplexity", role, max_length=m.ev["max_length"], **m.arithmetic(role))
        out[role] = m.stored(key, f"{role} perplexity", lambda role=role: textgen.measure_perplexity(
            m.folder(role), m.texts, m.ev["max_length"]))
    return out


def _generation(m: _Measuring) -> dict[str, dict]:
    """Time to first token and decode rate of every model, generated in turns in one run and
    stored as one object keyed by all of them and by the host (as encoders' latency is)."""
    if "generation" not in m.ev["metrics"]:
        return {}
    from modelmake.metrics import textgen

    gen = m.ev["generation"]
    key = m.key("generation", generation=gen, host=m.e.host,
                models={role: folder_content(f) for role, (f, _) in m.models.items()})
    return m.stored(key, "generation", lambda: textgen.time_generation(
        {role: m.folder(role) for role in m.models}, m.texts, gen))


def _memory(m: _Measuring) -> dict[str, dict]:
    """Peak memory of each model's session at the latency batch (a decoder's: loading it and one
    generation), per model and host."""
    if "memory" not in m.ev["metrics"]:
        return {}
    if m.decoder:
        return _generation_memory(m)
    from modelmake.metrics import evaluate

    lat = m.ev["latency"]
    setup = {"batch": lat["batch"], "sequence": lat["sequence"], "threads": lat["threads"],
             "runs": evaluate.MEMORY_RUNS}
    out = {}
    for role in m.models:
        key = m.key("memory", role, memory=setup, host=m.e.host)
        out[role] = m.stored(key, f"{role} memory", lambda role=role: evaluate.measure_memory(
            *m.path(role), m.texts, batch=lat["batch"], sequence=lat["sequence"], threads=lat["threads"]))
    return out


def _generation_memory(m: _Measuring) -> dict[str, dict]:
    from modelmake.metrics import textgen

    gen = m.ev["generation"]
    setup = {k: gen[k] for k in ("prompt_tokens", "new_tokens", "threads")}
    out = {}
    for role in m.models:
        key = m.key("memory", role, memory=setup, host=m.e.host)
        out[role] = m.stored(key, f"{role} memory", lambda role=role: textgen.measure_generation_memory(
            m.folder(role), m.texts, gen))
    return out


def _size(m: _Measuring) -> dict[str, dict]:
    if "size" not in m.ev["metrics"]:
        return {}
    if m.decoder:   # the model file, its external data and nothing else of the folder
        from modelmake.metrics import textgen

        return {role: {"size_mb": textgen.size_mb(m.folder(role))} for role in m.models}
    from modelmake.metrics import evaluate

    return {role: {"size_mb": evaluate.size_mb(m.local(m.models[role][0], None) / "model.onnx")} for role in m.models}


def _custom(m: _Measuring) -> dict[str, dict]:
    """The recipe's own metrics, per model; keyed by their module's content (and the host, when
    they say they depend on it)."""
    from modelmake.metrics import evaluate

    out: dict[str, dict] = {role: {} for role in m.models}
    for i, c in enumerate(m.ev["custom"]):
        file = m.e.custom_files[c["name"]]
        where = f"{m.e.recipe_file}: evaluate.custom[{i}].function"
        for role in m.models:
            extra = {"host": m.e.host} if c["host_dependent"] else m.arithmetic(role)
            key = m.key("custom", role, metric=c, code=m.e.custom_code[c["name"]], batching=m.e.batching,
                        max_length=m.ev["max_length"], batch_size=m.ev["batch_size"], **extra)
            out[role].update(m.stored(key, f"{role} {c['name']}", lambda role=role: evaluate.measure_custom(
                c["name"], c["function"], Path(file), where, *m.path(role), m.texts, m.labels,
                batch_size=m.ev["batch_size"], max_length=m.ev["max_length"])))
    return out


# Each family measures what [evaluate] metrics asks of it and returns {role: {metric: value}}.
# Another family is one more function here and a row in metrics/catalogue.FAMILIES.
_FAMILIES: tuple[Callable[[_Measuring], dict[str, dict]], ...] = (_quality, _similarity, _timings, _perplexity,
                                                                       _generation, _memory, _size, _custom)


def measure(e: Evaluation, rows: Rows, keep: Keep, local: Local = as_is) -> dict[str, dict]:
    """Metrics of the model and its baseline, {role: {metric: value}}; every measurement is a
    result of its own (`keep`), reused by other recipes and later runs."""
    m = _Measuring(e, rows, keep, local)
    out: dict[str, dict] = {role: {} for role in e.models}
    for family in _FAMILIES:
        for role, values in family(m).items():
            out[role].update(values)
    return out


# per-model facts and interval bounds: a difference of them means nothing
_NO_DELTA = ("samples", "runs", "threads", "latency_ms.p50_ci_low", "latency_ms.p50_ci_high", "perplexity_tokens")


# timed metrics whose ratio to the baseline's is reported, and the name it has under speedup_x.
_SPEEDUPS = {"latency_ms.p50": "latency_p50", "ttft_ms.p50": "ttft_ms_p50", "decode_tokens_per_s": "decode_tokens_per_s"}


def combine(final: dict, baseline: dict | None) -> dict:
    """Flat metrics: the model's, the baseline's under `baseline.`, differences under `delta.`."""
    metrics = dict(final)
    if baseline:
        for k, v in baseline.items():
            metrics[f"baseline.{k}"] = v
            if k in final and k not in _NO_DELTA:
                metrics[f"delta.{k}"] = final[k] - v
        for timed, name in _SPEEDUPS.items():
            if final.get(timed) and baseline.get(timed):
                metrics[f"speedup_x.{name}"] = goals.speedup(final[timed], baseline[timed], goals.builtin_direction(timed))
        if final.get("size_mb") and baseline.get("size_mb"):
            metrics["compression_x.size"] = baseline["size_mb"] / final["size_mb"]
    return dict(sorted(metrics.items()))


def evaluate(e: Evaluation, rows: Rows, keep: Keep, local: Local = as_is) -> dict:
    """The recipe's metrics.json content on the test split (`rows`): the model's metrics, the
    baseline's, deltas, and the goals verdict. Raises GoalsFailed (after printing the table) when a
    goal fails and the recipe says on_goal_failure = "fail"."""
    measured = measure(e, rows, keep, local)
    metrics = combine(measured["model"], measured.get("baseline"))
    ev = e.evaluate
    if ev["goal"]:
        metrics["goals"] = goals.check(ev["goal"], metrics, ev["custom"])
        if not metrics["goals"]["passed"] and ev["on_goal_failure"] == "fail":
            print_metrics(e.recipe, metrics)
            raise goals.GoalsFailed(goals.failure_line(metrics["goals"]))
    return metrics


def print_metrics(recipe: str, metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"metrics: {recipe}")
    table.add_column("metric")
    table.add_column("model", justify="right")
    has_base = any(k.startswith("baseline.") for k in metrics)
    if has_base:
        table.add_column("baseline", justify="right")
        table.add_column("delta", justify="right")
    for k, v in metrics.items():
        if k.startswith(("baseline.", "delta.")) or not isinstance(v, (int, float)):
            continue
        row = [k, _fmt(v)]
        if has_base:
            row += [_fmt(metrics.get(f"baseline.{k}")), _fmt(metrics.get(f"delta.{k}"), signed=True)]
        table.add_row(*row)
    Console(soft_wrap=True).print(table)
    verdict = metrics.get("goals")
    if verdict:
        met = sum(r["passed"] for r in verdict["results"])
        say(f"goals of {recipe}: {met} of {len(verdict['results'])} met")
        for r in verdict["results"]:
            say(f"  {'ok    ' if r['passed'] else 'FAILED'} {goals.describe(r)}")


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:+.4g}" if signed else f"{v:.4g}"
    return f"{v:+d}" if signed else str(v)
