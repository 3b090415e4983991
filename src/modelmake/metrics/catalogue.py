"""The metric catalogue: what evaluation can measure, the names it writes into metrics.json, and
which of them depend on the host. Plain data (no imports), read by recipe validation, goals,
evaluation, the package and `modelmake compare`.
"""
from __future__ import annotations

# The metric families a recipe asks for in `[evaluate] metrics`, and the numbers each one puts
# into metrics.json with their direction (True: higher is better), which goals need. A new
# family is a row here and a measuring function in the evaluation.
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
    # a language model's: exp of the mean negative log-likelihood of the test texts' tokens
    "perplexity": {"perplexity": False},
    # greedy generation at batch 1: time to the first new token, and the decode phase's rate
    "generation": {"ttft_ms.p50": False, "ttft_ms.p90": False, "decode_tokens_per_s": True,
                   "decode_ms_per_token.p50": False},
}
# what a model.task allows: accuracy and F1 need a classifier; similarity compares with a baseline
# (its numbers are already a comparison, so there is no baseline value or delta of them)
TASKS = ("text-classification", "feature-extraction", "text-generation")
# the families each task can have (an encoder's are timed per batch, a decoder's per token)
TASK_FAMILIES = {
    "text-classification": ("accuracy", "f1", "similarity", "latency", "throughput", "size", "memory"),
    "feature-extraction": ("similarity", "latency", "throughput", "size", "memory"),
    "text-generation": ("perplexity", "generation", "size", "memory"),
}
CLASSIFIER_ONLY = ("accuracy", "f1", "similarity.agreement")
COMPARED = ("similarity",)
# families that compare the model's answers with the dataset's labels (text without labels has none)
LABELLED = ("accuracy", "f1")
# an encoder's outputs that hold its answer, by preference: onnx-export's pooled embedding,
# sentence-transformers' ONNX files' one, token states (mean-pooled by whoever reads them)
EMBEDDING_OUTPUTS = ("embeddings", "sentence_embedding", "last_hidden_state")
# metrics whose ratio to the baseline is a speed-up (goal min_speedup)
TIMED = ("latency_ms.p50", "latency_ms.p90", "latency_ms.p99", "latency_ms.mean", "throughput_per_s",
         "ttft_ms.p50", "ttft_ms.p90", "decode_tokens_per_s", "decode_ms_per_token.p50")
# what a custom metric function may take, by parameter name
CUSTOM_ARGS = ("model", "tokenizer", "texts", "labels", "predict")
# metrics that do not depend on the host: the only ones a package carries (custom metrics and
# the goals verdict stay out: either may depend on the host that measured them)
PORTABLE = ("accuracy", "f1", "size_mb", "samples", "similarity.cosine_mean", "similarity.cosine_min",
            "similarity.cosine_p5", "similarity.agreement", "perplexity", "perplexity_tokens")
# other numbers of metrics.json: how a measurement was made, and the comparison with the
# baseline (a metric's value under `baseline.`, model minus baseline under `delta.`, and ratios)
BOOKKEEPING = ("samples", "runs", "threads", "perplexity_tokens")
AGAINST = ("baseline.", "delta.")
RATIOS = ("speedup_x.", "compression_x.")


def measured_metric(name: str) -> str:
    """The metric a number of metrics.json is about: `accuracy` for `baseline.accuracy` or
    `delta.accuracy`, the name itself otherwise."""
    for prefix in AGAINST:
        name = name.removeprefix(prefix)
    return name


def default_metrics(task: str, has_baseline: bool) -> list[str]:
    """The `[evaluate] metrics` of a recipe that lists none: every family that applies. For a
    classifier that leaves out similarity (accuracy and F1 say more); an encoder has no accuracy,
    so it gets similarity whenever there is a baseline to compare with."""
    return [f for f in FAMILIES if f in TASK_FAMILIES[task]
            and not (task != "text-classification" and f in CLASSIFIER_ONLY)
            and not (f in COMPARED and (task == "text-classification" or not has_baseline))]
