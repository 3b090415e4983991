"""Evaluation: what is measured (the metric catalogue), how (quality, similarity, latency, memory, size, custom) and goals on the results."""
