"""What of a recipe's metrics goes into its package, and so into the package's key.

Every other key is a method of its step (build/steps.py: `key(content)`), a pure function of the
step's settings and the content digests of the folders it reads: the runner computes it to get or
build a result, and `modelmake status`/`why` compute the same key without building anything,
taking an input's content from the store object that would fill it (build/resolve.py).
"""
from __future__ import annotations

# metrics that do not depend on the host: the only ones a package carries (custom metrics and
# the goals verdict stay out: either may depend on the host that measured them)
PORTABLE = ("accuracy", "f1", "size_mb", "samples", "similarity.cosine_mean", "similarity.cosine_min",
            "similarity.cosine_p5", "similarity.agreement")


def portable_metrics(metrics: dict) -> dict:
    """What of a recipe's metrics goes into its package: timings belong to the host that measured
    them, not to the artifact, so leaving them out keeps the package byte-identical anywhere."""
    return {k: v for k, v in metrics.items()
            if k.removeprefix("baseline.").removeprefix("delta.") in PORTABLE}
