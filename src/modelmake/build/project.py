"""Where a project's parts are: its root, artifacts/ and the store (from the environment or
pyproject.toml's [tool.modelmake]); settings errors name the key and end the run with exit 2."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from modelmake.execute.config import ExecutorConfig, ExecutorConfigError
from modelmake.execute.config import configured as configured_executor
from modelmake.inputs.recipe import RecipeError
from modelmake.store.remote import RemoteConfig, RemoteConfigError
from modelmake.store.remote import configured as configured_remote


@dataclass(frozen=True)
class Project:
    root: Path
    artifacts: Path
    store: Path
    remote: RemoteConfig | None = None  # the shared remote store, if one is configured
    executor: ExecutorConfig | None = None  # a Dask cluster that computes pass steps, if one is configured

    @property
    def recipes_dir(self) -> Path:
        return self.root / "recipes"

    def rel(self, path: Path) -> Path:
        """Paths inside the project relative to it: doit runs in the project folder, and a
        relative path keeps doit's DB valid when the checkout moves."""
        try:
            return Path(path).relative_to(self.root)
        except ValueError:
            return Path(path)


def find_project(root: Path) -> Project:
    """Paths of a project. The store: $MODELMAKE_STORE, else [tool.modelmake].store, else artifacts/.store."""
    root = Path(root).resolve()
    artifacts = root / "artifacts"
    store = os.environ.get("MODELMAKE_STORE") or _configured_store(root / "pyproject.toml")
    remote = _configured_remote(root / "pyproject.toml")
    return Project(root, artifacts, (root / store) if store else artifacts / ".store", remote,
                   _configured_executor(root / "pyproject.toml", remote))


def _configured_executor(pyproject: Path, remote: RemoteConfig | None) -> ExecutorConfig | None:
    """$MODELMAKE_EXECUTOR or [tool.modelmake].executor; workers read inputs and write results
    through the shared remote store, so an executor without one is refused before anything runs."""
    from modelmake import passes

    try:
        executor = configured_executor(os.environ, _tool_section(pyproject))
    except ExecutorConfigError as e:
        raise RecipeError(e.where, e.key, e.message) from None
    if executor is None:
        return None
    if remote is None:
        raise RecipeError("MODELMAKE_EXECUTOR", "", "Dask workers read a step's inputs and write its result through "
                          "a shared remote store; set MODELMAKE_REMOTE (or [tool.modelmake] remote) too")
    for pass_type in executor.placement:
        if pass_type != "eval" and passes.get(pass_type) is None:
            raise RecipeError("pyproject.toml", f"tool.modelmake.placement.{pass_type}",
                              f"unknown pass type (known: eval, {', '.join(sorted(passes.REGISTRY))})")
    return executor


def _configured_remote(pyproject: Path) -> RemoteConfig | None:
    """$MODELMAKE_REMOTE or [tool.modelmake].remote, checked (errors name the variable or key)."""
    try:
        return configured_remote(os.environ, _tool_section(pyproject))
    except RemoteConfigError as e:
        raise RecipeError(e.where, e.key, e.message) from None


def _configured_store(pyproject: Path) -> str | None:
    """[tool.modelmake].store of the project's pyproject.toml, if any (errors name the key)."""
    store = _tool_section(pyproject).get("store")
    if store is not None and (not isinstance(store, str) or not store.strip()):
        raise RecipeError("pyproject.toml", "tool.modelmake.store", f"expected a non-empty path string, got {store!r}"[:200])
    return store


def _tool_section(pyproject: Path) -> dict:
    """[tool.modelmake] of the project's pyproject.toml ({} without one; errors name the key)."""
    if not pyproject.is_file():
        return {}
    try:
        conf = tomllib.loads(pyproject.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise RecipeError("pyproject.toml", "", f"not UTF-8 text (byte {e.start})") from None
    except (ValueError, RecursionError) as e:  # TOMLDecodeError is a ValueError
        raise RecipeError("pyproject.toml", "", f"TOML syntax error: {e}") from None
    tool = conf.get("tool", {})
    section = tool.get("modelmake", {}) if isinstance(tool, dict) else None
    if not isinstance(section, dict):
        raise RecipeError("pyproject.toml", "tool.modelmake", "expected a table")
    return section
