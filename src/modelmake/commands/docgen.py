"""The pass reference in docs/recipes.md, generated from the pass declarations.

`python -m modelmake.commands.docgen --write docs/recipes.md` rewrites the block between the markers; the
test suite fails when the docs and the registry disagree.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelmake import passes
from modelmake.core.values import ITEM_KIND, toml_value
from modelmake.passes.base import FORMAT_NAMES, Field, Pass

BEGIN = "<!-- BEGIN GENERATED PASS REFERENCE (python -m modelmake.commands.docgen --write docs/recipes.md) -->"
END = "<!-- END GENERATED PASS REFERENCE -->"


def _default(v) -> str:
    return "(required)" if v is None else toml_value(v)


def pass_reference() -> str:
    return "\n".join(pass_section(passes.REGISTRY[name]) for name in sorted(passes.REGISTRY))


def pass_section(p: Pass) -> str:
    """One pass's part of the reference: summary and notes, formats, what its key holds, its keys."""
    inputs = " or ".join(FORMAT_NAMES[f] for f in p.input_formats)
    out = [f"### `{p.type}`\n",
           f"{p.summary}.{' ' + p.notes if p.notes else ''}\n",
           f"Input: {inputs} model; output: {FORMAT_NAMES[p.output_format]} model. "
           f"Key includes the versions of: {', '.join(p.libraries) or 'none'}"
           + "".join(f"; {', '.join(dists)} when `{f} = {_default(v)}`" for f, v, dists in p.libraries_when)
           + (", and this host's fingerprint" if p.host_dependent else "") + ".\n",
           "| key | type | default | meaning |",
           "| --- | --- | --- | --- |"]
    for f in p.fields:
        out.append(f"| `{f.name}` | {f.kind} | {'(required)' if f.required else f'`{_default(f.default)}`'} "
                   f"| {field_meaning(f)} |")
    return "\n".join(out) + "\n"


def field_meaning(f: Field) -> str:
    """A key's doc followed by its rules, as sentences."""
    each = f.kind in ITEM_KIND   # a list's choices and bounds apply to each item
    rules = []
    if f.min_items:
        rules.append(f"At least {'one item' if f.min_items == 1 else f'{f.min_items} items'}")
    if f.choices:
        rules.append(f"{'Each item one' if each else 'One'} of: " + ", ".join(f"`{_default(c)}`" for c in f.choices))
    bounds = ", ".join(b for b in (f">= {f.min}" if f.min is not None else "",
                                   f"<= {f.max}" if f.max is not None else "") if b)
    if bounds:
        rules.append(f"Each item {bounds}" if each else bounds)
    if f.when:
        rules.append(f"Only with `{f.when[0]} = {_default(f.when[1])}`")
    return " ".join(s if s.endswith(".") else s + "." for s in [f.doc, *rules])


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
