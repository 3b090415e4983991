"""What a pass is: declared config keys plus a run function, declared without heavy imports.

Recipes are validated against these declarations before anything runs, and docs/recipes.md, the
JSON Schema of recipes and the typed config a run receives are generated from them, so the
schema, the validator, the docs and the code that reads a config cannot drift apart.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from modelmake.core.progress import say
from modelmake.passes.fields import Field, PassConfig, check_declaration, config_class

__all__ = ["DECODER", "ENTRY_FILE", "FORMAT_NAMES", "GGUF", "HF", "ONNX", "PYTORCH", "Field", "Pass", "PassConfig",
           "StepContext"]

# Model formats a step consumes or produces.
HF = "hf"      # a Hugging Face folder: config.json, weights, tokenizer files
ONNX = "onnx"  # a folder holding model.onnx (metadata_props carry what later passes need)
# a folder of the user's Python code, the weights it loads and tokenizer files, plus ENTRY_FILE
# naming the `module:function` that builds (torch.nn.Module, example inputs)
PYTORCH = "pytorch"
ENTRY_FILE = "modelmake-pytorch.json"
GGUF = "gguf"  # a folder holding one .gguf file (llama.cpp's format: weights, tokenizer, chat template)
# a folder an onnxruntime-genai program loads: model.onnx (+ its external data) taking past
# key/values, genai_config.json and the tokenizer files
DECODER = "onnx-decoder"
FORMAT_NAMES = {HF: "Hugging Face", ONNX: "ONNX", PYTORCH: "PyTorch", GGUF: "GGUF", DECODER: "ONNX decoder"}


@dataclass(frozen=True)
class Pass:
    type: str                   # the name recipes use in `type = "..."`
    summary: str                # one line, no final period: `doit list`, the docs' first line, errors
    fields: tuple[Field, ...]
    input_format: str           # HF, ONNX or PYTORCH (see also more_input_formats)
    output_format: str
    version: int                # bump when the same inputs and config give different output
    libraries: tuple[str, ...]  # distributions whose versions shape the output (part of the key)
    run: str                    # "module:function", imported only when the step executes
    needs_tokenizer: bool = False  # StepContext.tokenizer_dir is set (its content is in the key)
    host_dependent: bool = False   # output depends on this host (e.g. tuned by timing): host in key
    # (field, value, distributions): libraries in the key only when config[field] == value, so an
    # upgrade of a library one mode uses (peft for LoRA) does not rebuild the other mode's steps
    libraries_when: tuple[tuple[str, Any, tuple[str, ...]], ...] = ()
    # further formats the run function reads besides input_format (it tells them apart itself)
    more_input_formats: tuple[str, ...] = ()
    # output depends on the recipe's model.task: the task is in its key and in StepContext.task
    task_dependent: bool = False
    # model.task values the pass works for; None = any (an ONNX pass does not care what it optimizes)
    tasks: tuple[str, ...] | None = None
    # what else a user should know to use it well (where to place it, measurements); docs only
    notes: str = ""
    # what an ONNX output computes in: "float", "integer" (it emits quantized ops), "as-input" (it
    # keeps what its input computes in) or "unknown" (the eval step reads the model's ops). Quality
    # metrics of integer models are keyed by the host's int8 path (docs/quantization.md), and this
    # lets the build decide that without reading a model whose files are still in the remote.
    computes: str = "unknown"
    # (field, {value: computes}): what the output computes in follows that config key (e.g. a
    # builder's precision), overriding `computes` for the values listed
    computes_by: tuple[str, dict[str, str]] | None = None
    # its dataset fields' rows must carry labels (a dataset without `label` is refused at load)
    needs_labels: bool = False
    # distributions it imports that modelmake's own install does not bring (an extra): a recipe
    # using the pass is refused at load, in one line naming what to install, when one is missing
    requires: tuple[str, ...] = ()
    extra: str | None = None       # the modelmake extra that brings them (`pip install -e ".[llm]"`)

    def check(self) -> None:
        """Raises ValueError if the fields cannot make a typed config (see passes/fields.py)."""
        check_declaration(self.type, self.fields)

    @functools.cached_property
    def config_class(self) -> type[PassConfig]:
        """The frozen dataclass a run receives as StepContext.config (see passes/fields.py)."""
        return config_class(self.type, self.fields)

    @property
    def input_formats(self) -> tuple[str, ...]:
        return (self.input_format, *self.more_input_formats)

    def accepts(self, fmt: str) -> bool:
        return fmt in self.input_formats

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def libraries_for(self, config: dict[str, Any]) -> tuple[str, ...]:
        extra = tuple(d for f, v, dists in self.libraries_when if config.get(f) == v for d in dists)
        return tuple(self.libraries) + extra

    def computes_for(self, config: dict[str, Any]) -> str:
        if self.computes_by is not None:
            key, table = self.computes_by
            return table.get(config.get(key), self.computes)
        return self.computes

    def run_function(self) -> Callable[["StepContext"], None]:
        module, _, func = self.run.partition(":")
        return getattr(importlib.import_module(module), func)


@dataclass
class StepContext:
    """Everything a pass run may read or write. A pass writes only below `out_dir`."""

    config: PassConfig            # typed and frozen: cfg.per_channel (keys whose `when` is unmet are None)
    model_dir: Path               # input model folder (one of Pass.input_formats)
    out_dir: Path                 # empty folder; write outputs here (temp, published by caller)
    datasets: dict[str, Any] = field(default_factory=dict)  # name -> modelmake.inputs.data.Dataset
    step: str = ""                # task name, for messages
    tokenizer_dir: Path | None = None  # tokenizer files as of this step (passes that need_tokenizer)
    task: str = "text-classification"  # the recipe's model.task (set for task_dependent passes)

    def log(self, message: str) -> None:
        say(f"  {self.step}: {message}")
