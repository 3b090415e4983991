"""A language model's deployable zip: the decoder folder onnxruntime-genai loads, its metrics, a
generate.py that streams a completion, and a manifest; byte-for-byte reproducible (archive.py; the
weights file is stored, not deflated: float and packed int4 weights
hardly compress, and deflating half a gigabyte costs tens of seconds).
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from modelmake.core.digest import sha256_file
from modelmake.core.files import atomic_file
from modelmake.package.archive import LEVEL, dumps, entry

# a change of what a package holds (this script included) is a new build/compile.DECODER_PACKAGE_VERSION
GENERATE_PY = '''\\
"""Stream a completion of this package's language model: python generate.py "Once upon a time"

Options: --max-new-tokens N (default 64), --chat (wrap the prompt in the model's chat template as
a user message), --sample (sample instead of greedy decoding), --threads N (ONNX Runtime threads;
default: genai_config.json's, else onnxruntime-genai's own choice of half the hardware threads).
Needs onnxruntime-genai (pip install onnxruntime-genai); run it from anywhere, it finds its files
beside it.
"""
import argparse
import json
import sys
from pathlib import Path

import onnxruntime_genai as og

HERE = Path(__file__).resolve().parent


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--chat", action="store_true")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    config = og.Config(str(HERE))
    if args.threads > 0:
        options = {"model": {"decoder": {"session_options": {"intra_op_num_threads": args.threads}}}}
        config.overlay(json.dumps(options))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    prompt = args.prompt
    if args.chat:
        messages = json.dumps([{"role": "user", "content": prompt}])
        prompt = tokenizer.apply_chat_template(messages=messages, add_generation_prompt=True)
    tokens = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(tokens) + args.max_new_tokens, do_sample=args.sample)
    generator = og.Generator(model, params)
    generator.append_tokens(tokens)
    stream = tokenizer.create_stream()
    print(args.prompt if not args.chat else "", end="", flush=True)
    while not generator.is_done():
        generator.generate_next_token()
        print(stream.decode(generator.get_next_tokens()[0]), end="", flush=True)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
'''

README_TXT = '''\\
Language model exported by modelmake: an ONNX decoder for onnxruntime-genai (CPU).
Run:   pip install onnxruntime-genai && python generate.py "Once upon a time"
Files: model.onnx and its weights file, genai_config.json (runtime and search settings), the tokenizer
       files, metrics.json (perplexity and size as measured at build time), manifest.json (sha256 of
       every file).
'''
# files of the decoder folder that are the build's bookkeeping, not the model
_NOT_MODEL = ("manifest.json",)
_STORED = (".onnx.data", ".data")


def model_files(folder: Path) -> list[Path]:
    """The files of a decoder folder a program loads (top level: the builder writes no subfolders)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name not in _NOT_MODEL)


def build_package(out_zip: Path, model_dir: Path, metrics: dict, extra_manifest: dict) -> None:
    """Write the package zip atomically."""
    sources: dict[str, Path | bytes] = {p.name: p for p in model_files(model_dir)}
    for name in ("model.onnx", "genai_config.json"):
        if name not in sources:
            raise ValueError(f"{model_dir} has no {name}; a language model's package needs the builder's folder")
    sources.update({"metrics.json": dumps(metrics), "generate.py": GENERATE_PY.encode("utf-8"),
                    "README.txt": README_TXT.encode("utf-8")})
    manifest = dict(extra_manifest)
    manifest["files"] = {name: _described(src) for name, src in sorted(sources.items())}
    sources["manifest.json"] = dumps(manifest)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for name in sorted(sources):
                _write(zf, name, sources[name])
    atomic_file(Path(out_zip), write)


def _described(src: Path | bytes) -> dict:
    if isinstance(src, bytes):
        return {"sha256": hashlib.sha256(src).hexdigest(), "size": len(src)}
    return {"sha256": sha256_file(src), "size": src.stat().st_size}


def _write(zf: zipfile.ZipFile, name: str, src: Path | bytes) -> None:
    info = entry(name)
    if name.endswith(_STORED):
        info.compress_type = zipfile.ZIP_STORED
    if isinstance(src, bytes):
        zf.writestr(info, src, compress_type=info.compress_type, compresslevel=LEVEL)
        return
    info.file_size = src.stat().st_size   # zip64 headers are decided from it before streaming
    with open(src, "rb") as f, zf.open(info, "w", force_zip64=info.file_size > 0x7FFFFFFF) as dst:
        while chunk := f.read(1 << 20):
            dst.write(chunk)
