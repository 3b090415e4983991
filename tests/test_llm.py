"""The text-generation chain end to end on a tiny random Llama given as a GGUF file: GGUF ->
Hugging Face folder -> onnxruntime-genai decoders (fp32, int4) -> perplexity, generation speed,
size, memory -> a package whose generate.py streams a completion. What a user notices: the
metrics and goals, what a rebuild runs, the package working from its unzipped folder, one-line
errors."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from buildkit import copy_project, doit, make_project, passes_built, recipe_error
from llmkit import tiny_llama_gguf

pytest.importorskip("onnxruntime_genai")

SOURCE = '''
[model]
path = "models/tiny.gguf"
task = "text-generation"

[data.reviews]
path = "data/reviews.csv"
text = "text"
split = { by = "movie_name", test = 0.25, seed = 0 }

[[pass]]
name = "hf"
type = "gguf-to-hf"
'''
EVALUATE = '''
[evaluate]
data = "reviews"
max_samples = 12
max_length = 48
generation = { prompt_tokens = 8, new_tokens = 6, runs = 3, warmup = 1 }
'''


def recipes(int4: str = 'block_size = 32') -> dict[str, str]:
    fp32 = SOURCE + '\n[[pass]]\nname = "decoder"\ntype = "genai-builder"\nprecision = "fp32"\n' + EVALUATE + \
        '\n[package]\n'
    q4 = (SOURCE + f'\n[[pass]]\nname = "decoder"\ntype = "genai-builder"\nprecision = "int4"\n{int4}\n' + EVALUATE +
          'baseline_recipe = "tiny-fp32"\n\n[[evaluate.goal]]\nmetric = "perplexity"\nmax_drop_percent = 1000\n'
          '\n[[evaluate.goal]]\nmetric = "size_mb"\nmin_improvement_percent = 10\n\n[package]\n')
    return {"tiny-fp32": fp32, "tiny-int4": q4}


def make_llm_project(root: Path, texts: dict[str, str] | None = None) -> Path:
    return make_project(root, texts or recipes(), model=lambda r: tiny_llama_gguf(r / "models" / "tiny.gguf"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    project = make_llm_project(tmp_path_factory.mktemp("llm") / "p")
    run = doit(project, "optimize:tiny-int4", "optimize:tiny-fp32")
    assert run.rc == 0, run
    return project, run


def metrics_of(project: Path, recipe: str) -> dict:
    return json.loads((project / "artifacts" / recipe / "metrics.json").read_text())


def test_a_gguf_file_becomes_decoders_measured_against_the_fp32_one(built):
    project, run = built
    # the GGUF is read once for both recipes: same input, same key
    assert sum(t.endswith("/hf") for t in run.built) == 1, run.built
    m = metrics_of(project, "tiny-int4")
    for k in ("perplexity", "baseline.perplexity", "ttft_ms.p50", "decode_tokens_per_s", "size_mb",
              "memory_mb", "baseline.decode_tokens_per_s", "speedup_x.decode_tokens_per_s"):
        assert isinstance(m[k], (int, float)) and m[k] > 0, (k, m)
    assert m["perplexity"] != m["baseline.perplexity"]   # the int4 model is another model
    assert m["size_mb"] < m["baseline.size_mb"]
    assert m["goals"]["passed"], m["goals"]
    fp32 = metrics_of(project, "tiny-fp32")
    # the fp32 recipe's own perplexity is the int4 recipe's baseline, measured once
    assert fp32["perplexity"] == m["baseline.perplexity"]
    assert not any(k.startswith(("latency", "accuracy")) for k in m)


def test_the_decoder_folder_is_what_onnxruntime_genai_loads(built):
    project, _ = built
    folder = project / "artifacts" / "tiny-int4" / "steps" / "decoder"
    names = {p.name for p in folder.iterdir()}
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json"} <= names, names
    config = json.loads((folder / "genai_config.json").read_text())
    assert config["model"]["decoder"]["inputs"]["past_key_names"] == "past_key_values.%d.key"
    # the final model stays in its folder: a lone model.onnx without its data file is not a model
    assert not (project / "artifacts" / "tiny-int4" / "model.onnx").exists()


def test_the_package_streams_a_completion_from_its_unzipped_folder(built, tmp_path):
    project, _ = built
    pkg = project / "artifacts" / "tiny-int4" / "package.zip"
    with zipfile.ZipFile(pkg) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "pkg")
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "generate.py", "metrics.json",
            "manifest.json", "tokenizer.json"} <= names, names
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    shipped = json.loads((tmp_path / "pkg" / "metrics.json").read_text())
    assert "perplexity" in shipped and "ttft_ms.p50" not in shipped   # host-dependent timings stay out
    proc = subprocess.run([sys.executable, str(tmp_path / "pkg" / "generate.py"), "The robot", "--max-new-tokens", "5",
                           "--threads", "1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("The robot") and len(proc.stdout.strip()) > len("The robot")


def test_rebuilds_are_reproducible_and_minimal(built, tmp_path):
    project, _ = built
    copy = copy_project(project, tmp_path)
    again = doit(copy, "optimize:tiny-int4", "optimize:tiny-fp32")
    assert again.rc == 0 and not again.executed - {"optimize:tiny-int4", "optimize:tiny-fp32"}, again
    # an int4 setting: the int4 decoder, its evaluation and package, nothing of the fp32 recipe
    (copy / "recipes" / "tiny-int4.toml").write_text(recipes("block_size = 16")["tiny-int4"])
    edit = doit(copy, "optimize:tiny-int4", "optimize:tiny-fp32")
    assert edit.rc == 0, edit
    assert passes_built(edit) == {"pass:tiny-int4/decoder"}, edit.built
    # the same inputs built anew in another project give the same package bytes
    other = make_llm_project(tmp_path / "q")
    fresh = doit(other, "optimize:tiny-fp32", env={"MODELMAKE_STORE": str(tmp_path / "other-store")})
    assert fresh.rc == 0, fresh
    assert passes_built(fresh) == {"pass:tiny-fp32/hf", "pass:tiny-fp32/decoder"}, fresh.built
    for rel in ("steps/decoder/model.onnx", "steps/decoder/model.onnx.data"):
        assert (other / "artifacts/tiny-fp32" / rel).read_bytes() == (project / "artifacts/tiny-fp32" / rel).read_bytes(), rel


def test_recipe_mistakes_of_a_language_model_are_one_line(tmp_path):
    base = recipes()["tiny-fp32"]
    assert "'accuracy' is not measured for model.task 'text-generation'" in recipe_error(
        tmp_path, base.replace('max_samples = 12', 'max_samples = 12\nmetrics = ["accuracy"]'))
    assert "accuracy is not measured for model.task 'text-generation'" in recipe_error(
        tmp_path, base + '\n[[evaluate.goal]]\nmetric = "accuracy"\nat_least = 0.5\n')
    assert "evaluate.generation" in recipe_error(
        tmp_path, base.replace('max_samples = 12', 'max_samples = 12\nlatency = { batch = 1 }'))
    assert "needs an ONNX decoder model for model.task 'text-generation'; add a genai-builder pass" in recipe_error(
        tmp_path, base.split('[[pass]]\nname = "decoder"')[0] + EVALUATE)
    assert "'genai-builder' needs a Hugging Face model but step input is a GGUF model" in recipe_error(
        tmp_path, base.replace('type = "gguf-to-hf"', 'type = "genai-builder"').replace(
            '[[pass]]\nname = "decoder"\ntype = "genai-builder"\nprecision = "fp32"\n', ''))
    assert "'gguf-to-hf' is for model.task 'text-generation'" in recipe_error(
        tmp_path, base.replace('task = "text-generation"', 'task = "text-classification"'))
    assert "only used when precision = \"int4\"" in recipe_error(
        tmp_path, base.replace('precision = "fp32"', 'precision = "fp32"\nblock_size = 64'))
    assert "does not take model.task 'text-generation'" in recipe_error(
        tmp_path, base + '\n[search]\n[search.space]\n"decoder.precision" = ["fp32", "int8"]\n')


def test_a_folder_holding_a_gguf_file_is_a_gguf_model(tmp_path):
    from buildkit import parse_text

    (tmp_path / "models" / "lm").mkdir(parents=True)
    tiny_llama_gguf(tmp_path / "models" / "lm" / "tiny.gguf")
    recipe = parse_text(tmp_path, recipes()["tiny-fp32"].replace('path = "models/tiny.gguf"', 'path = "models/lm"'))
    assert recipe.model_format == "gguf"


def test_a_missing_extra_is_named_when_the_recipe_loads(tmp_path, monkeypatch):
    from modelmake.core import digest

    real = digest.library_version
    monkeypatch.setattr(digest, "library_version",
                        lambda d: "not-installed" if d == "onnxruntime-genai" else real(d))
    message = recipe_error(tmp_path, recipes()["tiny-fp32"])
    assert "pass type 'genai-builder' needs onnxruntime-genai, which is not installed: pip install -e \".[llm]\"" in message


def test_a_file_that_is_not_gguf_fails_its_source_in_one_line(tmp_path):
    project = make_llm_project(tmp_path / "p", {"tiny-fp32": recipes()["tiny-fp32"]})
    (project / "models" / "tiny.gguf").write_bytes(b"not a model at all, just bytes")
    run = doit(project, "pass:tiny-fp32/hf")
    assert run.rc != 0
    assert "tiny.gguf: not a GGUF file (it does not start with the GGUF magic)" in run.out + run.err


@pytest.mark.parametrize("setting, message", [
    ("symmetric = false", "symmetric = false needs shared_embeddings = false"),
    ('int8_layers = ["last_matmul"]', "int8_layers with 'last_matmul' needs method = 'rtn' or 'k_quant'"),
])
def test_a_builder_setting_that_cannot_load_is_refused_before_building(tmp_path, setting, message):
    project = make_llm_project(tmp_path / "p", {"tiny-int4": recipes(setting)["tiny-int4"].replace(
        'baseline_recipe = "tiny-fp32"\n', '').split("\n[[evaluate.goal]]")[0]})
    run = doit(project, "pass:tiny-int4/decoder")
    assert run.rc != 0
    assert message in run.out + run.err


def test_init_says_where_a_language_model_recipe_starts(tmp_path):
    (tmp_path / "recipes").mkdir()
    proc = subprocess.run([sys.executable, "-m", "modelmake.commands.cli", "init", "lm", "--model", "models/x.gguf"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "copy recipes/smollm2-int8.toml" in proc.stderr, proc
    assert not (tmp_path / "recipes" / "lm.toml").exists()
