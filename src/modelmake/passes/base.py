"""What a pass is: a typed config schema plus a run function, declared without heavy imports.

Recipes are validated against these declarations before anything runs, and docs/recipes.md is
generated from them, so the schema, the validator and the docs cannot drift apart.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from modelmake.progress import say

# Model formats a step consumes or produces.
HF = "hf"      # a Hugging Face folder: config.json, weights, tokenizer files
ONNX = "onnx"  # a folder holding model.onnx (metadata_props carry what later passes need)


@dataclass(frozen=True)
class Field:
    """One key of a pass config. `kind` is one of: bool, int, float, str, list[str], dataset."""

    name: str
    kind: str
    default: Any
    doc: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    required: bool = False


@dataclass(frozen=True)
class Pass:
    type: str                   # the name recipes use in `type = "..."`
    summary: str                # one line for docs and errors
    fields: tuple[Field, ...]
    input_format: str           # HF or ONNX
    output_format: str
    version: int                # bump when the same inputs and config give different output
    libraries: tuple[str, ...]  # distributions whose versions shape the output (part of the key)
    run: str                    # "module:function", imported only when the step executes
    needs_tokenizer: bool = False  # StepContext.tokenizer_dir is set (its content is in the key)
    host_dependent: bool = False   # output depends on this host (e.g. tuned by timing): host in key

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def run_function(self) -> Callable[["StepContext"], None]:
        module, _, func = self.run.partition(":")
        return getattr(importlib.import_module(module), func)


@dataclass
class StepContext:
    """Everything a pass run may read or write. A pass writes only below `out_dir`."""

    config: dict[str, Any]        # validated, every default filled in
    model_dir: Path               # input model folder (format = Pass.input_format)
    out_dir: Path                 # empty folder; write outputs here (temp, published by caller)
    datasets: dict[str, Any] = field(default_factory=dict)  # name -> modelmake.data.Dataset
    step: str = ""                # task name, for messages
    tokenizer_dir: Path | None = None  # tokenizer files as of this step (passes that need_tokenizer)

    def log(self, message: str) -> None:
        say(f"  {self.step}: {message}")
