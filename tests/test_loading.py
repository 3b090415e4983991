"""Loading the tasks is cheap: no heavy ML library is imported, and a no-op build is quick."""
from __future__ import annotations

import subprocess
import sys

from buildkit import REPO

HEAVY = ("torch", "transformers", "onnxruntime", "onnx", "datasets", "optuna", "dask", "distributed", "fsspec")


def test_loading_tasks_imports_no_heavy_library():
    code = ("import sys; sys.path.insert(0, %r); import dodo; "
            "tasks = list(dodo.task_modelmake()); "
            "print(len(tasks), sorted(m for m in %r if m in sys.modules))") % (str(REPO), HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    count, loaded = proc.stdout.split(" ", 1)
    assert int(count) > 10
    assert loaded.strip() == "[]", loaded


# what loading the tasks leaves to the moment a task runs: each was measured on a no-op build
# (the runner and the store's code with their imports ~6 ms, platform, logging and difflib ~1.5 ms
# each, importlib.metadata's e-mail parser of METADATA files ~2 ms a library)
LATER = ("modelmake.build.runner", "modelmake.store.local", "modelmake.store.remote_transfer", "uuid",
         "platform", "logging", "difflib", "email.parser",
         # a search's and a cluster's code: when a search step or a remote step runs
         "modelmake.search.sampler", "modelmake.search.select", "modelmake.build.search_run",
         "modelmake.execute.cluster", "modelmake.build.cluster_build")


def test_a_no_op_build_loads_only_what_loading_tasks_needs():
    # doit's runner imports cloudpickle when it is installed (dask brings it), and cloudpickle
    # imports logging, platform and uuid: those are doit's cost, not modelmake's
    code = ("import sys; import doit.runner; doits = set(sys.modules); sys.path.insert(0, %r); import dodo; "
            "tasks = list(dodo.task_modelmake()); "
            "from modelmake import passes; "
            "made = [t for t, p in passes.REGISTRY.items() if 'config_class' in vars(p)]; "
            "print(sorted(m for m in %r if m in sys.modules and m not in doits), made)") % (str(REPO), LATER)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] []", proc.stdout


def test_docs_pass_reference_is_current():
    from modelmake.commands.docgen import render
    doc = (REPO / "docs/recipes.md").read_text()
    assert render(doc) == doc, "docs/recipes.md is stale: run python -m modelmake.commands.docgen --write docs/recipes.md"


def test_library_versions_read_fast_are_those_importlib_metadata_reads(tmp_path, monkeypatch):
    """The fast reader of METADATA's Version line gives importlib.metadata's answer, also where an
    egg-info of the same name comes first on sys.path (importlib reads that one)."""
    from importlib import metadata

    from modelmake.core import digest

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, files in ((first, {"Egg_Pkg.egg-info/PKG-INFO": "Name: egg-pkg\nVersion: 0.9\n"}),
                          (second, {"my_pkg-1.2.3.dist-info/METADATA": "Metadata-Version: 2.1\nName: my-pkg\n"
                                                                       "Version: 1.2.3\n\nVersion: body\n",
                                    "egg_pkg-2.0.dist-info/METADATA": "Name: egg-pkg\nVersion: 2.0\n"})):
        for rel, text in files.items():
            (folder / rel).parent.mkdir(parents=True)
            (folder / rel).write_text(text)
    monkeypatch.setattr("sys.path", [str(first), str(second)])
    digest.library_version.cache_clear()
    digest._dist_infos.cache_clear()
    try:
        for name in ("my-pkg", "My.Pkg", "egg-pkg", "no-such-pkg"):
            try:
                expected = metadata.version(name)
            except metadata.PackageNotFoundError:
                expected = "not-installed"
            assert digest.library_version(name) == expected, name
        assert digest.library_version("egg-pkg") == "0.9"
    finally:
        digest.library_version.cache_clear()
        digest._dist_infos.cache_clear()
