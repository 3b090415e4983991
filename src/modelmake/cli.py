"""`modelmake`: doit with this project's tasks (no dodo.py needed), plus `modelmake store ...`."""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["store"]:
        from modelmake import maintenance
        from modelmake.recipe import RecipeError

        try:
            return maintenance.main(argv[1:])
        except RecipeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from modelmake.graph import dodo_namespace

    namespace = dodo_namespace(str(Path.cwd() / "dodo.py"))
    return DoitMain(ModuleTaskLoader(namespace)).run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
