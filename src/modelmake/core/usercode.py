"""The user's own Python code, named `module:function` in a recipe: a PyTorch model's builder
(model.function, imported from the model folder) and custom metrics (evaluate.custom, imported
from the project folder).

The module is imported by its name from its folder and stays importable only while it is used:
then the folder leaves sys.path, the modules it provided leave sys.modules, and same-named
modules imported before (someone else's 'model' or 'utils') come back. No bytecode is written
into the folder, whose files are inputs of build keys.
"""
from __future__ import annotations

import importlib
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


class UserCodeError(Exception):
    """The user's code could not be loaded or called; the message names it and says why."""


def module_paths(function: str) -> tuple[str, str]:
    """Where in its folder the module of `module:function` may be, in the order Python's import
    looks: a package (`pkg/net/__init__.py`) before a module file (`pkg/net.py`)."""
    module = function.partition(":")[0].replace(".", "/")
    return f"{module}/__init__.py", f"{module}.py"


def module_file(folder: Path, function: str) -> Path | None:
    """The file of `module:function` in `folder`, as importing it would find it, or None."""
    return next((Path(folder) / rel for rel in module_paths(function) if (Path(folder) / rel).is_file()), None)


def first_line(e: BaseException) -> str:
    """An exception as one line: its class and the first line of its message."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{e.__class__.__name__}: {first}" if first else e.__class__.__name__


@contextmanager
def loaded(folder: Path, function: str, what: str,
           error: type[Exception] = UserCodeError) -> Iterator[Callable]:
    """The function of `module:function`, imported from `folder` and importable for the duration
    of the block (so its own later imports work). Failures raise `error` with one line starting
    with `what`, the recipe key that names the function."""
    module_name, _, func_name = function.partition(":")
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names:  # while it is imported, the library's own users would get it
        raise error(f"{what}: module {top!r} has the name of a module of Python's standard library; rename it")
    with _importable(Path(folder), module_name):
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # noqa: BLE001 - whatever the user's module raises on import
            raise error(f"{what}: importing {module_name} raised {first_line(e)}") from e
        if not hasattr(module, func_name):
            raise error(f"{what}: module {module_name} ({_rel(module, folder)}) has no function {func_name!r}")
        fn = getattr(module, func_name)
        if not callable(fn):
            raise error(f"{what}: {module_name}.{func_name} is a {type(fn).__name__}, not a function")
        yield fn


def _rel(module, folder: Path) -> str:
    try:
        return Path(module.__file__).resolve().relative_to(Path(folder).resolve()).as_posix()
    except (TypeError, ValueError):
        return str(getattr(module, "__file__", "?"))


@contextmanager
def _importable(folder: Path, module: str) -> Iterator[None]:
    top = module.split(".")[0]
    shadowed = {n: m for n, m in sys.modules.items() if n == top or n.startswith(top + ".")}
    for n in shadowed:
        del sys.modules[n]
    before = set(sys.modules)
    path, bytecode = list(sys.path), sys.dont_write_bytecode
    inside = str(folder.resolve())
    sys.path.insert(0, inside)
    sys.dont_write_bytecode = True
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = path
        sys.dont_write_bytecode = bytecode
        # Only what the folder itself provides is forgotten: a project folder may also hold the
        # virtualenv or modelmake's own sources, whose modules must stay the ones imported.
        provided = {n for n in sys.modules if n not in before and _top_level_of(n, inside)}
        for n in provided:
            if _defined_in(sys.modules[n], inside):
                del sys.modules[n]
        sys.modules.update(shadowed)


def _top_level_of(name: str, folder: str) -> bool:
    """Whether the folder has the top-level module or package of `name` (not one further down)."""
    top = name.split(".")[0]
    return os.path.isfile(os.path.join(folder, top + ".py")) or os.path.isdir(os.path.join(folder, top))


def _defined_in(module, folder: str) -> bool:
    """Whether a module (or namespace package) comes from `folder`. Some modules (torch.ops)
    answer attribute lookups with objects of their own, so only plain strings count."""
    where = [getattr(module, "__file__", None)]
    spec = getattr(module, "__spec__", None)
    if isinstance(getattr(spec, "submodule_search_locations", None), list):
        where += spec.submodule_search_locations
    return any(isinstance(w, str) and (w == folder or w.startswith(folder + os.sep)) for w in where)
