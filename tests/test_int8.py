"""The int8 path of ONNX Runtime's CPU kernels: what hostinfo.int8_path() says, whether ORT on this
host computes what it says, and the reference of int8ref.py that the int8 tests compare with.

Run under tests/avx2.sh to see the AVX2 arithmetic on an AVX-512 VNNI or AMX host.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import int8ref  # noqa: E402
from test_passes import exported, one_thread, run_pass, tiny, work  # noqa: E402,F401

from modelmake.core import hostinfo  # noqa: E402
from modelmake.runtime import onnxmeta  # noqa: E402

# /proc/cpuinfo flags (the ones MLAS's dispatch reads) of CPUs the project's builds run on, or
# that pick another kernel
BASE = {"fpu", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "popcnt"}
AVX2 = BASE | {"avx", "fma", "avx2", "f16c", "bmi2"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"}
CPUS = {
    "Nehalem (no AVX)": (BASE, "x86_64", "sse"),
    "AVX without FMA/AVX2 (Sandy Bridge)": (BASE | {"avx"}, "x86_64", "sse"),
    "AMD EPYC Rome / Intel Haswell": (AVX2 | {"sha_ni"}, "x86_64", "avx2"),
    "Intel Alder Lake (AVX-VNNI)": (AVX2 | {"avx_vnni"}, "x86_64", "avx-vnni"),
    "Intel Skylake-SP (AVX-512, no VNNI)": (AVX512, "x86_64", "avx512-core"),
    "Intel Cascade Lake / AMD EPYC Genoa": (AVX512 | {"avx512_vnni"}, "x86_64", "avx512-vnni"),
    "AVX-512F alone (Knights Landing)": (AVX2 | {"avx512f", "avx512cd"}, "x86_64", "avx2"),
    "Intel Sapphire Rapids": (AVX512 | {"avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"},
                              "x86_64", "amx"),
    "arm64": ({"fp", "asimd", "asimddp", "i8mm"}, "aarch64", "other-aarch64"),
}


@pytest.mark.parametrize("cpu", list(CPUS))
def test_int8_path_follows_mlas_dispatch(cpu):
    flags, machine, path = CPUS[cpu]
    assert hostinfo.int8_path_of(set(flags), machine) == path


@pytest.mark.skipif(bool(os.environ.get("MODELMAKE_EMULATED_CPU")),
                    reason="emulated CPU: /proc/cpuinfo describes the host, not the CPU ORT sees")
def test_int8_path_of_this_host_is_the_arithmetic_ort_uses():
    saturating = hostinfo.int8_path() in hostinfo.SATURATING_INT8_PATHS
    assert saturating == (int8ref.host_arithmetic() == int8ref.PAIRS), (hostinfo.int8_path(), int8ref.host_arithmetic())


def test_reference_is_what_ort_computes_where_pairs_overflow(tmp_path):
    # A dynamic-int8 MatMul whose inputs and weights make many int16 pairs overflow: ORT matches
    # the reference of this host's arithmetic bit for bit, and the two arithmetics differ.
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import quantize_dynamic

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 16)).astype(np.float32)
    weight[:, :4] = 1.0  # columns whose int8 weights are all 127
    x = np.abs(rng.standard_normal((8, 64))).astype(np.float32) + 3  # activations near the top of uint8
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])],
                              [numpy_helper.from_array(weight, "w")])
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    fp32.mkdir(), int8.mkdir()
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32 / "model.onnx"))
    quantize_dynamic(fp32 / "model.onnx", int8 / "model.onnx", per_channel=True)

    def run(d: Path) -> np.ndarray:
        return ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    exact, pairs = (run(int8ref.reference_dir(int8, a)) for a in (int8ref.EXACT, int8ref.PAIRS))
    assert np.abs(exact - x @ weight).max() < 0.05 * np.abs(x @ weight).max()  # quantization only
    assert np.abs(pairs[:, :4] - exact[:, :4]).min() > 1.0  # every output of those columns saturated
    np.testing.assert_array_equal(run(int8), exact if int8ref.host_arithmetic() == int8ref.EXACT else pairs)
    result = int8ref.check_int8(run, fp32, int8, 0.05 * np.abs(x @ weight).max())
    assert result.kernels == 0.0 and (result.saturation > 1.0) == (int8ref.host_arithmetic() == int8ref.PAIRS)


def test_quantized_ops_tell_integer_models(exported, work):
    assert onnxmeta.quantized_ops(exported / "model.onnx") == {}
    int8 = onnxmeta.quantized_ops(run_pass("dynamic-int8", exported, work / "int8-ops") / "model.onnx")
    assert int8.get("MatMulInteger", 0) > 0 and int8.get("DynamicQuantizeLinear", 0) > 0, int8
    int4 = onnxmeta.quantized_ops(run_pass("int4", exported, work / "int4-ops") / "model.onnx")
    assert set(int4) == {"MatMulNBits"}, int4


def quality_key(model: Path, tok: Path, int8_path: str, monkeypatch) -> str:
    """The store key under which an evaluation keeps this model's accuracy on a host of `int8_path`."""
    from modelmake.metrics import measure

    monkeypatch.setattr(hostinfo, "int8_path", lambda: int8_path)
    monkeypatch.setattr(measure, "folder_content", lambda folder: f"content:{folder}")
    e = measure.Evaluation(
        label="eval:t", recipe="t", evaluate={"metrics": ["accuracy"], "max_samples": 0, "max_length": 32,
                                              "batch_size": 8, "custom": []},
        model_task="text-classification", data_dir="data", data={}, models={"model": (str(model), str(tok))},
        version=1, libraries={}, host={}, custom_files={}, custom_code={}, recipe_file="recipes/t.toml",
        batching="by-length")
    keys = []
    measure.measure(e, lambda: (["a review"], [0]), lambda key, label, compute: keys.append(key) or {})
    return keys[0]


def test_accuracy_of_an_integer_model_is_reused_only_on_hosts_of_its_int8_path(exported, tiny, work, monkeypatch):
    # docs/quantization.md: a shared store must not hand an AVX2 host the accuracy a VNNI host measured
    int8 = run_pass("dynamic-int8", exported, work / "int8-key")
    assert quality_key(int8, tiny, "avx2", monkeypatch) != quality_key(int8, tiny, "avx512-vnni", monkeypatch)
    assert quality_key(int8, tiny, "amx", monkeypatch) == quality_key(int8, tiny, "amx", monkeypatch)
    assert quality_key(exported, tiny, "avx2", monkeypatch) == quality_key(exported, tiny, "avx512-vnni", monkeypatch)


def test_the_chain_of_passes_says_which_models_compute_in_integers():
    # decided without reading a model, so a model whose files are still in the remote is not fetched for it
    from buildkit import steps_of

    evals = {t: s.integer for t, s in steps_of(Path(__file__).parents[1]).items() if t.startswith("eval:")}
    assert evals["eval:bert-int8"] == {"model": True, "baseline": False}   # fine-tune, export, fusion, dynamic-int8
    assert evals["eval:bert-int4"]["model"] is True
    assert evals["eval:bert-fp32"]["model"] is False and evals["eval:bert-fp16"]["model"] is False
