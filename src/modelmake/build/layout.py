"""Where each recipe's outputs live, and which folder holds its model and tokenizer at every step."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelmake import passes
from modelmake.build.project import Project
from modelmake.inputs.recipe import Recipe
from modelmake.passes import base


@dataclass
class Layout:
    """Where a recipe's outputs live, and which folder holds its model/tokenizer at each point."""

    recipe: Recipe
    base: Path
    model_in: Path                 # folder the first pass reads
    data: dict[str, Path]          # dataset name -> folder
    outputs: list[Path]            # one folder per pass
    formats: list[str]             # format after each pass
    tokenizer: Path | None         # last Hugging Face folder (holds tokenizer files)
    final_format: str
    step_tokenizers: list[Path]    # tokenizer folder as of each pass's input
    tokenizer_in: Path | None = None  # where the source step puts model.tokenizer's files
    # the source folder holding the tokenizer files of the input model, and the recipe naming it
    source_tokenizer: tuple[Path, Recipe] | None = None
    baseline_recipe: "Layout | None" = None  # evaluate.baseline_recipe's layout: its final model is measured too
    # model folder -> whether the model there computes in integers; None: only its ops can tell
    integer: dict[str, bool | None] = field(default_factory=dict)
    upstream: "Layout | None" = None  # model.recipe's layout

    @property
    def formats_in(self) -> str:
        """The format of the model the first pass reads."""
        r = self.recipe
        if r.model.kind != "recipe":
            return r.model_format
        up = self.upstream
        return up.final_format if up is not None else r.model_format

    @property
    def final(self) -> Path:
        return self.outputs[-1] if self.outputs else self.model_in

    def step_dir(self, name: str) -> Path:
        return self.outputs[[s.name for s in self.recipe.steps].index(name)]


def layouts(project: Project, recipes: dict[str, Recipe]) -> dict[str, Layout]:
    done: dict[str, Layout] = {}

    def build(r: Recipe) -> Layout:
        if r.name in done:
            return done[r.name]
        base_dir = project.rel(project.artifacts) / r.name
        src = base_dir / "steps" / "source"
        tok_in = None
        if r.model.kind == "recipe":
            up = build(recipes[r.model.spec["recipe"]])
            model_in, fmt, tok, source_tok = up.final, up.final_format, up.tokenizer, up.source_tokenizer
            integer = up.integer[str(up.final)]
        else:
            tok_in = src / "tokenizer" if r.model_tokenizer else None
            model_in, fmt, tok = src / "model", r.model_format, tok_in or src / "model"
            source_tok = (tok, r)
            integer = None if fmt == base.ONNX else False   # a user's ONNX file may be quantized
        lay = chain(r, base_dir, model_in, fmt, tok, integer, {d: src / "data" / d for d in r.data},
                    [base_dir / "steps" / s.name for s in r.steps])
        lay.tokenizer_in, lay.source_tokenizer = tok_in, source_tok
        lay.upstream = done[r.model.spec["recipe"]] if r.model.kind == "recipe" else None
        done[r.name] = lay
        return lay

    for r in recipes.values():
        build(r)
    for lay in done.values():
        other = lay.recipe.evaluate and lay.recipe.evaluate.get("baseline_recipe")
        lay.baseline_recipe = done[other] if other else None
    return done


def chain(r: Recipe, base_dir: Path, model_in: Path, fmt: str, tok: Path | None, integer: bool | None,
          data: dict[str, Path], outputs: list[Path]) -> Layout:
    """The layout of r's steps writing `outputs`, from a model in `model_in` (of format `fmt`,
    its tokenizer in `tok`, computing in integers or not)."""
    formats, step_tokenizers = [], []
    computes = {str(model_in): integer}
    for s, out in zip(r.steps, outputs):
        step_tokenizers.append(tok)
        p = passes.get(s.type)
        fmt = p.output_format
        formats.append(fmt)
        integer = _computes_in_integers(p, s.config, integer)
        computes[str(out)] = integer
        if fmt in (base.HF, base.DECODER):   # both carry their tokenizer files
            tok = out
    return Layout(r, base_dir, model_in, data, list(outputs), formats, tok, fmt, step_tokenizers, integer=computes)


def trial_chain(lay: Layout, r: Recipe, base_dir: Path, outputs: list[Path]) -> Layout:
    """The layout of a search trial (r: the searching recipe with the trial's steps): it starts
    from the searching recipe's input model and data, and writes `outputs`."""
    tok = lay.step_tokenizers[0] if lay.step_tokenizers else lay.tokenizer
    fmt = lay.formats_in
    out = chain(r, base_dir, lay.model_in, fmt, tok, lay.integer[str(lay.model_in)], lay.data, outputs)
    out.tokenizer_in, out.source_tokenizer, out.baseline_recipe = lay.tokenizer_in, lay.source_tokenizer, lay.baseline_recipe
    return out


def _computes_in_integers(p: base.Pass, config: dict, before: bool | None) -> bool | None:
    """Whether a pass's output model computes in integers, given its input's (None: unknown)."""
    if p.output_format not in (base.ONNX, base.DECODER):
        return False
    return {"float": False, "integer": True, "as-input": before}.get(p.computes_for(config))
