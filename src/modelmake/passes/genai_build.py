"""Hugging Face causal LM -> ONNX decoder with a key/value cache, by onnxruntime-genai's model builder.

The builder (`onnxruntime_genai.models.builder`, what Olive's ModelBuilder pass wraps) writes the
decoder as ONNX Runtime's generation loop wants it: GroupQueryAttention over past key/values,
rotary embeddings computed in the graph, MatMulNBits for int4/int8 weights, plus genai_config.json
(search defaults, special token ids) and the tokenizer files. It is called in this process with
the options its command line would take (`--help` of 0.18 crashes on a `%` in a help string; the
options are read from its source).
"""
from __future__ import annotations

from modelmake.passes.base import DECODER, HF, Field, Pass, StepContext

INT4 = ("precision", "int4")

PASS = Pass(
    type="genai-builder",
    summary="Build an ONNX decoder with KV cache from a causal LM (onnxruntime-genai), fp32 or int8/int4 weights",
    notes=("The int4 and int8 builds quantize the MatMul weights block-wise (MatMulNBits); activations stay float, or int8 "
           "inside the MatMul with accuracy_level = 4. A model that was already 4-bit (a Q4 GGUF) loses more "
           "by a second rounding to int4 than a float one: measure perplexity against the fp32 build "
           "(docs/recipes.md, language models)."),
    fields=(
        Field("precision", "str", "int4", "weights: fp32, or block-wise int8 / int4 (MatMulNBits)",
              choices=("fp32", "int8", "int4")),
        Field("block_size", "int", 32, "weights along K sharing one scale", choices=(16, 32, 64, 128, 256), when=INT4),
        Field("accuracy_level", "int", 4, "what the int4 MatMul computes in: 4 int8 (fastest on CPU), 3 bf16, "
              "2 fp16, 1 fp32", choices=(1, 2, 3, 4), when=INT4),
        Field("symmetric", "bool", True, "signed int4 without zero points; false adds a zero point per block "
              "(and needs shared_embeddings = false)", when=INT4),
        Field("method", "str", "default", "how blocks are rounded: 'default'/'rtn' round to nearest ('rtn' "
              "names nodes so that int8_layers can share the tied LM head), 'k_quant' searches each block's "
              "scale as llama.cpp's k-quants do (4-6x slower to build)", choices=("default", "rtn", "k_quant"),
              when=INT4),
        Field("int8_layers", "list[str]", [], "MatMul groups kept at int8 inside the int4 model: 'last_matmul' "
              "(the LM head), 'mixed_layers' (llama.cpp's sensitive layers: first and last eighth, every third "
              "layer's qkv/v/down projections)", choices=("last_matmul", "mixed_layers"), when=INT4),
        Field("shared_embeddings", "bool", True, "a model with tied input/output embeddings stores them once "
              "(the LM head reads the embedding table); false stores two copies"),
    ),
    input_format=HF,
    output_format=DECODER,
    computes="integer",
    computes_by=("precision", {"fp32": "float"}),
    version=1,
    libraries=("onnxruntime-genai", "onnx", "onnx-ir", "transformers", "torch"),
    run="modelmake.passes.genai_build:run",
    tasks=("text-generation",),
    requires=("onnxruntime-genai",),
    extra="llm",
)


class BuilderError(Exception):
    plain = True


def options(cfg) -> list[str]:
    """The builder's KEY=VALUE extra options for a config."""
    out = [f"shared_embeddings={str(cfg.shared_embeddings).lower()}"]
    if cfg.precision == "int4":
        out += [f"block_size={cfg.block_size}", f"accuracy_level={cfg.accuracy_level}",
                f"is_symmetric={str(cfg.symmetric).lower()}", f"algo_config={cfg.method}"]
        if cfg.int8_layers:
            out.append("matmul_mixed_precision=" + ",".join(f"{g}:int8" for g in cfg.int8_layers))
    return out


def run(ctx: StepContext) -> None:
    import logging
    import tempfile

    from modelmake.core.progress import library_failure, library_output_held

    cfg = ctx.config
    if cfg.precision == "int4" and not cfg.symmetric and cfg.shared_embeddings:
        # onnxruntime-genai 0.18 writes a model that fails to load (uint8 vs float at embed_tokens/Reshape)
        raise BuilderError("symmetric = false needs shared_embeddings = false (the builder's shared uint4 "
                           "embeddings do not load in onnxruntime-genai 0.18)")
    if cfg.precision == "int4" and "last_matmul" in cfg.int8_layers and cfg.method == "default" and cfg.shared_embeddings:
        # 0.18 names the tied int8 head as its rtn quantizer would and the default one does not
        raise BuilderError("int8_layers with 'last_matmul' needs method = 'rtn' or 'k_quant' (with method = "
                           "'default' and shared embeddings onnxruntime-genai 0.18 writes a model that does not load)")
    opts = options(cfg)
    ctx.log(f"building a {cfg.precision} decoder ({', '.join(opts)})")
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    # its quantizer logs a line per MatMul node at INFO
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="mm-builder-") as cache, library_output_held() as held:
        try:
            extra = parse_extra_options(None, str(ctx.model_dir), str(ctx.out_dir), cfg.precision, "cpu", cache, opts)
            create_model(None, str(ctx.model_dir), str(ctx.out_dir), cfg.precision, "cpu", cache, **extra)
        except (ValueError, NotImplementedError, KeyError) as e:
            raise BuilderError(f"the onnxruntime-genai builder failed: {library_failure(e, held)}") from None
    written = {p.name: p.stat().st_size for p in ctx.out_dir.iterdir()}
    if "model.onnx" not in written or "genai_config.json" not in written:
        raise BuilderError(f"the builder wrote no model.onnx and genai_config.json (it wrote: {', '.join(sorted(written))})")
    weights = sum(v for k, v in written.items() if k.endswith((".onnx", ".onnx.data")))
    ctx.log(f"{weights / 1e6:.1f} MB of model files, {len(written)} files")
