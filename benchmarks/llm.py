"""The language models side by side, and llama.cpp on the same GGUF; prints the table quoted in README.

    python benchmarks/llm.py [--threads 2] [--rounds 10] [--warmup 2] [--workdir DIR] [--store DIR]

1. Builds recipes/smollm2-*.toml (SmolLM2-135M-Instruct, a Q4_1 GGUF -> gguf-to-hf -> genai-builder
   fp32 / int8 / int4) with the real `doit` CLI in a scratch project; a fresh store by default (cold
   builds, the fp32 recipe first: the other two restore the shared gguf-to-hf step), `--store DIR`
   to reuse one. The ONNX decoder folders come from the build's layout, the GGUF file from the
   source step's folder (artifacts/<recipe>/steps/source/model/*.gguf).
2. Measures, in this one run, the three ONNX decoders (runtime/decoder.py, metrics/textgen.py:
   the product's own code) and llama.cpp (llama-cpp-python) on the GGUF file itself:
   - perplexity with the recipes' protocol: the evaluation's test texts (inputs/data.py's
     evaluation_rows, as the eval step reads them), each [bos] + its tokens, at most max_length;
     llama.cpp is fed the same token ids and its logits are scored by the same float64 code;
   - time to first token and decode rate, greedy at batch 1, the recipes' prompt_tokens and
     new_tokens (EOS cannot end a run), the same `--threads` for every model, in turns: every
     round runs each model once, the order rotating, after `--warmup` untimed runs; medians;
   - size on disk (model.onnx + its data file; the GGUF file) and the peak RSS increase of loading
     and one generation, each in a fresh process (metrics/memprobe.py's method for both engines);
   - a greedy completion of two chat prompts through the model's chat template, printed below.
3. Prints the host, library versions, threads and the table (plus speed ratios vs fp32 and vs
   llama.cpp), and the recipes' own metrics.json next to it.

Without llama-cpp-python installed the llama.cpp row is left out, with a note:
`pip install llama-cpp-python` compiles llama.cpp, about 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from incremental import ENV, REPO, doit  # this folder's incremental.py: one way to run a build
from overhead import cpu  # this folder's overhead.py: CPU model, cores and the int8-relevant flags

RECIPES = ["smollm2-fp32", "smollm2-int8", "smollm2-int4"]   # the baseline first
BASELINE = "smollm2-fp32"
LLAMA = "llama.cpp"
PROMPTS = ["What is the capital of France?", "Write a short story about a robot who learns to paint."]
COMPLETION_TOKENS = 40

# the llama.cpp memory probe: memprobe.py's method (VmRSS before, peak counter reset, VmHWM after)
# in a fresh interpreter; the file's pages llama.cpp maps and touches count, as ONNX Runtime's do
LLAMA_PROBE = """
import gc, json, sys
import numpy, llama_cpp
from modelmake.metrics.memprobe import _peak_mb, _reset_peak, _status_kb
r = json.loads(sys.stdin.read())
gc.collect()
before = _status_kb("VmRSS")
_reset_peak()
llm = llama_cpp.Llama(r["gguf"], n_threads=r["threads"], n_threads_batch=r["threads"], n_ctx=r["n_ctx"],
                      n_batch=r["n_ctx"], n_ubatch=r["n_ctx"], verbose=False)
llm.eval(r["prompt"])
for _ in range(r["new_tokens"] - 1):
    logits = numpy.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
    llm.eval([int(logits.argmax())])
