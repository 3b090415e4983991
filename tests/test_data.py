"""Datasets as users have them: files per split used as given, JSON/Parquet/Arrow, pairs of texts,
numeric labels or none, a hub dataset offline, and bad data as one line naming file, row, column.

Loader tests run in-process on files written here; one build on the tiny model shows pre-split
files reaching fine-tuning, calibration, evaluation and the package exactly as given.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from buildkit import doit, make_project, parse_text, recipe_error  # noqa: E402
from modelmake.inputs.data import DataError, load_dataset_folder  # noqa: E402
from modelmake.inputs.sources import SourceError, fetch  # noqa: E402

MODEL = '[model]\npath = "models/tiny"\n'
EVAL = '\n[[pass]]\nname = "export"\ntype = "onnx-export"\n\n[evaluate]\ndata = "d"\n'


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3, "word": ("yes", "no")[i % 2]}
            for i in range(start, start + n)]


def write(path: Path, records: list[dict]) -> Path:
    """`records` in the format the file name says."""
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.removesuffix(".gz")
    table = pa.Table.from_pylist(records)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif name.endswith(".arrow"):   # the stream format `datasets` writes its cache in
        with pa.ipc.new_stream(str(path), table.schema) as w:
            w.write_table(table)
    elif name.endswith(".feather"):
        with pa.ipc.new_file(str(path), table.schema) as w:
            w.write_table(table)
    elif name.endswith(".json"):
        path.write_text(json.dumps(records))
    elif name.endswith(".jsonl"):
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    else:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]), delimiter="\t" if name.endswith(".tsv") else ",")
            w.writeheader()
            w.writerows(records)
    return path


def load(tmp_path: Path, files: dict, **spec):
    """Fetch a `files` source into a folder as the source step does, and load it."""
    out = tmp_path / "fetched"
    out.mkdir()
    source = {"kind": "files", "files": {k: [v] if isinstance(v, str) else v for k, v in files.items()}}
    fetch(source, out, tmp_path)
    return load_dataset_folder(out, {"text": "premise", "label": {"column": "label"}, **spec})


@pytest.mark.parametrize("train,test", [("train.parquet", "test.json"), ("train.arrow", "test.jsonl.gz"),
                                        ("train.feather", "test.tsv"), ("train.csv", "test.parquet")])
def test_files_per_split_are_used_as_given(tmp_path, train, test):
    write(tmp_path / "data" / train, rows(7))
    write(tmp_path / "data" / test, rows(4, start=100))
    d = load(tmp_path, {"train": f"data/{train}", "test": f"data/{test}"})
    assert d.texts("train") == [f"p{i}" for i in range(7)]
    assert d.texts("test") == [f"p{i}" for i in range(100, 104)]
    assert d.targets("test") == [i % 3 for i in range(100, 104)]
    # numeric labels need no map; classes are named as transformers names them
    assert d.labels == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


def test_globs_lists_pairs_names_and_text_alone(tmp_path):
    for i in range(3):
        write(tmp_path / f"data/train-{i}.jsonl", rows(2, start=10 * i))
    write(tmp_path / "data/extra.csv", rows(1, start=90))
    write(tmp_path / "data/test.json", rows(3))
    files = {"train": ["data/train-*.jsonl", "data/extra.csv"], "test": "data/test.json"}
    pairs = load(tmp_path, files, text=["premise", "hypothesis"],
                 label={"column": "label", "names": ["entailment", "neutral", "contradiction"]})
    assert pairs.texts("train") == [(f"p{i}", f"h{i}") for i in (0, 1, 10, 11, 20, 21, 90)]
    assert pairs.labels == {0: "entailment", 1: "neutral", 2: "contradiction"}
    (tmp_path / "fetched").rename(tmp_path / "first")
    alone = load(tmp_path, files, label=None)
    assert not alone.labelled and alone.labels == {} and alone.targets("test") == [None] * 3


def test_label_map_drops_or_refuses_unknown_values(tmp_path):
    write(tmp_path / "data/train.csv", rows(6))
    write(tmp_path / "data/test.csv", rows(2))
    label = {"column": "word", "map": {"yes": 0}}
    d = load(tmp_path, {"train": "data/train.csv", "test": "data/test.csv"}, label=label)
    assert len(d.train) == 3 and d.labels == {0: "yes"}
    (tmp_path / "fetched").rename(tmp_path / "first")
    with pytest.raises(DataError) as e:
        load(tmp_path, {"train": "data/train.csv", "test": "data/test.csv"}, label={**label, "unknown": "fail"})
    assert str(e.value) == ("data/train.csv: line 3: column 'word' value 'no' is not in label.map "
                            "(the recipe's label.unknown = \"fail\")")


def _bad(tmp_path, name: str, content, text: str = "premise", **files) -> str:
    path = tmp_path / "data" / name
    if isinstance(content, bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    else:
        write(path, content)
    write(tmp_path / "data/ok.csv", rows(2))
    with pytest.raises((DataError, SourceError)) as e:
        load(tmp_path, {"train": f"data/{name}", "test": "data/ok.csv", **files}, text=text)
    line = str(e.value)
    assert "\n" not in line, line
    return line


def test_bad_data_is_one_line_naming_file_row_and_column(tmp_path):
    assert _bad(tmp_path, "a.parquet", rows(3), text="sentence") == (
        "data/a.parquet: no column 'sentence' (the recipe's text); the header has: "
        "'premise', 'hypothesis', 'label', 'word'")
    assert _bad(tmp_path / "2", "b.json", rows(2) + [{"premise": "x"}]) == (
        "data/b.json: row 3: no key 'label' (the recipe's label.column)")
    assert _bad(tmp_path / "3", "c.csv", b"premise,label\nok,1\nbad \xff,0\n") == (
        "data/c.csv: not UTF-8 text: byte 0xff at line 3")
    assert _bad(tmp_path / "4", "d.parquet", b"premise,label\nnot,1\n").startswith(
        "data/d.parquet: not a Parquet file (")
    assert _bad(tmp_path / "5", "e.csv", b"premise,label\n") == "data/e.csv: the train split has no rows"
    assert _bad(tmp_path / "6", "f.jsonl", [{"premise": "x", "label": "pos"}]) == (
        "data/f.jsonl: line 1: column 'label' value 'pos' is not a class id (an integer 0..n-1); "
        "give label.map to map label values to ids")
    assert _bad(tmp_path / "7", "g.arrow", b"\x00" * 16).startswith("data/g.arrow: not an Arrow IPC file or stream (")


def test_hub_dataset_offline_fails_in_one_line(tmp_path):
    """The hub is out of reach: the source fails in one line, as a hub model does, and `datasets`
    leaves no cache behind in the user's home."""
    code = ("import sys; from pathlib import Path; from modelmake.inputs.sources import fetch, SourceError\n"
            "try:\n    fetch(dict(kind='hub-dataset', hub='nyu-mll/glue', revision='0' * 40, config='mnli',"
            " splits={'test': 'validation_matched'}), Path(sys.argv[1]), Path('.'))\n"
            "except SourceError as e:\n    print(e)\n")
    home = tmp_path / "home"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HOME": str(home)}
    for var in ("HF_HOME", "HF_DATASETS_CACHE", "XDG_CACHE_HOME"):
        env.pop(var, None)
    (tmp_path / "out").mkdir()
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True,
                          env=env, timeout=120)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(
        "cannot download the dataset nyu-mll/glue@" + "0" * 40 + " (split 'validation_matched') from the hub (offline?)"), proc
    assert not (home / ".cache/huggingface/datasets").exists()


