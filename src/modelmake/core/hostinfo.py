"""Host fingerprint for timing results: CPU model and flags, core count, machine, ORT version.

Timing metrics are only reused on a host with the same fingerprint; accuracy never depends on it.
Cheap by design (reads /proc/cpuinfo and package metadata) because task loading computes it.
"""
from __future__ import annotations

import os
import platform
from functools import lru_cache

from modelmake.core.digest import bytes_digest, library_version


@lru_cache(maxsize=1)
def host_fingerprint() -> dict:
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                # x86 says "model name"/"flags"; arm64 says "CPU part"/"Features"
                if key in ("model name", "Hardware", "CPU part") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
                if model and flags:
                    break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor() or "unknown",
        "cpu_flags": bytes_digest(flags.encode())[:16],
        "cores": os.cpu_count() or 0,
        "machine": platform.machine(),
        "onnxruntime": library_version("onnxruntime"),
    }