print(json.dumps({"memory_mb": _peak_mb(before)}))
"""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- build
def scratch_project(args) -> Path:
    project = args.workdir or Path(tempfile.mkdtemp(prefix="modelmake-llm-"))
    (project / "recipes").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dodo.py", project)
    for r in RECIPES:
        shutil.copy(REPO / "recipes" / f"{r}.toml", project / "recipes")
    # a scratch project must not reach the user's store or remote unless told to
    for var in ("MODELMAKE_STORE", "MODELMAKE_REMOTE", "MODELMAKE_REMOTE_UPLOAD", "MODELMAKE_REMOTE_AUTHORIZATION"):
        ENV.pop(var, None)
    if args.store:
        ENV["MODELMAKE_STORE"] = str(args.store.resolve())
    return project


def build_all(project: Path) -> dict[str, tuple[float, str]]:
    """recipe -> (wall seconds, goal missed or ""): `doit optimize:<recipe>` one after another."""
    out = {}
    for r in RECIPES:
        say(f"building {r} ...")
        wall, text = doit(project, f"optimize:{r}", goals_may_fail=True)
        missed = re.search(r"^missed: (.*)$", text, re.M)
        out[r] = (wall, missed.group(1) if missed else "")
        say(f"  {r}: {wall:.0f} s" + (f" ({out[r][1]})" if out[r][1] else ""))
    return out


def layout(project: Path):
    """(recipes, decoder folders, GGUF file, test texts): what the build laid out, read as the
    build graph and the eval step read it."""
    from modelmake.build.layout import layouts
    from modelmake.build.project import find_project
    from modelmake.inputs.data import evaluation_rows
    from modelmake.inputs.recipe import load_recipes

    proj = find_project(project)
    recipes = load_recipes(proj.recipes_dir, proj.root)
    lays = layouts(proj, recipes)
    folders = {r: project / lays[r].final for r in RECIPES}
    ggufs = sorted((project / lays[BASELINE].model_in).glob("*.gguf"))
    if len(ggufs) != 1:
        sys.exit(f"expected one .gguf file in {project / lays[BASELINE].model_in}, found {len(ggufs)}")
    ev = recipes[BASELINE].evaluate
    spec = {k: v for k, v in recipes[BASELINE].data[ev["data"]].items() if k != "source"}
    texts, _ = evaluation_rows(project / lays[BASELINE].data[ev["data"]], spec, ev["max_samples"])
    for r in RECIPES[1:]:   # one protocol for all: the recipes must agree on what is measured
        other = recipes[r].evaluate
        for k in ("data", "max_samples", "max_length"):
            if other[k] != ev[k]:
                say(f"note: {r} evaluates with {k} = {other[k]}, {BASELINE} with {ev[k]}; {BASELINE}'s is used")
        if {k: other["generation"][k] for k in ("prompt_tokens", "new_tokens")} != \
                {k: ev["generation"][k] for k in ("prompt_tokens", "new_tokens")}:
            say(f"note: {r} generates with other prompt_tokens/new_tokens than {BASELINE}; {BASELINE}'s are used")
    return recipes, folders, ggufs[0], texts


# ---------------------------------------------------------------- llama.cpp
def llama_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def llama(gguf: Path, threads: int, n_ctx: int, logits_all: bool):
    import llama_cpp

    # the whole prompt (or perplexity text) in one batch, as the ONNX decoders take it
    return llama_cpp.Llama(str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx, n_batch=n_ctx,
                           n_ubatch=n_ctx, logits_all=logits_all, verbose=False)


def last_logits(llm):
    import numpy as np

    return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))


def llama_perplexity(llm, sequences: list[list[int]]) -> dict:
    """The product's perplexity (decoder._scores: float64 log-softmax NLL) on llama.cpp's logits of
    the same token ids, each sequence from an empty cache."""
    import math

    from modelmake.runtime import decoder

    nll, tokens = 0.0, 0
    for seq in sequences:
        if len(seq) < 2:
            continue
        llm.reset()
        llm.eval(seq)
        nll += decoder._scores(llm.scores[:len(seq)], seq)
        tokens += len(seq) - 1
    return {"perplexity": math.exp(nll / tokens), "perplexity_tokens": tokens}


def llama_greedy(llm, prompt: list[int], new_tokens: int, stop: tuple[int, ...] = ()) -> list[int]:
    llm.reset()
    llm.eval(prompt)
    out = [int(last_logits(llm).argmax())]
    while len(out) < new_tokens and out[-1] not in stop:
        llm.eval([out[-1]])
        out.append(int(last_logits(llm).argmax()))
    return out


def llama_timed(llm, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    """(time to first token, decode time) of exactly new_tokens greedy tokens: reset, the prompt
    and the first argmax; then new_tokens - 1 single-token evaluations with their argmax."""
    t0 = time.perf_counter()
    llm.reset()
    llm.eval(prompt)
    token = int(last_logits(llm).argmax())
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        llm.eval([token])
        token = int(last_logits(llm).argmax())
    return t1 - t0, time.perf_counter() - t1


def llama_prefill(llm, prompt: list[int]) -> None:
    llm.reset()
    llm.eval(prompt)


def llama_memory(gguf: Path, threads: int, prompt: list[int], new_tokens: int) -> dict:
    request = {"gguf": str(gguf), "threads": threads, "n_ctx": len(prompt) + new_tokens, "prompt": prompt,
               "new_tokens": new_tokens}
    proc = subprocess.run([sys.executable, "-P", "-c", LLAMA_PROBE], input=json.dumps(request), capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"llama.cpp memory probe failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- measuring
def chat_text(folder: Path, prompt: str) -> str:
    """The chat template of the model folder rendered for one user message, without the leading
    bos token's text: decoder.complete and token_ids put the bos token (here <|im_start|>) first."""
    import jinja2

    from modelmake.runtime import decoder

    template = jinja2.Environment().from_string((folder / "chat_template.jinja").read_text(encoding="utf-8"))
    text = template.render(messages=[{"role": "user", "content": prompt}], add_generation_prompt=True)
    bos = decoder.read(folder).bos
    head = decoder.tokenizer(folder).id_to_token(bos) if bos is not None else None
    return text[len(head):] if head and text.startswith(head) else text


