"""Malformed recipes never give a traceback: property-based.

Hundreds of recipes are derived from the valid tiny recipe (buildkit.recipe_text) by structural
mutation -- wrong types for every key, unknown keys at every level, missing sections and keys,
absurd values, dangling references, cycles between recipes -- and written back as TOML; others
are invalid TOML text or random bytes. The task loader runs in-process for speed:
`dodo_namespace` must either return (the mutation happened to stay valid; then doit itself must
accept the tasks) or raise SystemExit(2) after printing exactly one line on stderr,
`error: recipes/<file>.toml: <key path>: <message>`. Any other exception fails the test.

Strategies named `must_fail_*` only produce recipes that are invalid, so for them exit 2 is
required, and the line must name the key path that was broken.

Run with `-s` to see `malformed recipes tried: N, failures: 0`; with MODELMAKE_FIGURES=<file>
set, `malformed_recipes=N` is appended to that file.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as dt
import io
import math
import os
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildkit import BARE, REPO, recipe_text, to_toml
from modelmake import passes as registry
from modelmake.build.graph import dodo_namespace
from modelmake.inputs.recipe import EVAL_METRICS, NAME_RE
from modelmake.metrics.catalogue import TASK_FAMILIES
from tinymodel import make_tiny_reviews_csv

BASE_TEXT = recipe_text()
BASE = tomllib.loads(BASE_TEXT)
FILE = "recipes/tiny.toml"
STATS = {"tried": 0, "rejected": 0, "accepted": 0, "failures": 0, "controls": 0}


def _settings(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def _same(a, b) -> bool:
    """Equality that treats NaN as equal to NaN (for the writer's round trip)."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b


# ---------------------------------------------------------------- the schema of the base recipe
def _schema() -> dict[tuple, str]:
    """Every key the tiny recipe has or may have -> its kind (table, array, str, int, float,
    bool, list[str], dataset)."""
    s: dict[tuple, str] = {("description",): "str", ("model",): "table", ("model", "path"): "str",
                           ("model", "task"): "str", ("model", "sha256"): "str", ("data",): "table"}
    d = ("data", "reviews")
    s.update({d: "table", d + ("path",): "str", d + ("sha256",): "str", d + ("text",): "text",
              d + ("label",): "table", d + ("label", "column"): "str", d + ("label", "map"): "table",
              d + ("label", "map", "rotten"): "int", d + ("label", "map", "fresh"): "int",
              d + ("split",): "table", d + ("split", "by"): "str", d + ("split", "test"): "float",
              d + ("split", "seed"): "int", ("pass",): "array"})
    for i, p in enumerate(BASE["pass"]):
        s.update({("pass", i): "table", ("pass", i, "name"): "str", ("pass", i, "type"): "str"})
        for f in registry.get(p["type"]).fields:
            # a key that only applies with another setting (e.g. lora_r with method = "lora") is
            # refused in the base recipe's steps, so it is not part of what a valid variant may set
            if f.when is None or p.get(f.when[0], registry.get(p["type"]).field(f.when[0]).default) == f.when[1]:
                s[("pass", i, f.name)] = f.kind
    s.update({("evaluate",): "table", ("evaluate", "data"): "dataset", ("evaluate", "metrics"): "list[str]",
              ("evaluate", "baseline"): "str", ("evaluate", "max_samples"): "int",
              ("evaluate", "batch_size"): "int", ("evaluate", "max_length"): "int",
              ("evaluate", "latency"): "table"})
    for k in ("batch", "sequence", "warmup", "runs", "threads", "throughput_batch", "throughput_runs"):
        s[("evaluate", "latency", k)] = "int"
    s.update({("package",): "table", ("package", "format"): "str", ("package", "max_length"): "int"})
    return s


SCHEMA = _schema()
TABLES = [p for p, k in SCHEMA.items() if k == "table" and p[-1] != "map" and p != ("data",)] + [()]
KNOWN_KEYS = {p[-1] for p in SCHEMA if isinstance(p[-1], str)} | {
    "wheel", "hub", "recipe", "member", "revision", "sha256", "pass", "function", "tokenizer",
    "goal", "custom", "on_goal_failure", "baseline_recipe", "max_runs", "stable_percent"} | {
    f.name for p in registry.REGISTRY.values() for f in p.fields}

# (min, max, choices) of numbers and choice strings, from the pass registry and recipe.py
BOUNDS: dict[tuple, tuple] = {
    ("data", "reviews", "split", "test"): (0.01, 0.99, None),
    ("evaluate", "max_samples"): (0, None, None), ("evaluate", "batch_size"): (1, None, None),
    ("evaluate", "max_length"): (8, 4096, None),
    ("evaluate", "latency", "batch"): (1, None, None), ("evaluate", "latency", "sequence"): (1, 4096, None),
    ("evaluate", "latency", "warmup"): (0, None, None), ("evaluate", "latency", "runs"): (5, None, None),
    ("evaluate", "latency", "threads"): (0, None, None),
    ("evaluate", "latency", "throughput_batch"): (1, None, None),
    ("evaluate", "latency", "throughput_runs"): (1, None, None),
    ("package", "max_length"): (8, 4096, None), ("package", "format"): (None, None, ("zip",)),
    ("model", "task"): (None, None, ("text-classification",)),
}
for _i, _p in enumerate(BASE["pass"]):
    for _f in registry.get(_p["type"]).fields:
        BOUNDS[("pass", _i, _f.name)] = (_f.min, _f.max, _f.choices)


def render(path: tuple) -> str:
    """A key path as recipe.py prints it: pass[0].epochs, data.reviews.split.test."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


# ---------------------------------------------------------------- value strategies
NAN_LIKE = ["NaN", "nan", "-nan", "inf", "-inf", "Infinity", "1e999", "", " ", "null", "None",
            "true", "0", "-1", "1.5", "yes", "x" * 300, "é", "tiny\n", "\x00", "zip "]
KEY_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))
texts = st.one_of(st.sampled_from(NAN_LIKE), st.text(KEY_ALPHABET, max_size=12))
keys = st.one_of(st.sampled_from(["", "a.b", "Epochs", "epochs ", "é", "x\ny", "pass ", "[x]", "0"]),
                 st.text(KEY_ALPHABET, max_size=10))
int64 = st.integers(-2**63, 2**63 - 1)
huge_ints = st.one_of(st.integers(min_value=2**63, max_value=10**40), st.integers(min_value=-10**40, max_value=-2**63 - 1))
floats = st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 1.5]))
datetimes = st.one_of(st.datetimes(timezones=st.sampled_from([None, dt.timezone.utc])), st.dates(), st.times())
scalars = st.one_of(st.booleans(), int64, huge_ints, floats, texts, datetimes)
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(keys, kids, max_size=3),
                      max_leaves=6)
tables = st.dictionaries(keys, values, max_size=3)
good_names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True)
bad_names = st.one_of(st.sampled_from(["", "Fuse", "a b", "source", "fuse\n", "-x", "_x", "é", "x.y",
                                       "a/b", "x:y", "fuse ", "FUSE"]),
                      st.text(KEY_ALPHABET, max_size=8)).filter(lambda n: not NAME_RE.match(n) or n == "source")


def wrong_type(kind: str):
    """Values of any type but `kind`."""
    not_str = st.one_of(st.booleans(), int64, floats, datetimes, st.lists(values, max_size=3), tables)
    return {
        "str": not_str, "dataset": not_str,
        # a text column, or a list of two distinct ones (a pair)
        "text": st.one_of(st.booleans(), int64, floats, datetimes, tables, st.lists(values, max_size=3).filter(
            lambda v: not (1 <= len(v) <= 2 and all(isinstance(x, str) for x in v) and len(set(v)) == len(v)))),
        "int": st.one_of(st.booleans(), floats, texts, datetimes, st.lists(values, max_size=3), tables,
                         st.integers(1, 9).map(float)),
        "float": st.one_of(st.booleans(), texts, datetimes, st.lists(values, max_size=3), tables),
        "bool": st.one_of(int64, floats, texts, datetimes, st.lists(values, max_size=3), tables),
        "list[str]": st.one_of(st.booleans(), int64, floats, texts, datetimes, tables,
                               st.lists(st.one_of(int64, floats, st.booleans(), tables), min_size=1, max_size=3)),
        "table": st.one_of(st.booleans(), int64, floats, texts, datetimes, st.lists(scalars, max_size=3)),
        "array": st.one_of(st.booleans(), int64, floats, texts, datetimes, tables),
    }[kind]


def absurd(path: tuple, kind: str):
    """Values of the right type that the validator must refuse at `path` (None: no such value)."""
    lo, hi, choices = BOUNDS.get(path, (None, None, None))
    options = []
    if kind == "int":
        options.append(huge_ints)
        if choices:
            options.append(int64.filter(lambda v: v not in choices))
        if lo is not None:
            options.append(st.integers(-2**63, int(lo) - 1))
        if hi is not None:
            options.append(st.integers(int(hi) + 1, 2**63 - 1))
    elif kind == "float":
        options.append(st.sampled_from([math.nan, math.inf, -math.inf, 10**309, -10**400]))
        if lo is not None:
            options.append(st.floats(max_value=lo).filter(lambda v: v < lo))
        if hi is not None:
            options.append(st.floats(min_value=hi).filter(lambda v: v > hi))
    elif kind == "str" and choices:
        options.append(texts.filter(lambda v: v not in choices))
    elif kind == "list[str]" and path == ("evaluate", "metrics"):
        options.append(st.lists(texts.filter(lambda m: m not in EVAL_METRICS), min_size=1, max_size=3)
                       .flatmap(lambda bad: st.permutations(bad + ["accuracy"])))
    return st.one_of(options) if options else None


# ---------------------------------------------------------------- doc helpers
def _walk(doc, path: tuple):
    cur = doc
    for p in path:
        if isinstance(cur, dict) and isinstance(p, str) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and isinstance(p, int) and p < len(cur):
            cur = cur[p]
        else:
            return None
    return cur


def set_at(doc, path: tuple, value) -> bool:
    parent = _walk(doc, path[:-1])
    if isinstance(parent, dict) and isinstance(path[-1], str):
        parent[path[-1]] = value
        return True
    if isinstance(parent, list) and isinstance(path[-1], int) and path[-1] < len(parent):
        parent[path[-1]] = value
        return True
    return False


def del_at(doc, path: tuple) -> bool:
    parent = _walk(doc, path[:-1])
    if isinstance(parent, dict) and path[-1] in parent:
        del parent[path[-1]]
        return True
    if isinstance(parent, list) and isinstance(path[-1], int) and path[-1] < len(parent):
        del parent[path[-1]]
        return True
    return False


def base() -> dict:
    return copy.deepcopy(BASE)


# ---------------------------------------------------------------- the project and the contract
@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """What the loader needs: dodo.py, recipes/, models/tiny, data/reviews.csv (no real model:
    loading only checks that local paths exist)."""
    root = tmp_path_factory.mktemp("malformed") / "proj"
    (root / "recipes").mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (root / "models/tiny").mkdir(parents=True)
    (root / "models/tiny/config.json").write_text("{}")
    (root / "models/tiny/tokenizer.json").write_text("{}")  # evaluate/package need tokenizer files
    make_tiny_reviews_csv(root / "data/reviews.csv", n=12)
    old = os.environ.pop("MODELMAKE_PLUGINS", None)
    yield root
    if old is not None:
        os.environ["MODELMAKE_PLUGINS"] = old


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    line = (f"malformed recipes tried: {STATS['tried']}, failures: {STATS['failures']} "
            f"({STATS['rejected']} refused with exit 2 and one line, {STATS['accepted']} happened to stay "
            f"valid and loaded); valid variants loaded: {STATS['controls']}")
    print("\n" + line)
    figures = os.environ.get("MODELMAKE_FIGURES")
    if figures and STATS["tried"]:
        with open(figures, "a") as f:
            f.write(f"malformed_recipes={STATS['tried']}\n")


DANGLING = object()   # a file entry that is a symlink to nothing


def _write(project: Path, files: dict) -> None:
    """Replace recipes/ with `files`: name -> text, bytes, None (a folder) or DANGLING."""
    rdir = project / "recipes"
    for p in rdir.iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for name, content in files.items():
        path = rdir / name
        if content is None:
            path.mkdir()                       # a folder named like a recipe
        elif content is DANGLING:
            path.symlink_to(rdir / "no-such-target")
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)


def check(project: Path, files: dict, *, must_fail: bool = False, must_pass: bool = False,
          expect: tuple[str, ...] = (), file: str | None = None) -> None:
    """The contract: the loader returns, or exits 2 after one `error: <file>: ...` line.
    must_fail: it has to exit 2; must_pass: it has to return (a valid control, not counted as
    a malformed recipe)."""
    STATS["controls" if must_pass else "tried"] += 1
    try:
        _write(project, files)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                namespace = dodo_namespace(str(project / "dodo.py"))
        except SystemExit as e:
            text = err.getvalue()
            assert not must_pass, f"refused a valid recipe: {text}"
            assert e.code == 2, (e.code, text)
            assert out.getvalue() == "", out.getvalue()
            assert text.endswith("\n") and text.count("\n") == 1, repr(text)
            line = text[:-1]
            assert line.isprintable(), repr(line)
            assert re.match(r"error: recipes/.*?\.toml: ", line), line
            if file:
                assert line.startswith(f"error: {file}: "), line
            if expect:
                assert any(x in line for x in expect), (expect, line)
            STATS["rejected"] += 1
            return
        assert not must_fail, f"accepted an invalid recipe: {files}"
        assert err.getvalue() == "" and out.getvalue() == "", (out.getvalue(), err.getvalue())
        _doit_accepts(namespace)
        STATS["accepted"] += 0 if must_pass else 1
    except BaseException:
        STATS["failures"] += 1
        raise


def _doit_accepts(namespace: dict) -> None:
    """A recipe we accept must make tasks doit accepts (names, dependencies, targets)."""
    from doit.control import TaskControl
    from doit.loader import load_tasks

    tasks = load_tasks(namespace)
    TaskControl(tasks)


def _doc_files(doc: dict, extra: dict | None = None) -> dict:
    text = to_toml(doc)
    assert _same(tomllib.loads(text), doc), text   # the writer wrote what we meant
    return {"tiny.toml": text, **(extra or {})}


# ---------------------------------------------------------------- strategies that must fail
@st.composite
def must_fail_structural(draw):
    """One broken key: wrong type, absurd value, unknown key, missing key, dangling reference."""
    doc = base()
    how = draw(st.sampled_from(["wrong-type", "wrong-type", "absurd", "unknown-key", "missing",
                                "bad-name", "reference", "label-map", "local-path"]))
    if how == "wrong-type":
        path = draw(st.sampled_from(sorted(SCHEMA, key=str)))
        set_at(doc, path, draw(wrong_type(SCHEMA[path])))
        return doc, (render(path),)
    if how == "absurd":
        cands = sorted((p for p, k in SCHEMA.items() if absurd(p, k) is not None), key=str)
        path = draw(st.sampled_from(cands))
        set_at(doc, path, draw(absurd(path, SCHEMA[path])))
        return doc, (render(path),)
    if how == "unknown-key":
        where = draw(st.sampled_from(sorted(TABLES, key=str)))
        name = draw(keys.filter(lambda k: k not in KNOWN_KEYS))
        target = _walk(doc, where)
        if name in target:
            name += "_unknown"
        target[name] = draw(values)
        return doc, ("unknown key",) if not BARE.match(name) else (render(where + (name,)) + ": unknown key",)
    if how == "missing":
        path, key = draw(st.sampled_from([
            (("model",), "model"), (("model", "path"), "model"), (("data",), "pass[0].data"),
            (("data", "reviews"), "pass[0].data"), (("data", "reviews", "path"), "data.reviews"),
            # without label the data is text alone, which fine-tuning (pass[0]) refuses; without
            # label.map the labels are class ids already, which is valid
            (("data", "reviews", "label"), "data.reviews.label"),
            (("pass",), "evaluate"), (("pass", 1), "evaluate"), (("pass", 0, "data"), "pass[0].data"),
            (("evaluate", "data"), "evaluate.data")] +
            [(("pass", i, k), f"pass[{i}].{k}") for i in range(len(BASE["pass"])) for k in ("name", "type")]))
        del_at(doc, path)
        return doc, (key,)
    if how == "bad-name":
        i = draw(st.integers(0, len(BASE["pass"]) - 1))
        which = draw(st.sampled_from(["step", "dataset", "type", "duplicate"]))
        if which == "step":
            doc["pass"][i]["name"] = draw(bad_names)
            return doc, (f"pass[{i}].name",)
        if which == "duplicate":
            j = draw(st.integers(0, len(BASE["pass"]) - 1).filter(lambda j: j != i))
            doc["pass"][max(i, j)]["name"] = doc["pass"][min(i, j)]["name"]
            return doc, (f"pass[{max(i, j)}].name",)
        if which == "type":
            doc["pass"][i]["type"] = draw(texts.filter(lambda t: t not in registry.REGISTRY))
            return doc, (f"pass[{i}].type",)
        doc["data"] = {draw(bad_names.filter(lambda n: n != "source")): doc["data"]["reviews"]}
        return doc, ("data.",)
    if how == "reference":
        which = draw(st.sampled_from(["pass-data", "eval-data", "baseline", "recipe", "self"]))
        other = draw(good_names.filter(lambda n: n not in ("reviews", "tiny", "finetune", "export", "fuse", "quantize")))
        if which == "pass-data":
            doc["pass"][0]["data"] = other
            return doc, ("pass[0].data",)
        if which == "eval-data":
            doc["evaluate"]["data"] = other
            return doc, ("evaluate.data",)
        if which == "baseline":
            doc["evaluate"]["baseline"] = other
            return doc, ("evaluate.baseline",)
        doc["model"] = {"recipe": other if which == "recipe" else "tiny"}
        return doc, ("model.recipe",)
    if how == "label-map":
        m = doc["data"]["reviews"]["label"]["map"]
        which = draw(st.sampled_from(["rotten", "fresh", "empty"]))
        if which == "empty":
            doc["data"]["reviews"]["label"]["map"] = {}
        elif which == "rotten":     # fresh is 1: any other id for rotten than 0 leaves a gap
            m["rotten"] = draw(int64.filter(lambda v: v != 0))
        else:
            m["fresh"] = draw(int64.filter(lambda v: v not in (0, 1)))
        return doc, ("data.reviews.label.map",)
    # local-path: nothing there, or not a place a source may be
    which = draw(st.sampled_from(["model", "data"]))
    value = draw(st.sampled_from(["", " ", ".", "./", "/", "..", "../..", "models/..", "artifacts",
                                  "artifacts/tiny", "models/no-such-model", "data/no-such.csv",
                                  "models/t\x00iny", "models/tiny\n"]))
    if which == "model":
        doc["model"]["path"] = value
        return doc, ("model.path",)
    doc["data"]["reviews"]["path"] = value
    return doc, ("data.reviews.path",)


@st.composite
def must_fail_cycle(draw):
    """Recipes whose model.recipe links form a cycle (possibly with tails leading into it)."""
    names = draw(st.lists(good_names.filter(lambda n: n != "tiny"), min_size=1, max_size=5, unique=True))
    k = draw(st.integers(1, len(names)))
    cycle, tails = names[:k], names[k:]
    back = draw(st.integers(0, k - 1))
    links = {n: cycle[i + 1] if i + 1 < k else cycle[back] for i, n in enumerate(cycle)}
    for t in tails:
        links[t] = draw(st.sampled_from(cycle))
    files = {}
    for n, target in links.items():
        files[f"{n}.toml"] = (f'description = "{n}"\n[model]\nrecipe = "{target}"\n'
                              '[[pass]]\nname = "q"\ntype = "dynamic-int8"\n')
    if draw(st.booleans()):
        files["tiny.toml"] = BASE_TEXT
    return files


GARBAGE_LINES = ["= 1", "[]", "a =", "a = b", "[[]]", "x = [1,", "x = {a = 1", "x = 1 2", "'unterminated",
                 'x = """', "x = 1979-02-30", "[model", "x = {a = 1,}", "x == 1", "x = 01", "[x]]",
                 "[[pass]", "[model]]", "description = \"a\" = 2", "x = 0x", "x = nan_"]
