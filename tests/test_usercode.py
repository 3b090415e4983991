"""The loader of the user's `module:function` (model.function, custom metrics): importable while
used, forgotten after, and nothing else of the interpreter disturbed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelmake.core import usercode


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "mymetrics.py").write_text("def score():\n    import helper\n    return helper.VALUE\n")
    (tmp_path / "helper.py").write_text("VALUE = 42\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/__init__.py").write_text("")
    (tmp_path / "pkg/net.py").write_text("from . import parts\n\ndef build():\n    return parts.NAME\n")
    (tmp_path / "pkg/parts.py").write_text("NAME = 'net'\n")
    (tmp_path / "pkg.py").write_text("raise RuntimeError('Python imports the package, not this file')\n")
    return tmp_path


def test_function_imports_its_siblings_and_is_forgotten_after(project):
    path_before = list(sys.path)
    with usercode.loaded(project, "mymetrics:score", "evaluate.custom[0].function") as score:
        assert score() == 42          # `import helper` at call time finds the folder
    with usercode.loaded(project, "pkg.net:build", "model.function") as build:
        assert build() == "net"       # relative imports of a package work
    assert sys.path == path_before
    assert not {"mymetrics", "helper", "pkg", "pkg.net", "pkg.parts"} & set(sys.modules)
    assert not list(project.rglob("__pycache__"))


def test_module_file_is_the_one_python_imports(project):
    assert usercode.module_file(project, "pkg:build") == project / "pkg/__init__.py"
    assert usercode.module_file(project, "pkg.net:build") == project / "pkg/net.py"
    assert usercode.module_file(project, "nothere:f") is None


def test_modules_the_folder_does_not_provide_stay_imported(project):
    # a virtualenv (or modelmake's own sources) may sit inside a project folder: what the
    # function imports from there must stay the one module the process has
    lib = project / ".venv/site-packages"
    (lib / "thirdparty").mkdir(parents=True)
    (lib / "thirdparty/__init__.py").write_text("")
    (project / "usesit.py").write_text("def f():\n    import thirdparty\n    return thirdparty\n")
    sys.path.append(str(lib))
    try:
        with usercode.loaded(project, "usesit:f", "w") as f:
            module = f()
        assert sys.modules["thirdparty"] is module
    finally:
        sys.path.remove(str(lib))
        sys.modules.pop("thirdparty", None)


def test_a_same_named_module_imported_before_comes_back(project):
    sentinel = type(sys)("mymetrics")
    sys.modules["mymetrics"] = sentinel
    try:
        with usercode.loaded(project, "mymetrics:score", "w") as score:
            assert score() == 42
        assert sys.modules["mymetrics"] is sentinel
    finally:
        sys.modules.pop("mymetrics", None)


@pytest.mark.parametrize("function, message", [
    ("mymetrics:nope", "evaluate.custom[0].function: module mymetrics (mymetrics.py) has no function 'nope'"),
    ("helper:VALUE", "evaluate.custom[0].function: helper.VALUE is a int, not a function"),
    ("nothere:f", "evaluate.custom[0].function: importing nothere raised ModuleNotFoundError: No module named 'nothere'"),
    ("statistics:mean", "evaluate.custom[0].function: module 'statistics' has the name of a module of Python's "
                        "standard library; rename it"),
])
def test_failures_are_one_line_naming_the_key(project, function, message):
    class MetricError(Exception):
        pass

    with pytest.raises(MetricError) as e:
        with usercode.loaded(project, function, "evaluate.custom[0].function", MetricError):
            pass
    assert str(e.value) == message