def loops(text: str) -> str:
    """"loops" when some three-word phrase occurs three times or more (a repetition loop)."""
    words = text.split()
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    worst = max((grams.count(g) for g in set(grams)), default=0)
    return f"loops ({worst}x a 3-word phrase)" if worst >= 3 else "no loop"


def interleaved(onnx: dict[str, Path], llm, prompt: list[int], new_tokens: int, threads: int, rounds: int,
                warmup: int) -> dict[str, dict]:
    """TTFT and decode rate of every model in turns: each round runs every model once, the order
    rotating by one each round; each turn starts with an untimed prefill (textgen.time_generation
    does the same: the previous model's thread pool, still spinning, must not slow the timed one)."""
    from modelmake.runtime import decoder, timing

    loaded = {name: decoder.load(folder, threads) for name, folder in onnx.items()}
    runners = {name: (lambda m=m: decoder.prefill(m, prompt),
                      lambda m=m: (lambda run: (run.ttft_s, run.decode_s))(decoder.timed_run(m, prompt, new_tokens)))
               for name, m in loaded.items()}
    if llm is not None:
        runners[LLAMA] = (lambda: llama_prefill(llm, prompt), lambda: llama_timed(llm, prompt, new_tokens))
    for _, timed in runners.values():
        for _ in range(warmup):
            timed()
    names = list(runners)
    ttft = {n: [] for n in names}
    rate = {n: [] for n in names}
    load = []
    for r in range(rounds):
        load.append(os.getloadavg()[0])
        for name in names[r % len(names):] + names[:r % len(names)]:
            prefill, timed = runners[name]
            prefill()
            first, rest = timed()
            ttft[name].append(first * 1e3)
            rate[name].append((new_tokens - 1) / rest)
        say(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {ttft[n][-1]:.1f} ms {rate[n][-1]:.1f} tok/s"
                                                       for n in names))
    return {n: {"ttft_ms.p50": timing.stats(ttft[n], ("p50",))["p50"],
                "ttft_ms.p90": timing.stats(ttft[n], ("p90",))["p90"],
                "decode_tokens_per_s": statistics.median(rate[n]),
                "decode_min": min(rate[n]), "decode_max": max(rate[n]), "load": load} for n in names}