for _g in GARBAGE_LINES:
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(_g + "\n")
NEVER_UTF8 = [0xC0, 0xC1] + list(range(0xF5, 0x100))


@st.composite
def must_fail_text(draw):
    """Text that cannot be a recipe: TOML syntax errors, non-UTF-8 bytes, bad file names, an
    empty file, a folder or a dangling link where a recipe file should be."""
    how = draw(st.sampled_from(["garbage-line", "unterminated", "header", "non-utf8", "cut-utf8",
                                "file-name", "empty", "folder", "dangling-link"]))
    lines = BASE_TEXT.splitlines()
    if how == "garbage-line":
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(GARBAGE_LINES)))
        return {"tiny.toml": "\n".join(lines) + "\n"}, ("TOML syntax error",), FILE
    if how == "unterminated":
        cands = [i for i, ln in enumerate(lines) if re.fullmatch(r'\w+ = "[^"]*"', ln)]
        i = draw(st.sampled_from(cands))
        lines[i] = lines[i][:-1]
        return {"tiny.toml": "\n".join(lines) + "\n"}, ("TOML syntax error",), FILE
    if how == "header":
        cands = [i for i, ln in enumerate(lines) if ln.startswith("[")]
        i = draw(st.sampled_from(cands))
        lines[i] = lines[i][:-1]
        return {"tiny.toml": "\n".join(lines) + "\n"}, ("TOML syntax error",), FILE
    if how == "non-utf8":
        data = to_toml(draw(st.sampled_from([BASE, {"description": "ünïcödé ✓ 😀", **BASE}]))).encode()
        pos = draw(st.integers(0, len(data)))
        bad = bytes(draw(st.lists(st.sampled_from(NEVER_UTF8), min_size=1, max_size=3)))
        return {"tiny.toml": data[:pos] + bad + data[pos:]}, ("not UTF-8",), FILE
    if how == "cut-utf8":
        data = ('description = "caf' + "é" + '"\n').encode()
        return {"tiny.toml": data[:-3] + b'"\n' + BASE_TEXT.encode().replace(b"description", b"#", 1)}, \
            ("not UTF-8",), FILE
    if how == "file-name":
        name = draw(st.sampled_from(["Tiny", "tiny v2", "-tiny", "_tiny", "tïny", ".hidden", "tiny\n", "t.iny",
                                     "TINY", " tiny"]))
        return {f"{name}.toml": BASE_TEXT}, ("recipe file names",), None
    if how == "empty":
        return {"tiny.toml": draw(st.sampled_from(["", "\n", "# nothing\n", "\ufeff"]))}, ("model",), FILE
    if how == "folder":
        return {"tiny.toml": BASE_TEXT, "zz.toml": None}, ("recipes/zz.toml: cannot read",), None
    return {"tiny.toml": BASE_TEXT, "aa.toml": DANGLING}, ("recipes/aa.toml: cannot read",), None


