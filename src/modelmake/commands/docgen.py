"""The pass reference in docs/recipes.md, generated from the pass declarations.

`python -m modelmake.commands.docgen --write docs/recipes.md` rewrites the block between the markers; the
test suite fails when the docs and the registry disagree.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelmake import passes
from modelmake.inputs.recipe import toml_value

BEGIN = "<!-- BEGIN GENERATED PASS REFERENCE (python -m modelmake.commands.docgen --write docs/recipes.md) -->"
END = "<!-- END GENERATED PASS REFERENCE -->"


def _default(v) -> str:
    return "(required)" if v is None else toml_value(v)


def pass_reference() -> str:
    out = []
    for name in sorted(passes.REGISTRY):
        p = passes.REGISTRY[name]
        out.append(f"### `{name}`\n")
        inputs = " or ".join(f.upper() for f in p.input_formats)
        out.append(f"{p.summary}. Input: {inputs} model; output: {p.output_format.upper()} model. "
                   f"Key includes the versions of: {', '.join(p.libraries) or 'none'}"
                   + "".join(f"; {', '.join(dists)} when `{f} = {_default(v)}`" for f, v, dists in p.libraries_when)
                   + ".\n")
        out.append("| key | type | default | meaning |")
        out.append("| --- | --- | --- | --- |")
        for f in p.fields:
            allowed = ""
            if f.choices:
                each = "Each item one of" if f.kind == "list[str]" else "One of"
                allowed = f" {each}: " + ", ".join(f"`{_default(c)}`" for c in f.choices) + "."
            bounds = [f">= {f.min}" if f.min is not None else "", f"<= {f.max}" if f.max is not None else ""]
            rng = " " + ", ".join(b for b in bounds if b) + "." if any(bounds) else ""
            default = "(required)" if f.required else f"`{_default(f.default)}`"
            only = f" Only with `{f.when[0]} = {_default(f.when[1])}`." if f.when else ""
            out.append(f"| `{f.name}` | {f.kind} | {default} | {f.doc}.{allowed}{rng}{only} |".replace("..", "."))
        out.append("")
    return "\n".join(out)


def render(doc: str) -> str:
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n\n{pass_reference()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", type=Path, help="rewrite the generated block of this Markdown file")
    args = ap.parse_args(argv)
    if args.write:
        args.write.write_text(render(args.write.read_text()))
    else:
        sys.stdout.write(pass_reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
