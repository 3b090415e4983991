"""Host facts for store keys: the fingerprint that timing results are keyed by, and the int8
path of ONNX Runtime's CPU kernels that quality results of integer models depend on.

Timing metrics are only reused on a host with the same fingerprint. Cheap by design (reads
/proc/cpuinfo and package metadata) because task loading computes it.
"""
from __future__ import annotations

import os
from functools import lru_cache

from modelmake.core.digest import bytes_digest, library_version


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, str]:
    """(CPU model, space-separated flags) of the first processor in /proc/cpuinfo ("" if unknown)."""
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
                    flags = value.strip()
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def _processor() -> str:
    import platform  # only where /proc/cpuinfo names no CPU: importing it costs every no-op ~1.5 ms

    return platform.processor()


@lru_cache(maxsize=1)
def host_fingerprint() -> dict:
    model, flags = _cpuinfo()
    return {
        "cpu": model or _processor() or "unknown",
        "cpu_flags": bytes_digest(" ".join(sorted(flags.split())).encode())[:16],
        "cores": os.cpu_count() or 0,
        "machine": os.uname().machine,  # what platform.machine() says, without importing platform
        "onnxruntime": library_version("onnxruntime"),
    }


# The int8 paths of ONNX Runtime's x86 kernels (MLAS), named after the uint8 x int8 GEMM kernel
# that onnxruntime/core/mlas/lib/platform.cpp picks from CPUID, in the order it checks them:
#   "sse"          no AVX2+FMA: 16-bit products widened to int32, exact
#   "avx2"         vpmaddubsw: the products of weights 2j and 2j+1 are added in int16 with
#                  saturation (a pair can reach 2 x 255 x 127 = 64770 > 32767), the reason for
#                  quantizers' `reduce_range`
#   "avx-vnni"     vpdpbusd on 256 bits, int32 sums, exact
#   "avx512-core"  AVX512 F/BW/DQ/VL without VNNI: vpmaddubsw on 512 bits, saturates as "avx2"
#   "avx512-vnni"  vpdpbusd on 512 bits, exact
#   "amx"          AMX tiles (tdpbusd), exact
# The kernel turns AVX/AVX-512/AMX flags off when the OS does not save those registers, which is
# what MLAS checks with XGETBV. Other architectures get "other-<machine>" (MLAS has NEON, dot and
# i8mm kernels there, not mapped here).
SATURATING_INT8_PATHS = frozenset({"avx2", "avx512-core"})


def int8_path_of(flags: set[str], machine: str) -> str:
    """The MLAS int8 path of a CPU with these /proc/cpuinfo `flags` (see above)."""
    machine = machine.lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return f"other-{machine or 'unknown'}"
    if not {"avx", "fma", "avx2"} <= flags:
        return "sse"
    path = "avx-vnni" if "avx_vnni" in flags else "avx2"
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        path = "avx512-vnni" if "avx512_vnni" in flags else "avx512-core"
    if {"amx_tile", "amx_int8"} <= flags:
        path = "amx"
    return path


@lru_cache(maxsize=1)
def int8_path() -> str:
    """This host's int8 path of ONNX Runtime's CPU kernels: "amx", "avx512-vnni", "avx512-core",
    "avx-vnni", "avx2", "sse" or "other-<machine>". Integer models give other outputs on a
    saturating path (SATURATING_INT8_PATHS) than on the exact ones."""
    return int8_path_of(set(_cpuinfo()[1].split()), os.uname().machine)