# ---------------------------------------------------------------- strategies that must stay valid
OPTIONAL = [("description",), ("data", "reviews", "text"), ("data", "reviews", "label", "column"),
            ("data", "reviews", "split"), ("data", "reviews", "split", "by"), ("data", "reviews", "split", "test"),
            ("data", "reviews", "split", "seed"), ("pass", 0), ("pass", 2), ("pass", 3),
            ("pass", 0, "epochs"), ("pass", 0, "batch_size"), ("pass", 0, "max_length"),
            ("pass", 0, "learning_rate"), ("pass", 3, "per_channel"), ("evaluate", "metrics"),
            ("evaluate", "baseline"), ("evaluate", "max_length"), ("evaluate", "latency"),
            ("evaluate", "latency", "runs"), ("package", "format"), ("package",), ("evaluate",)]


def valid_value(path: tuple, kind: str):
    lo, hi, choices = BOUNDS.get(path, (None, None, None))
    if choices:
        return st.sampled_from(choices)
    if kind == "int":
        return st.integers(int(lo) if lo is not None else -2**63, int(hi) if hi is not None else 2**63 - 1)
    if kind == "float":
        return st.floats(lo if lo is not None else -1e300, hi if hi is not None else 1e300,
                         allow_nan=False, allow_infinity=False)
    if kind == "bool":
        return st.booleans()
    if kind == "list[str]":
        if path == ("evaluate", "metrics"):  # similarity needs a baseline, which a mutation may drop
            return st.lists(st.sampled_from([m for m in TASK_FAMILIES["text-classification"] if m != "similarity"]),
                            max_size=5)
        return st.lists(st.text(max_size=8), max_size=3)
    if path in (("description",), ("data", "reviews", "text"), ("data", "reviews", "label", "column"),
                ("data", "reviews", "split", "by")):
        return st.text(max_size=20)
    if path[-1] == "sha256":
        return st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
    return None