# ---------------------------------------------------------------- recipes
def test_recipe_forms_normalize(tmp_path):
    r = parse_text(tmp_path, MODEL + '[data.d]\nfiles = { test = "data/t.json", train = ["data/a.csv", "data/b-*.csv"] }\n'
                   'text = ["premise", "hypothesis"]\nlabel = { column = "label" }\n' + EVAL + 'metrics = ["accuracy"]\n')
    assert r.data["d"] == {"source": {"kind": "files", "files": {"train": ["data/a.csv", "data/b-*.csv"],
                                                                   "test": ["data/t.json"]}},
                           "text": ["premise", "hypothesis"], "label": {"column": "label"}}
    r = parse_text(tmp_path, MODEL + f'[data.d]\nhub = "nyu-mll/glue"\nrevision = "{"a" * 40}"\nconfig = "mnli"\n'
                   'splits = { test = "validation_matched" }\n' + EVAL)
    assert r.data["d"]["source"] == {"kind": "hub-dataset", "hub": "nyu-mll/glue", "revision": "a" * 40,
                                     "config": "mnli", "splits": {"test": "validation_matched"}}
    assert r.data["d"]["label"] is None and "accuracy" not in r.evaluate["metrics"]   # text alone: no accuracy


@pytest.mark.parametrize("data,rest,line", [
    ('files = { test = "data/t.csv" }\nsplit = { test = 0.2 }', EVAL,
     "data.d.split: divides one file into train and test; with files the splits are given as they are"),
    ('files = { test = "data/t.csv" }\ntext = ["a", "b", "c"]', EVAL,
     "data.d.text: a tokenizer takes one text or a pair; got 3 columns"),
    ('hub = "org/x"\nrevision = "main"\nsplits = { test = "test" }', EVAL,
     "data.d.revision: expected the commit (40 hex digits) the dataset is read at"),
    ('files = { test = "data/t.csv" }', EVAL + 'metrics = ["accuracy", "latency"]',
     "evaluate.metrics: accuracy need labels, and data.d has none (set data.d.label, or measure other metrics)"),
    ('files = { test = "data/t.csv" }\nlabel = { column = "y" }',
     '\n[[pass]]\nname = "ft"\ntype = "finetune"\ndata = "d"\n',
     "pass[0].data: finetune reads the train split, and data.d has only test (add train to data.d.files)"),
    ('files = { train = "data/t.csv", test = "data/t.csv" }',
     '\n[[pass]]\nname = "ft"\ntype = "finetune"\ndata = "d"\n',
     "pass[0].data: finetune needs labels, and data.d has none (set data.d.label)"),
    ('files = { test = "data/t.csv" }\nlabel = { column = "y", map = { a = 0 }, names = ["a"] }', EVAL,
     "data.d.label.names: give map (label value -> class id) or names"),
    ('files = { test = "data/t.txt" }', EVAL, "data.d.files.test: unsupported file type 'data/t.txt'"),
])
def test_bad_data_tables_are_one_line(tmp_path, data, rest, line):
    got = recipe_error(tmp_path, MODEL + "[data.d]\n" + data + "\n" + rest + "\n")
    assert line in got, got


