"""`modelmake`: doit with this project's tasks, usable without a dodo.py in the repository."""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from modelmake.graph import dodo_namespace

    namespace = dodo_namespace(str(Path.cwd() / "dodo.py"))
    return DoitMain(ModuleTaskLoader(namespace)).run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
