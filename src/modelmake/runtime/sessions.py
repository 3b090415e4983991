"""ONNX Runtime sessions on the CPU: the one place modelmake creates them.

A session runs either with ORT_ENABLE_ALL and a number of intra-op threads (0 = ORT's default,
one per physical core), or with exactly the settings session-tune recorded in the model's
metadata (`modelmake.session_options`), which is how the package's inference config deploys it.
"""
from __future__ import annotations

import json
from pathlib import Path

from modelmake.runtime import onnxmeta

PROVIDERS = ["CPUExecutionProvider"]
# The settings a consumer applies; the rest of session-tune's JSON documents how they were chosen.
SETTINGS = ("intra_op_num_threads", "inter_op_num_threads", "execution_mode", "graph_optimization_level")


def options_for(settings: dict | None = None, threads: int = 0):
    """An ort.SessionOptions from tuned settings; without them ORT_ENABLE_ALL and `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if settings is None:
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return options
    options.intra_op_num_threads = int(settings["intra_op_num_threads"])
    options.inter_op_num_threads = int(settings["inter_op_num_threads"])
    options.execution_mode = getattr(ort.ExecutionMode, settings["execution_mode"])
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings["graph_optimization_level"])
    return options


def cpu_session(model_path: Path, options=None, **kwargs):
    """An InferenceSession on the CPU provider with `options` (None: ORT's defaults); `kwargs` go
    to InferenceSession as they are (e.g. disabled_optimizers)."""
    import onnxruntime as ort

    model = model_path if isinstance(model_path, bytes) else str(model_path)  # a file, or a serialized model
    return ort.InferenceSession(model, options, providers=PROVIDERS, **kwargs)


def session(model_path: Path, threads: int = 0, settings: dict | None = None):
    """A CPU session with `settings` when given, else ORT_ENABLE_ALL and `threads` intra-op threads."""
    return cpu_session(model_path, options_for(settings, threads))


def settings_of(props: dict[str, str]) -> dict | None:
    """The tuned session settings in a model's metadata_props, or None when it has none."""
    raw = props.get(onnxmeta.SESSION_OPTIONS)
    if raw is None:
        return None
    value = json.loads(raw)
    return {k: value[k] for k in SETTINGS}


def tuned_settings(model_path: Path) -> dict | None:
    """The session settings session-tune recorded in the model's metadata, or None."""
    return settings_of(onnxmeta.read(Path(model_path)))


def deployed_settings(model_path: Path, threads: int) -> tuple[int, dict | None]:
    """(intra-op threads, session settings) a timing run uses: threads > 0 forces that many and
    ignores recorded settings; 0 runs the model as deployed (session-tune's settings, if any)."""
    settings = tuned_settings(model_path) if threads == 0 else None
    return (settings["intra_op_num_threads"] if settings else threads), settings


def feeds(session, encoded: dict) -> dict:
    """The arrays of `encoded` the session takes, by input name (a model without token_type_ids
    gets none)."""
    return {i.name: encoded[i.name] for i in session.get_inputs()}