@st.composite
def must_pass_mutation(draw):
    """Edits that keep the recipe valid: in-range values at any key, optional keys and steps
    dropped, other recipes chained on tiny's output model."""
    doc = base()
    settable = sorted((p for p, k in SCHEMA.items() if valid_value(p, k) is not None and "map" not in p), key=str)
    for path in draw(st.lists(st.sampled_from(settable), max_size=4, unique=True)):
        set_at(doc, path, draw(valid_value(path, SCHEMA[path])))
    dropped = draw(st.lists(st.sampled_from(OPTIONAL), max_size=4, unique=True))
    steps = sorted({p[1] for p in dropped if p[0] == "pass" and len(p) == 2}, reverse=True)
    for path in dropped:
        if path[0] != "pass" or (len(path) == 3 and path[1] not in steps):
            del_at(doc, path)
    for i in steps:                  # last first, so the indices of the others stay put
        del doc["pass"][i]
    extra = {}
    for name in draw(st.lists(good_names.filter(lambda n: n != "tiny"), max_size=3, unique=True)):
        up = draw(st.sampled_from(["tiny"] + [n[:-5] for n in extra]))
        ptype = draw(st.sampled_from(["dynamic-int8", "ort-fusion"]))
        extra[f"{name}.toml"] = f'[model]\nrecipe = "{up}"\n[[pass]]\nname = "p"\ntype = "{ptype}"\n'
    return doc, extra


