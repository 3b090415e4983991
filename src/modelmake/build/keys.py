"""What of a recipe's metrics goes into its package, and so into the package's key.

Every other key is a method of its step (build/steps.py: `key(content)`), a pure function of the
step's settings and the content digests of the folders it reads: the runner computes it to get or
build a result, and `modelmake status`/`why` compute the same key without building anything,
taking an input's content from the store object that would fill it (build/resolve.py).
"""
from __future__ import annotations

from modelmake.metrics.catalogue import PORTABLE, measured_metric


def portable_metrics(metrics: dict) -> dict:
    """What of a recipe's metrics goes into its package: timings belong to the host that measured
    them, not to the artifact, so leaving them out keeps the package byte-identical anywhere."""
    return {k: v for k, v in metrics.items() if measured_metric(k) in PORTABLE}
