"""GGUF -> Hugging Face folder: a llama.cpp model file read by transformers, weights dequantized.

transformers reads GGUF files itself (`from_pretrained(folder, gguf_file=...)`, through the `gguf`
package): the quantized blocks come back as float32 weights, the q/k projections' rotary row order
is undone and the tokenizer and chat template are rebuilt from the file's metadata. Saved as a
plain folder (safetensors, config, tokenizer files) it is what every Hugging Face tool reads, the
onnxruntime-genai builder among them (whose own GGUF reader takes float files only).
"""
from __future__ import annotations

from modelmake.passes.base import GGUF, HF, Pass, StepContext

PASS = Pass(
    type="gguf-to-hf",
    summary="Read a GGUF model file into a Hugging Face folder (weights dequantized to float32)",
    notes=("The model's own quantization is undone here: a later builder pass quantizes again from "
           "the float32 weights. The GGUF's tokenizer and chat template come along."),
    fields=(),
    input_format=GGUF,
    output_format=HF,
    computes="float",
    version=1,
    libraries=("transformers", "gguf", "torch"),
    run="modelmake.passes.gguf:run",
    tasks=("text-generation",),
    requires=("gguf", "accelerate"),
    extra="llm",
)


class GgufError(Exception):
    plain = True


def gguf_file(folder) -> str:
    """The one .gguf file's name in a source folder."""
    found = sorted(p.name for p in folder.glob("*.gguf"))
    if len(found) != 1:
        raise GgufError(f"{folder} holds {len(found)} .gguf files ({', '.join(found) or 'none'}); the model "
                        "source must be exactly one")
    return found[0]


def run(ctx: StepContext) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modelmake.core.progress import library_failure, library_output_held

    name = gguf_file(ctx.model_dir)
    size = (ctx.model_dir / name).stat().st_size / 1e6
    ctx.log(f"reading {name} ({size:.0f} MB) with transformers, dequantizing to float32")
    with library_output_held() as held:
        try:
            model = AutoModelForCausalLM.from_pretrained(ctx.model_dir, gguf_file=name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir, gguf_file=name)
        except (ValueError, KeyError, OSError, NotImplementedError) as e:   # an architecture or block type it cannot read
            raise GgufError(f"transformers cannot read {name}: {library_failure(e, held)}") from None
        # the loaded model remembers it came from a GGUF file; a plain folder must not ask for `gguf` again
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(ctx.out_dir, safe_serialization=True)
        tokenizer.save_pretrained(ctx.out_dir)
    params = sum(p.numel() for p in model.parameters())
    ctx.log(f"{params / 1e6:.1f} M parameters -> {sum(f.stat().st_size for f in ctx.out_dir.iterdir()) / 1e6:.0f} MB")