def test_single_texts_and_pairs_do_not_mix(tmp_path):
    text = (MODEL + '[data.p]\nfiles = { train = "t.csv", test = "t.csv" }\ntext = ["a", "b"]\n'
            '[data.s]\nfiles = { train = "t.csv", test = "t.csv" }\n'
            '\n[[pass]]\nname = "export"\ntype = "onnx-export"\n'
            '[[pass]]\nname = "q"\ntype = "static-int8"\ndata = "s"\n[evaluate]\ndata = "p"\nmetrics = ["size"]\n')
    assert recipe_error(tmp_path, text).endswith(
        "pass[1].data: data.s holds single texts and data.p (evaluate.data) pairs of texts; a model reads one or the other")


# ---------------------------------------------------------------- one build
PAIRS_RECIPE = """\
[model]
path = "models/tiny"

[data.nli]
files = { train = "data/train.parquet", test = ["data/test.json"] }
text = ["premise", "hypothesis"]
label = { column = "label", names = ["rotten", "fresh"] }

[[pass]]
name = "finetune"
type = "finetune"
data = "nli"
epochs = 1
batch_size = 8
max_length = 24

[[pass]]
name = "export"
type = "onnx-export"

[[pass]]
name = "quantize"
type = "static-int8"
data = "nli"
samples = 1000

[evaluate]
data = "nli"
metrics = ["accuracy", "size"]
max_length = 24

[package]
"""


def test_pre_split_pairs_build_end_to_end(tmp_path):
    """Train rows go to fine-tuning and calibration, test rows to evaluation, exactly as given,
    as pairs; the package's predict.py reads pairs."""
    import random

    from tinymodel import BAD, GOOD, NEUTRAL

    project = make_project(tmp_path / "p", {"nli": PAIRS_RECIPE})
    rng = random.Random(0)

    def records(n: int) -> list[dict]:
        return [{"premise": " ".join(rng.choice(NEUTRAL) for _ in range(4)),
                 "hypothesis": f"{rng.choice((BAD, GOOD)[i % 2])} movie", "label": i % 2} for i in range(n)]
    write(project / "data/train.parquet", records(40))
    write(project / "data/test.json", records(9))
    run = doit(project, "optimize:nli")
    assert run.rc == 0, run
    assert "training on 40 of 40 train rows, 2 labels" in run.out, run
    assert "calibrating on 40 texts of 'nli'" in run.out, run
    metrics = json.loads((project / "artifacts/nli/metrics.json").read_text())
    assert metrics["samples"] == 9
    config = json.loads((project / "artifacts/nli/steps/finetune/config.json").read_text())
    assert config["id2label"] == {"0": "rotten", "1": "fresh"}
    with zipfile.ZipFile(project / "artifacts/nli/package.zip") as z:
        z.extractall(tmp_path / "pkg")
    assert json.loads((tmp_path / "pkg/inference_config.json").read_text())["text_pair"] is True
    out = subprocess.run([sys.executable, str(tmp_path / "pkg/predict.py"), "the movie", "great movie",
                          "a film", "awful movie"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and len(out.stdout.strip().splitlines()) == 2, out
