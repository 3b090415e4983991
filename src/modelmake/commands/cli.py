"""`modelmake`: doit with this project's tasks (no dodo.py needed), plus modelmake's own commands.

`modelmake store|status|why|compare|report|schema|remote|push|pull|init|import-olive ...` run modelmake's commands; anything else is
handed to doit (`modelmake optimize:bert-int8`, `modelmake list`, ...). Each command module has
`main(command, args) -> exit status` and is imported only when used, so `modelmake status` stays fast.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

COMMANDS = {
    "store": "modelmake.commands.store",   # verify / gc the content-addressed store
    "status": "modelmake.commands.status",      # every recipe and step: up to date / stale / restorable
    "why": "modelmake.commands.status",         # why one task or recipe is (not) up to date
    "compare": "modelmake.commands.compare",     # metrics across recipes, or of a recipe across git revisions
    "report": "modelmake.commands.report",       # artifacts/report.html
    "schema": "modelmake.commands.schema",       # the JSON Schema of recipes, for editors
    "remote": "modelmake.commands.remote",       # status / clean of the shared remote store
    "push": "modelmake.commands.remote",         # upload current results the remote lacks
    "pull": "modelmake.commands.remote",         # download current results into the local store
    "init": "modelmake.commands.init",           # a first recipe for a model, with the chain measured best
    "import-olive": "modelmake.commands.olive_import",   # an Olive workflow config as a recipe
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in COMMANDS:
        from modelmake.inputs.recipe import RecipeError

        module = importlib.import_module(COMMANDS[argv[0]])
        try:
            return module.main(argv[0], argv[1:])
        except RecipeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from modelmake.build.graph import dodo_namespace

    namespace = dodo_namespace(str(Path.cwd() / "dodo.py"))
    return DoitMain(ModuleTaskLoader(namespace)).run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
