"""Measuring decoder language models (text-generation) as a user sees the numbers: perplexity of
the ONNX decoder equals the PyTorch model's, batching changes no score, prompts start with BOS,
generation produces exactly the tokens asked for (the same ones PyTorch picks) and is timed in
alternating turns, memory and size are positive, and a folder that is not a decoder is named.

One tiny random Llama (tests/llmkit.py) is built once per module into fp32 and int4 decoder
folders with onnxruntime-genai's model builder, in this process.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import pytest

from llmkit import CORPUS, tiny_llama_hf
from modelmake.metrics import textgen
from modelmake.runtime import decoder

TEXTS = [line for line in CORPUS.splitlines() if line.strip()] + ["Tom", "", "The robot wrote a story."]
GENERATION = {"prompt_tokens": 12, "new_tokens": 16, "warmup": 1, "runs": 4, "threads": 0}


def _build(hf: Path, out: Path, precision: str) -> Path:
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    cache = out.parent / f"{out.name}-cache"
    with contextlib.redirect_stdout(io.StringIO()):   # the builder's per-tensor chatter
        extra = parse_extra_options(None, str(hf), str(out), precision, "cpu", str(cache), [])
        create_model(None, str(hf), str(out), precision, "cpu", str(cache), **extra)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("textgen")
    hf = tiny_llama_hf(root / "hf")
    return {"hf": hf, "fp32": _build(hf, root / "fp32", "fp32"), "int4": _build(hf, root / "int4", "int4")}


@pytest.fixture(scope="module")
def torch_model(models):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(models["hf"], dtype=torch.float32).eval()


def test_token_ids_put_bos_first_and_truncate(models):
    from transformers import AutoTokenizer

    folder = models["fp32"]
    bos = json.loads((folder / "genai_config.json").read_text())["model"]["bos_token_id"]
    ids = decoder.token_ids(folder, TEXTS, 10)
    own = AutoTokenizer.from_pretrained(models["hf"])(TEXTS, add_special_tokens=False)["input_ids"]
    assert [i[0] for i in ids] == [bos] * len(TEXTS)
    assert ids == [([bos] + o)[:10] for o in own]
    assert max(map(len, own)) > 10 and min(map(len, ids)) == 1   # some truncated, the empty text is [bos]
    assert decoder.token_ids(folder, ["The robot"], 1) == [[bos]]


def test_fp32_perplexity_equals_pytorch(models, torch_model):
    import torch

    got = textgen.measure_perplexity(models["fp32"], TEXTS, max_length=48)
    nll, count = 0.0, 0
    with torch.no_grad():
        for ids in decoder.token_ids(models["fp32"], TEXTS, 48):
            if len(ids) < 2:
                continue
            logits = torch_model(torch.tensor([ids])).logits[0, :-1].double()
            nll += float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum"))
            count += len(ids) - 1
    assert got["perplexity_tokens"] == count and got["samples"] == len(TEXTS)
    assert got["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    int4 = textgen.measure_perplexity(models["int4"], TEXTS, max_length=48)
    assert int4["perplexity_tokens"] == count and int4["perplexity"] != got["perplexity"]


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_batched_scores_equal_one_at_a_time(models, precision):
    sequences = decoder.token_ids(models[precision], TEXTS * 2, 48)
    lengths = [len(s) for s in sequences if len(s) > 1]
    assert max(map(len, decoder._batches(lengths, 384, decoder.MAX_BATCH))) > 1   # really batched
    batched = decoder.sequence_nll(models[precision], sequences)
    assert batched == decoder.sequence_nll(models[precision], sequences, max_batch=1)   # bit for bit
    assert batched[TEXTS.index("")] == (0.0, 0)


def test_time_generation_times_both_models_in_alternating_turns(models, monkeypatch):
    calls = []
    real = decoder.timed_run

    def recording(model, prompt, new_tokens):
        run = real(model, prompt, new_tokens)
        calls.append((id(model), len(prompt), len(run.tokens)))
        return run

    monkeypatch.setattr(decoder, "timed_run", recording)
    out = textgen.time_generation({"model": models["int4"], "baseline": models["fp32"]}, TEXTS, GENERATION)
    assert set(out) == {"model", "baseline"}
    for values in out.values():
        assert values["runs"] == 4 and values["threads"] == decoder.default_threads()
        for k in ("ttft_ms.p50", "ttft_ms.p90", "decode_tokens_per_s", "decode_ms_per_token.p50"):
            assert values[k] > 0 and math.isfinite(values[k]), k
        assert values["ttft_ms.p90"] >= values["ttft_ms.p50"]
    # every run (warm-up included) had the prompt and generated exactly new_tokens tokens
    assert {(p, n) for _, p, n in calls} == {(12, 16)}
    first = calls[0][0]
    order = ["model" if i == first else "baseline" for i, _, _ in calls]
    assert order == ["model", "baseline"] + ["model", "baseline", "baseline", "model"] * 2


def test_generation_is_greedy_and_eos_cannot_end_a_timed_run(models, torch_model, tmp_path):
    import torch

    folder = tmp_path / "decoder"
    shutil.copytree(models["fp32"], folder)
    prompt = decoder.prompt_ids(folder, TEXTS, 12)
    assert len(prompt) == 12 and prompt[0] == decoder.read(folder).bos
    run = decoder.timed_run(decoder.load(folder), prompt, 16)
    ids, eos = list(prompt), decoder.read(folder).eos
    with torch.no_grad():
        for _ in range(16):
            logits = torch_model(torch.tensor([ids])).logits[0, -1]
            logits[list(eos)] = -math.inf   # as min_length does
            ids.append(int(logits.argmax()))
    assert run.tokens == ids[12:]

    # the model's own first greedy token made its EOS: a completion stops there, a timed run does not
    config = json.loads((folder / "genai_config.json").read_text())
    config["model"]["eos_token_id"] = run.tokens[0]
    (folder / "genai_config.json").write_text(json.dumps(config))
    text = decoder.tokenizer(folder).decode(prompt[1:])
    assert decoder.complete(folder, text, 8) == ""
    assert decoder.complete(models["fp32"], text, 8) == decoder.tokenizer(folder).decode(run.tokens[:8])
    assert len(decoder.timed_run(decoder.load(folder), prompt, 16).tokens) == 16


def test_threads_reach_onnxruntime_genai(models):
    def threads_of(n):
        model = decoder.load(models["fp32"], n)
        count = len(os.listdir("/proc/self/task"))
        del model
        return count

    assert threads_of(3) - threads_of(1) == 2   # intra-op pool workers besides the calling thread
    assert decoder.generation_threads(models["fp32"], 3) == 3


def test_generation_memory_and_size(models):
    memory = textgen.measure_generation_memory(models["int4"], TEXTS, GENERATION)
    assert set(memory) == {"memory_mb"} and memory["memory_mb"] > 0
    sizes = {p: textgen.size_mb(models[p]) for p in ("fp32", "int4")}
    files = [f for f in models["fp32"].iterdir() if f.name.endswith((".onnx", ".onnx.data"))]
    assert len(files) == 2 and sizes["fp32"] == sum(f.stat().st_size for f in files) / 1e6
    assert sizes["int4"] < sizes["fp32"] / 2


def test_a_folder_without_genai_config_is_named(models, tmp_path):
    hf = models["hf"]   # a Hugging Face folder, not yet built
    for measure in (lambda: textgen.measure_perplexity(hf, TEXTS, 32),
                    lambda: textgen.time_generation({"model": hf}, TEXTS, GENERATION),
                    lambda: textgen.measure_generation_memory(hf, TEXTS, GENERATION)):
        with pytest.raises(decoder.DecoderError, match="genai_config.json") as e:
            measure()
        assert str(hf) in str(e.value)
    with pytest.raises(decoder.DecoderError, match="does not exist"):
        decoder.read(tmp_path / "nowhere")