# ---------------------------------------------------------------- strategies that may stay valid
@st.composite
def any_mutation(draw):
    """1-4 random edits anywhere (any value at any key, deletions, unknown keys, pass shuffles,
    other recipes chained through model.recipe): valid or not, never a traceback."""
    doc = base()
    extra = {}
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "set", "delete", "add", "passes", "chain", "pass-type"]))
        if op == "set":
            path = draw(st.sampled_from(sorted(SCHEMA, key=str)))
            kind = SCHEMA[path]
            bad = absurd(path, kind)
            set_at(doc, path, draw(st.one_of([s for s in (values, wrong_type(kind), bad) if s is not None])))
        elif op == "delete":
            del_at(doc, draw(st.sampled_from(sorted(SCHEMA, key=str))))
        elif op == "add":
            target = _walk(doc, draw(st.sampled_from(sorted(TABLES, key=str) + [("data",), ("data", "reviews", "label", "map")])))
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
        elif op == "passes" and isinstance(doc.get("pass"), list) and doc["pass"]:
            how = draw(st.sampled_from(["shuffle", "duplicate", "drop", "non-table"]))
            i = draw(st.integers(0, len(doc["pass"]) - 1))
            if how == "shuffle":
                doc["pass"] = draw(st.permutations(doc["pass"]))
            elif how == "duplicate":
                doc["pass"].insert(i, copy.deepcopy(doc["pass"][i]))
            elif how == "drop":
                del doc["pass"][i]
            else:
                doc["pass"][i] = draw(scalars)
        elif op == "pass-type" and isinstance(doc.get("pass"), list) and doc["pass"]:
            i = draw(st.integers(0, len(doc["pass"]) - 1))
            if isinstance(doc["pass"][i], dict):
                doc["pass"][i]["type"] = draw(st.sampled_from(sorted(registry.REGISTRY)))
        elif op == "chain":
            name = draw(good_names.filter(lambda n: n != "tiny"))
            target = draw(st.sampled_from(["tiny", name] + [n[:-5] for n in extra] + ["nope"]))
            ptype = draw(st.sampled_from(sorted(registry.REGISTRY)))
            extra[f"{name}.toml"] = (f'[model]\nrecipe = "{target}"\n'
                                     f'[[pass]]\nname = "p"\ntype = "{ptype}"\n')
    return doc, extra


