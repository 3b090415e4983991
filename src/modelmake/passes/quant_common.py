"""What the quantization passes share: config keys declared once, and ORT's names for them.

dynamic-int8, static-int8 and int4 read the same keys with the same meaning; declaring each once
keeps their kinds, defaults and choices equal (a pass adds what is particular to it to the doc).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from modelmake.passes.fields import Field

INT8_TYPES = ("qint8", "quint8")   # recipe names of ORT's QuantType.QInt8 and QuantType.QUInt8


def per_channel(doc: str = "one weight scale per output channel instead of per tensor") -> Field:
    return Field("per_channel", "bool", True, doc)


def reduce_range() -> Field:
    # docs/quantization.md, "int8 arithmetic differs between CPUs"
    return Field("reduce_range", "bool", False,
                 "quantize weights to 7 bits, so that x86 CPUs without VNNI (AVX2), whose int8 kernels "
                 "add pairs of products in int16, cannot overflow and compute what VNNI/AMX CPUs compute")


def weight_type() -> Field:
    return Field("weight_type", "str", "qint8", "integer type of the quantized weights", choices=INT8_TYPES)


def op_types(empty: str) -> Field:
    """`empty` says what an empty list quantizes."""
    return Field("op_types", "list[str]", [],
                 f"ONNX op types to quantize, e.g. ['MatMul', 'Attention']; empty = {empty}")


def nodes_to_exclude(what: str = "node names", example: str = "a sensitive classifier MatMul") -> Field:
    return Field("nodes_to_exclude", "list[str]", [], f"{what} to keep in float (e.g. {example})")


@contextmanager
def private_copy(folder: Path, near: Path) -> Iterator[Path]:
    """`folder`'s files as hard links (copies across file systems) in a temp folder beside `near`.
    ORT's dynamic quantizer writes <model>-inferred.onnx next to the model it is given: search
    trials quantize one input folder at once, and must not meet there (nor write into a placed
    target or a store object)."""
    import os
    import shutil
    import tempfile   # here, not at load: quant_common is read by every task load

    with tempfile.TemporaryDirectory(prefix=".mm-input-", dir=near) as tmp:
        for f in folder.iterdir():
            if f.is_file():
                try:
                    os.link(f, Path(tmp) / f.name)
                except OSError:
                    shutil.copy2(f, Path(tmp) / f.name)
        yield Path(tmp)


def quant_type(name: str):
    """ORT's QuantType of a recipe's type name (qint8, quint8)."""
    from onnxruntime.quantization import QuantType

    return {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[name]


def extra_options() -> dict:
    """The extra_options both ORT quantizers need on a fused model."""
    import onnx

    # Fused contrib ops (Attention, SkipLayerNormalization...) carry no type info the quantizer
    # can infer; without a default it fails on an ORT-optimized model.
    return {"DefaultTensorType": onnx.TensorProto.FLOAT}
