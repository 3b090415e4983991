"""Every kind of input model a user brings: a Hugging Face folder (tests/test_build.py), a hub id,
a PyTorch model built by the user's own `module:function`, and an ONNX file or folder.

Each kind builds end to end through the real `doit` CLI on tiny models; each way of getting it
wrong ends with one clear line and a non-zero exit, before anything runs where that is possible.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from buildkit import REPO, doit, make_project

DATA = """
[data.reviews]
path = "data/reviews.csv"
text = "text"
label = { column = "category", map = { rotten = 0, fresh = 1 } }
split = { by = "movie_name", test = 0.3, seed = 0 }
"""

EVALUATE = """
[evaluate]
data = "reviews"
metrics = ["accuracy", "f1", "latency", "size"]
max_length = 16
latency = { batch = 1, sequence = 16, warmup = 1, runs = 5, throughput_batch = 2, throughput_runs = 1 }
"""

PACKAGE = """
[package]
format = "zip"
"""


def step(name: str, type_: str, **keys) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    return f'\n[[pass]]\nname = "{name}"\ntype = "{type_}"\n{extra}'


def recipe(model: str, *parts: str) -> str:
    return f'description = "input model test"\n\n[model]\n{model}\n' + DATA + "".join(parts)


NET_MODEL = 'path = "models/mynet"\nfunction = "net:build"'

# The user's own model: a bag-of-embeddings classifier whose weights live beside the code.
NET_PY = '''\
"""A bag-of-embeddings sentiment classifier, loaded from the weights beside this file."""
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent


class BagOfWords(torch.nn.Module):
    def __init__(self, vocab: int, dim: int, classes: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return (self.head(pooled),)


def build():
    weights = load_file(str(HERE / "weights.safetensors"))
    vocab, dim = weights["embed.weight"].shape
    net = BagOfWords(vocab, dim, weights["head.weight"].shape[0])
    net.load_state_dict(weights)
    ids = torch.ones(2, 8, dtype=torch.long)
    return net, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def explode():
    raise RuntimeError("weights went missing")
'''

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def make_net(folder: Path, tiny: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer

    folder.mkdir(parents=True)
    (folder / "net.py").write_text(NET_PY)
    vocab = Tokenizer.from_file(str(tiny / "tokenizer.json")).get_vocab_size()
    g = torch.Generator().manual_seed(0)
    save_file({"embed.weight": torch.randn(vocab, 16, generator=g), "head.weight": torch.randn(2, 16, generator=g),
               "head.bias": torch.zeros(2)}, str(folder / "weights.safetensors"))
    for name in TOKENIZER_FILES:
        shutil.copy(tiny / name, folder / name)


def export_tiny(tiny: Path, out: Path) -> Path:
    """model.onnx of the tiny BERT as onnx-export makes it (with its metadata), made in-process."""
    from modelmake.passes import export
    from modelmake.passes.base import StepContext

    out.mkdir(parents=True)
    export.run(StepContext(config=export.PASS.config_class.make(), model_dir=tiny, out_dir=out, step="fixture"))
    return out / "model.onnx"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """models/: tiny (HF), mynet (PyTorch code + weights + tokenizer), onnxdir (model.onnx +
    tokenizer), x.onnx (a bare file), tok (tokenizer files alone); data/reviews.csv."""
    root = make_project(tmp_path_factory.mktemp("inputs") / "assets", recipes={"tiny": recipe('path = "models/tiny"')})
    (root / "recipes" / "tiny.toml").unlink()
    models, tiny = root / "models", root / "models" / "tiny"
    make_net(models / "mynet", tiny)
    onnx_file = export_tiny(tiny, models / "onnxdir")
    for name in TOKENIZER_FILES:
        shutil.copy(tiny / name, models / "onnxdir" / name)
    shutil.copy(onnx_file, models / "x.onnx")
    (models / "tok").mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy(tiny / name, models / "tok" / name)
    return root


def new_project(assets: Path, dest: Path, recipes: dict[str, str]) -> Path:
    shutil.copytree(assets, dest)
    for name, text in recipes.items():
        (dest / "recipes" / f"{name}.toml").write_text(text)
    return dest


GOOD = {
    "net": recipe(NET_MODEL, step("export", "onnx-export"), step("quantize", "dynamic-int8"),
                  EVALUATE.replace("[evaluate]", '[evaluate]\nbaseline = "export"'), PACKAGE),
    "onnxdir": recipe('path = "models/onnxdir"', step("fuse", "ort-fusion"), step("quantize", "dynamic-int8"),
                      EVALUATE, PACKAGE),
    "onnxfile": recipe('path = "models/x.onnx"\ntokenizer = "models/tok"', step("quantize", "dynamic-int8"),
                       EVALUATE, PACKAGE),
    "onnxraw": recipe('path = "models/onnxdir"', EVALUATE, PACKAGE),
    # a recipe without passes hands its input model on: here a PyTorch model, exported downstream
    "netsrc": recipe(NET_MODEL),
    "netchain": recipe('recipe = "netsrc"', step("export", "onnx-export"), EVALUATE),
}


@pytest.fixture(scope="module")
def built(assets, tmp_path_factory):
    project = new_project(assets, tmp_path_factory.mktemp("built") / "proj", GOOD)
    run = doit(project, "optimize")
    assert run.rc == 0, run
    return project, run


def ort_logits(model: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]


def load_user_module(folder: Path):
    spec = importlib.util.spec_from_file_location("user_net_under_test", folder / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_built(project: Path, run, name: str, steps: list[str]) -> dict:
    # `net` shares its export with `netchain` (same key): whichever runs first builds it
    for task in [f"pass:{name}/{s}" for s in steps] + [f"eval:{name}", f"package:{name}"]:
        assert run.computed(task), f"{task} was not computed in this run\n{run}"
    metrics = json.loads((project / f"artifacts/{name}/metrics.json").read_bytes())
    assert 0 <= metrics["accuracy"] <= 1 and metrics["samples"] > 0, metrics
    members = zipfile.ZipFile(project / f"artifacts/{name}/package.zip").namelist()
    assert {"model.onnx", "tokenizer.json", "inference_config.json"} <= set(members), members
    return metrics


# ---------------------------------------------------------------- PyTorch: model.function
def test_pytorch_model_exports_quantizes_evaluates_and_packages(built, assets):
    import torch

    project, run = built
    metrics = check_built(project, run, "net", ["export", "quantize"])
    assert "baseline.accuracy" in metrics and "speedup_x.latency_p50" in metrics
    # the export is the user's model: same logits as their code, at a batch and length the
    # example inputs did not have (axes are dynamic), with padding
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 20, 3, 0, 0], [2, 30, 31, 32, 3]])
    mask = (ids != 0).long()
    net, _ = load_user_module(assets / "models/mynet").build()
    with torch.no_grad():
        want = net(input_ids=ids, attention_mask=mask)[0].numpy()
    got = ort_logits(project / "artifacts/net/steps/export/model.onnx",
                     {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # importing the user's code wrote no bytecode into the step's input folder
    assert not list((project / "artifacts/net/steps/source/model").rglob("__pycache__"))


def test_pytorch_model_of_another_recipe_is_exported_downstream(built):
    project, run = built
    assert "eval:netchain" in run.built, run
    assert (project / "artifacts/netchain/steps/export/model.onnx").read_bytes() == \
        (project / "artifacts/net/steps/export/model.onnx").read_bytes()


def test_editing_the_user_module_rebuilds_the_export(built, tmp_path):
    project = tmp_path / "proj"
    shutil.copytree(built[0], project, symlinks=True)
    before = (project / "artifacts/net/steps/export/model.onnx").read_bytes()
    net_py = project / "models/mynet/net.py"
    net_py.write_text(net_py.read_text().replace("return (self.head(pooled),)", "return (2 * self.head(pooled),)"))
    run = doit(project, "optimize:net")
    assert run.rc == 0, run
    assert {"source:net model", "pass:net/export", "pass:net/quantize"} <= set(run.built), run
    assert (project / "artifacts/net/steps/export/model.onnx").read_bytes() != before


def test_pytorch_export_leaves_no_trace_in_the_interpreter(assets, tmp_path):
    """The user's module is imported from the step's input folder and forgotten afterwards; a
    same-named module imported before comes back, and no bytecode lands in the folder."""
    from modelmake.passes import export
    from modelmake.passes.base import ENTRY_FILE, StepContext

    folder = tmp_path / "model"
    shutil.copytree(assets / "models/mynet", folder)
    (folder / ENTRY_FILE).write_text(json.dumps({"function": "net:build"}))
    sentinel = type(sys)("net")
    sys.modules["net"] = sentinel
    path_before = list(sys.path)
    try:
        out = tmp_path / "out"
        out.mkdir()
        export.run(StepContext(config=export.PASS.config_class.make(), model_dir=folder, out_dir=out, step="t"))
        assert sys.modules["net"] is sentinel
        assert not [n for n, m in sys.modules.items() if str(getattr(m, "__file__", "")).startswith(str(folder))]
    finally:
        sys.modules.pop("net", None)
    assert sys.path == path_before
    assert not list(folder.rglob("__pycache__"))
    assert (out / "model.onnx").is_file()


def one_error(run) -> str:
    assert run.rc != 0, run
    assert "Traceback" not in run.out + run.err, run
    errors = [ln for ln in (run.out + run.err).splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, run
    return errors[0]


@pytest.mark.parametrize("function, needles", [
    ("net.build", ["error: recipes/bad.toml: model.function: expected 'module:function'", "got 'net.build'"]),
    ("nope:build", ["error: recipes/bad.toml: model.function: no module 'nope' in models/mynet",
                    "models/mynet/nope.py"]),
])
def test_function_that_names_no_module_is_a_recipe_error(assets, tmp_path, function, needles):
    project = new_project(assets, tmp_path / "proj", {
        "bad": recipe(f'path = "models/mynet"\nfunction = "{function}"', step("export", "onnx-export"))})
    run = doit(project, "list")
    line = one_error(run)
    assert run.rc == 2, run
    for needle in needles:
        assert needle in line, (needle, line)


def test_function_that_fails_fails_the_export_in_one_line(assets, tmp_path):
    cases = {
        "nope": ("net:nope", "UserCodeError: model.function 'net:nope': module net (net.py) has no function 'nope'"),
        "raises": ("net:explode", "UserCodeError: model.function 'net:explode' raised RuntimeError: weights went missing"),
        "notfunc": ("net:HERE", "UserCodeError: model.function 'net:HERE': net.HERE is a PosixPath, not a function"),
    }
    project = new_project(assets, tmp_path / "proj", {
        name: recipe(f'path = "models/mynet"\nfunction = "{function}"', step("export", "onnx-export"))
        for name, (function, _) in cases.items()})
    run = doit(project, "--continue", *(f"pass:{name}/export" for name in cases))
    assert run.rc != 0 and "Traceback" not in run.out + run.err, run
    errors = [ln for ln in (run.out + run.err).splitlines() if ln.startswith("error: ")]
    assert len(errors) == len(cases), run
    for name, (_, needle) in cases.items():
        line = next(ln for ln in errors if ln.startswith(f"error: pass:{name}/export failed: "))
        assert needle in line, (needle, line)
        assert not (project / f"artifacts/{name}/steps/export").exists()


def test_fusion_of_a_model_without_config_asks_for_its_shape(built, tmp_path):
    project = tmp_path / "proj"
    shutil.copytree(built[0], project, symlinks=True)
    (project / "recipes/netfuse.toml").write_text(
        recipe(NET_MODEL, step("export", "onnx-export"), step("fuse", "ort-fusion")))
    line = one_error(doit(project, "pass:netfuse/fuse"))
    assert line.startswith("error: pass:netfuse/fuse failed: "), line
    assert "num_heads and hidden_size are unknown" in line and "set num_heads and hidden_size" in line, line


# ---------------------------------------------------------------- ONNX file or folder
def test_onnx_folder_is_fused_quantized_evaluated_and_packaged(built):
    from modelmake.runtime.onnxmeta import op_counts

    project, run = built
    check_built(project, run, "onnxdir", ["fuse", "quantize"])
    # the metadata the file carries let ort-fusion find the attention
    assert any("Attention" in op for op in op_counts(project / "artifacts/onnxdir/steps/fuse/model.onnx"))


def test_bare_onnx_file_with_tokenizer_elsewhere(built):
    from modelmake.core.digest import list_files

    project, run = built
    check_built(project, run, "onnxfile", ["quantize"])
    assert list_files(project / "artifacts/onnxfile/steps/source/model") == [Path("model.onnx")]
    assert (project / "artifacts/onnxfile/steps/source/tokenizer/tokenizer.json").is_file()


def test_onnx_model_without_passes_is_evaluated_and_packaged_as_is(built, assets):
    project, run = built
    check_built(project, run, "onnxraw", [])
    assert (project / "artifacts/onnxraw/model.onnx").read_bytes() == (assets / "models/onnxdir/model.onnx").read_bytes()


@pytest.mark.parametrize("model, passes, needle", [
    ('path = "models/x.onnx"', "", 'error: recipes/bad.toml: model.path: evaluate and package need tokenizer files, '
     'but models/x.onnx has no tokenizer.json; set model.tokenizer = "<folder>" to a folder holding it'),
    ('path = "models/x.onnx"\ntokenizer = "models/empty"', "",
     "model.tokenizer: evaluate and package need tokenizer files, but models/empty has no tokenizer.json; add it there"),
    ('path = "models/x.onnx"', step("export", "onnx-export"),
     "pass[0].type: 'onnx-export' needs a Hugging Face or PyTorch model but step input is an ONNX model"),
    (NET_MODEL, step("finetune", "finetune", data="reviews"),
     "pass[0].type: 'finetune' needs a Hugging Face model but step input is a PyTorch model"),
    (NET_MODEL, "", "error: recipes/bad.toml: evaluate: needs an ONNX model; add an onnx-export pass"),
    ('path = "models/tiny"\ntokenizer = "models/tok"', step("export", "onnx-export"),
     "model.tokenizer: a Hugging Face model brings its own tokenizer files"),
    ('path = "models/x.onnx"\nfunction = "net:build"', "", "model.function: model.path 'models/x.onnx' is an ONNX model"),
    ('hub = "org/name"\nrevision = "main"\nfunction = "net:build"', step("export", "onnx-export"),
     "model.function: needs model.path"),
])
def test_input_model_mistakes_are_recipe_errors(assets, tmp_path, model, passes, needle):
    project = new_project(assets, tmp_path / "proj", {"bad": recipe(model, passes, EVALUATE, PACKAGE)})
    (project / "models/empty").mkdir()   # a tokenizer folder without tokenizer.json
    (project / "models/empty/vocab.txt").write_text("[PAD]\n")
    run = doit(project, "list")
    line = one_error(run)
    assert run.rc == 2, run
    assert needle in line, (needle, line)


# ---------------------------------------------------------------- hub id
def test_hub_model_offline_fails_the_source_in_one_line(tmp_path):
    project = tmp_path / "proj"
    (project / "recipes").mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", project / "dodo.py")
    (project / "recipes/hubby.toml").write_text(
        '[model]\nhub = "some-org/some-model"\nrevision = "0123abc"\n' + step("export", "onnx-export"))
    run = doit(project, "optimize:hubby", env={"HF_HUB_OFFLINE": "1"})
    line = one_error(run)
    assert line.startswith("error: source:hubby failed: SourceError: cannot download "
                           "some-org/some-model@0123abc from the hub (offline?)"), line
    assert "pass:hubby/export" not in run.built
    assert not (project / "artifacts/hubby/steps/source/model").exists()