@st.composite
def any_text(draw):
    """Damaged text: spans deleted, duplicated or replaced by TOML-ish noise; random bytes."""
    how = draw(st.sampled_from(["delete", "duplicate", "noise", "bytes", "text", "truncate"]))
    data = BASE_TEXT
    if how in ("delete", "duplicate", "noise"):
        for _ in range(draw(st.integers(1, 3))):
            a = draw(st.integers(0, len(data)))
            b = draw(st.integers(a, min(len(data), a + 40)))
            if how == "delete":
                data = data[:a] + data[b:]
            elif how == "duplicate":
                data = data[:b] + data[a:b] + data[b:]
            else:
                noise = draw(st.text(st.sampled_from(list('=[]{}",.\'#\n \\') + ["é", "\x00", "\t", "1", "a"]),
                                     max_size=6))
                data = data[:a] + noise + data[b:]
        return {"tiny.toml": data}
    if how == "truncate":
        raw = BASE_TEXT.encode()
        return {"tiny.toml": raw[:draw(st.integers(0, len(raw)))]}
    if how == "bytes":
        return {"tiny.toml": draw(st.binary(max_size=200))}
    return {"tiny.toml": draw(st.text(max_size=200))}


# ---------------------------------------------------------------- the tests
def test_base_recipe_loads(project):
    check(project, {"tiny.toml": BASE_TEXT}, must_pass=True)
    check(project, _doc_files(base()), must_pass=True)   # the writer's form of it loads too


@_settings(800)
@given(case=must_fail_structural())
def test_structural_mutations_must_fail(project, case):
    doc, expect = case
    check(project, _doc_files(doc), must_fail=True, expect=expect, file=FILE)


@_settings(100)
@given(files=must_fail_cycle())
def test_recipe_cycles_must_fail(project, files):
    check(project, files, must_fail=True, expect=("cycle",))


@_settings(300)
@given(case=must_fail_text())
def test_broken_text_must_fail(project, case):
    files, expect, file = case
    check(project, files, must_fail=True, expect=expect, file=file)


@_settings(300)
@given(case=must_pass_mutation())
def test_valid_mutations_load(project, case):
    doc, extra = case
    check(project, _doc_files(doc, extra), must_pass=True)


@_settings(600)
@given(case=any_mutation())
def test_any_mutation_is_valid_or_one_line(project, case):
    doc, extra = case
    check(project, _doc_files(doc, extra), must_fail=False)


@_settings(300)
@given(files=any_text())
def test_any_damaged_text_is_valid_or_one_line(project, files):
    check(project, files, must_fail=False)