def versions() -> str:
    out = []
    for dist in ("onnxruntime", "onnxruntime-genai", "llama-cpp-python", "transformers"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of every model (default 2: the cores here)")
    ap.add_argument("--rounds", type=int, default=10, help="timed rounds; each runs every model once")
    ap.add_argument("--warmup", type=int, default=2, help="untimed generations per model before the rounds")
    ap.add_argument("--workdir", type=Path, help="scratch project folder (default: a temp folder, removed after)")
    ap.add_argument("--store", type=Path, help="store to use (default: a fresh one in the scratch project: cold builds)")
    args = ap.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.warmup < 0:
        ap.error("--threads and --rounds must be at least 1, --warmup at least 0")

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    project = scratch_project(args)
    walls = build_all(project)
    recipes, folders, gguf, texts = layout(project)

    from modelmake.metrics import textgen
    from modelmake.runtime import decoder

    ev = recipes[BASELINE].evaluate
    gen = textgen._settings(ev["generation"])
    max_length, prompt_n, new_n = ev["max_length"], gen["prompt_tokens"], gen["new_tokens"]
    tok = decoder.tokenizer(folders[BASELINE])
    info = decoder.read(folders[BASELINE])
    sequences = decoder.token_ids(folders[BASELINE], texts, max_length)
    prompt = decoder.prompt_ids(folders[BASELINE], texts, prompt_n)
    for r in RECIPES[1:]:
        if (decoder.prompt_ids(folders[r], texts, prompt_n) != prompt
                or decoder.token_ids(folders[r], texts, max_length) != sequences):
            say(f"note: {r}'s tokenizer gives other ids than {BASELINE}'s")
    have_llama = llama_available()
    notes = []
    if not have_llama:
        notes.append("llama.cpp: not measured: `llama_cpp` is not importable (`pip install llama-cpp-python` "
                     "compiles llama.cpp from source, about 10 minutes on 2 cores)")

    # -------- perplexity, the tokenizer check and completions (quality: not timed)
    ppl, completions = {}, {r: {} for r in RECIPES}
    chats = {p: chat_text(folders[BASELINE], p) for p in PROMPTS}
    for r in RECIPES:
        say(f"perplexity of {r} ({len(texts)} texts) ...")
        ppl[r] = textgen.measure_perplexity(folders[r], texts, max_length, args.threads)
        for p in PROMPTS:
            completions[r][p] = decoder.complete(folders[r], chats[p], COMPLETION_TOKENS, args.threads)
    tokenizer_check, system_info = "", ""
    if have_llama:
        import llama_cpp

        system_info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
        chat_ids = {p: decoder.token_ids(folders[BASELINE], [chats[p]], 1 << 30)[0] for p in PROMPTS}
        n_ctx = max(max_length, *(len(ids) + COMPLETION_TOKENS for ids in chat_ids.values()))
        say(f"perplexity of {LLAMA} ({len(texts)} texts) ...")
        llm = llama(gguf, args.threads, n_ctx, logits_all=True)
        same = [llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)
                == tok.encode(t, add_special_tokens=False).ids for t in texts]
        head = tok.id_to_token(llm.token_bos()) if llm.token_bos() >= 0 else ""
        chat_same = all(llm.tokenize((head + chats[p]).encode("utf-8"), add_bos=False, special=True) == chat_ids[p]
                        for p in PROMPTS)
        first_diff = next((t for t, s in zip(texts, same) if not s), None)
        tokenizer_check = (f"llama.cpp's tokenizer (the GGUF's vocabulary) gives the same ids as the decoder's "
                           f"tokenizer.json for {sum(same)} of {len(texts)} test texts"
                           + (f" (first that differs: {first_diff[:80]!r})" if first_diff else "")
                           + f"; for the chat prompts (special tokens parsed): {'yes' if chat_same else 'NO'}; "
                           f"bos: llama.cpp {llm.token_bos()}, genai_config {info.bos}; eos: llama.cpp {llm.token_eos()}, "
                           f"genai_config {list(info.eos)}. Perplexity and prompts feed llama.cpp the decoder's ids.")
        ppl[LLAMA] = llama_perplexity(llm, sequences)
        for p in PROMPTS:
            new = llama_greedy(llm, chat_ids[p], COMPLETION_TOKENS, info.eos)
            if new and new[-1] in info.eos:
                new.pop()
            completions[LLAMA] = {**completions.get(LLAMA, {}), p: tok.decode(new, skip_special_tokens=True)}
        # llama.cpp's own way (the GGUF's chat template, its tokenizer, its greedy sampler): a check
        own = {p: llm.create_chat_completion([{"role": "user", "content": p}], temperature=0.0,
                                             max_tokens=COMPLETION_TOKENS)["choices"][0]["message"]["content"]
               for p in PROMPTS}
        tokenizer_check += (" llama.cpp's own create_chat_completion (temperature 0) writes the same completions: "
                            + ("yes" if all(own[p].strip() == completions[LLAMA][p].strip() for p in PROMPTS)
                               else "NO: " + "; ".join(repr(own[p]) for p in PROMPTS)) + ".")
        del llm

    # -------- size and memory (each generation in a fresh process)
    size = {r: textgen.size_mb(folders[r]) for r in RECIPES}
    memory = {}
    for r in RECIPES:
        say(f"memory of {r} ...")
        memory[r] = textgen.measure_generation_memory(
            folders[r], texts, {"prompt_tokens": prompt_n, "new_tokens": new_n, "threads": args.threads})["memory_mb"]
    if have_llama:
        size[LLAMA] = gguf.stat().st_size / 1e6
        say(f"memory of {LLAMA} ...")
        memory[LLAMA] = llama_memory(gguf, args.threads, prompt, new_n)["memory_mb"]

    # -------- speed, interleaved
    say(f"timing {len(RECIPES) + have_llama} models interleaved ({args.rounds} rounds after {args.warmup} warm-up) ...")
    timing_llm = llama(gguf, args.threads, prompt_n + new_n, logits_all=False) if have_llama else None
    speed = interleaved(folders, timing_llm, prompt, new_n, args.threads, args.rounds, args.warmup)
    del timing_llm
    total = time.perf_counter() - t_start
    load_end = os.getloadavg()

    # -------- report
    names = RECIPES + ([LLAMA] if have_llama else [])
    print(f"machine: {cpu()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; {versions()}; Python {sys.version.split()[0]}")
    if system_info:
        print(f"llama.cpp system info: {system_info}")
    loads = speed[names[0]]["load"]
    cores = os.cpu_count() or 1
    print(f"load average (1 min): {load_start[0]:.2f} before the builds, {min(loads):.2f}-{max(loads):.2f} during the "
          f"timed rounds (this benchmark's own {args.threads} threads included), {load_end[0]:.2f} at the end "
          f"({cores} cores)")
    if load_start[0] > 0.75 * cores or max(loads) - args.threads > 0.5 * cores:
        print("note: the machine was busy with other work (load beyond this benchmark's threads): absolute times "
              "are pessimistic; the interleaved rounds spread that load over all models alike, so ratios hold better")
    print(f"threads: {args.threads} for every model (onnxruntime-genai intra_op_num_threads via og.Config overlay; "
          f"llama.cpp n_threads = n_threads_batch); perplexity runs with the same threads.")
    print(f"onnxruntime-genai's default without a setting: {decoder.default_threads()} thread(s) on this host "
          f"(min(max(1, cpus // 2), 16)); the recipes' evaluation uses the model's own config (threads = 0), "
          f"so their metrics.json was timed with {decoder.generation_threads(folders[BASELINE])} thread(s). "
          f"llama-cpp-python's default n_threads would be {max(os.cpu_count() // 2, 1)}.")
    print(f"builds (doit optimize:<recipe>, {'store ' + str(args.store) if args.store else 'fresh store: cold'}): "
          + ", ".join(f"{r} {w:.0f} s" + (f" [{m}]" if m else "") for r, (w, m) in walls.items())
          + f"; whole benchmark {total / 60:.1f} min")
    print(f"perplexity: {len(texts)} test texts of {ev['data']} (evaluation_rows: the test split, a seeded sample of "
          f"max_samples = {ev['max_samples']}), [bos] + tokens, at most {max_length} tokens, "
          f"{ppl[BASELINE]['perplexity_tokens']} tokens predicted; speed: batch 1, greedy, a {prompt_n}-token prompt, "
          f"exactly {new_n} new tokens, {args.rounds} interleaved rounds (order rotating) after {args.warmup} warm-up "
          f"runs per model; TTFT p50 and the median decode rate of the rounds.")
    print("recipes' last pass: " + "; ".join(
        f"{r}: {recipes[r].steps[-1].type} " + json.dumps(recipes[r].steps[-1].config, sort_keys=True) for r in RECIPES))
    if tokenizer_check:
        print(tokenizer_check)
    for n in notes:
        print(f"note: {n}")
    print()

    base = BASELINE

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x"
    print("| model | perplexity | Δ vs fp32 | TTFT ms (p50) | decode tokens/s (p50) | size MB | peak memory MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in names:
        label = f"{LLAMA} (llama-cpp-python, {gguf.name})" if n == LLAMA else f"{n} (onnxruntime-genai)"
        delta = 100 * (ppl[n]["perplexity"] / ppl[base]["perplexity"] - 1)
        print(f"| {label} | {ppl[n]['perplexity']:.2f} | {'–' if n == base else f'{delta:+.1f} %'} | "
              f"{speed[n]['ttft_ms.p50']:.1f} | {speed[n]['decode_tokens_per_s']:.1f} | {size[n]:.1f} | {memory[n]:.0f} |")
    print()
    refs = [base] + ([LLAMA] if have_llama else [])
    print("| model | " + " | ".join(f"TTFT vs {r} | decode vs {r} | size vs {r}" for r in refs) + " |")
    print("| --- |" + " ---: | ---: | ---: |" * len(refs))
    for n in names:
        cells = []
        for r in refs:
            cells += [ratio(speed[r]["ttft_ms.p50"], speed[n]["ttft_ms.p50"]),
                      ratio(speed[n]["decode_tokens_per_s"], speed[r]["decode_tokens_per_s"]), ratio(size[n], size[r])]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("\nTTFT ratio: reference / model (above 1: the model answers sooner); decode ratio: model / reference; "
          "size ratio: model / reference.")
    print("decode tokens/s min-max over the rounds: " + ", ".join(
        f"{n} {speed[n]['decode_min']:.1f}-{speed[n]['decode_max']:.1f}" for n in names))

    print(f"\nthe recipes' own metrics.json (their eval step: threads = 0, i.e. the model's config; "
          f"{gen['runs']} runs in turns with fp32): ")
    print("| recipe | perplexity | TTFT ms (p50) | decode tokens/s | threads | size MB | memory MB | goals |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in RECIPES:
        f = project / "artifacts" / r / "metrics.json"
        if not f.is_file():
            print(f"| {r} | (no metrics.json: {walls[r][1] or 'the eval step did not finish'}) |||||||")
            continue
        m = json.loads(f.read_text())

        def g(k, fmt):
            return fmt.format(m[k]) if isinstance(m.get(k), (int, float)) else "–"
        goals = m.get("goals", {})
        print(f"| {r} | {g('perplexity', '{:.2f}')} | {g('ttft_ms.p50', '{:.1f}')} | {g('decode_tokens_per_s', '{:.1f}')} | "
              f"{g('threads', '{}')} | {g('size_mb', '{:.1f}')} | {g('memory_mb', '{:.0f}')} | "
              f"{'passed' if goals.get('passed') else ('FAILED' if goals else '–')} |")
    same_ppl = [r for r in RECIPES if (project / "artifacts" / r / "metrics.json").is_file()
                and abs(json.loads((project / "artifacts" / r / "metrics.json").read_text())["perplexity"]
                        - ppl[r]["perplexity"]) < 1e-6 * ppl[r]["perplexity"]]
    print(f"perplexity here ({args.threads} threads) equals the eval step's to 1e-6 for: {', '.join(same_ppl) or 'none'}")

    print(f"\ngreedy completions ({COMPLETION_TOKENS} new tokens at most) of the chat template with one user "
          "message (its tokens exactly: the template starts with the bos token <|im_start|>, which decoder.complete "
          "puts first); ONNX: decoder.complete; llama.cpp: the same prompt ids, argmax until EOS. "
          "[loops]: some 3-word phrase occurs 3 times or more:")
    for p in PROMPTS:
        print(f"\nprompt: {p!r}")
        for n in names:
            text = completions[n][p]
            print(f"- {n} [{loops(text)}]: {text!r}")
    if not args.workdir:
        shutil.rmtree(project)
    return 0


if __name__ == "__main__":
    sys.exit(main())
