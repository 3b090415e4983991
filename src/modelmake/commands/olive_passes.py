"""Olive passes -> modelmake passes, key by key (Olive's names as in olive/passes/onnx/*.py and
olive/passes/pytorch/lora.py). Where Olive's default differs from modelmake's, the step gets
Olive's value written out, so the imported recipe does what the Olive workflow did; the notes
say what this project measured instead."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from modelmake.commands.olive_keys import Keys, shown

CPU = "CPUExecutionProvider"
# Olive 0.9 names integer types by Precision ("int8"), earlier Olive by ORT's QuantType ("QInt8")
_INT8 = {"int8": "qint8", "qint8": "qint8", "uint8": "quint8", "quint8": "quint8"}
_CALIBRATION = {"minmax": "minmax", "entropy": "entropy", "percentile": "percentile"}
_ACCURACY_LEVEL = {"unset": 0, "fp32": 1, "fp16": 2, "bf16": 3, "int8": 4}
_GRAPH_LEVEL = {1: "basic", 2: "extended", 99: "all", "ORT_ENABLE_BASIC": "basic",
                "ORT_ENABLE_EXTENDED": "extended", "ORT_ENABLE_ALL": "all"}
_EXEC_MODE = {0: "sequential", 1: "parallel", "ORT_SEQUENTIAL": "sequential", "ORT_PARALLEL": "parallel"}
# keys every ONNX pass of Olive has (olive/passes/onnx/common.py, get_external_data_config) and
# the pass-level settings of a run config, with the values that need no equivalent here
_COMMON = {"save_as_external_data": (False, "modelmake writes one .onnx file"),
           "all_tensors_to_one_file": (True, "modelmake writes one .onnx file"),
           "external_data_name": (None, "modelmake writes one .onnx file"),
           "size_threshold": (1024, "modelmake writes one .onnx file"),
           "convert_attribute": (False, "modelmake writes one .onnx file"),
           "disable_search": ((True, False), "the import does not translate Olive's search"),
           "host": (None, "steps run where the build runs"),
           "evaluator": (None, "modelmake evaluates the final model only"),
           "output_name": (None, "each step's output is artifacts/<recipe>/steps/<step>/"),
           "clean_run_cache": (False, "the store keeps every result")}


@dataclass
class Step:
    type: str
    config: dict[str, Any]
    notes: dict[str, str] = field(default_factory=dict)
    comment: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What the passes need from the rest of the config."""

    datasets: dict[str, str]                 # Olive data config name -> recipe dataset name
    data_settings: dict[str, dict]           # recipe dataset -> max_length, batch_size, max_samples
    model_type: str | None = None            # from the model's config.json
    task: str = "text-classification"
    exporter: str = "torchscript"
    fusion_types: tuple[str, ...] = ()       # ort-fusion's model_type choices


def _dataset(k: Keys, ctx: Context, key: str = "data_config") -> str | None:
    ref = k.take(key)
    if ref is None:
        return None
    if isinstance(ref, str) and ref in ctx.datasets:
        return ctx.datasets[ref]
    k.report(key, f"{shown(ref)} is not one of the data_configs this import could map")
    return None


def _int8(k: Keys, key: str, value: Any, out: dict, our_key: str) -> None:
    if value is None:
        return
    mapped = _INT8.get(str(value).lower())
    if mapped is None:
        k.report(key, f"{shown(value)} not mapped (modelmake quantizes to int8 or uint8 only)")
    else:
        out[our_key] = mapped


def _list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def conversion(k: Keys, ctx: Context) -> list[Step]:
    cfg: dict[str, Any] = {}
    notes: dict[str, str] = {}
    if k.take("use_dynamo_exporter", False):
        cfg["exporter"] = ctx.exporter = "dynamo"
    opset = k.take("target_opset")
    lo, hi = (18, 20) if ctx.exporter == "dynamo" else (14, 20)
    if opset is not None:
        if isinstance(opset, int) and lo <= opset <= hi:
            cfg["opset"] = opset
        else:
            cfg["opset"] = min(max(int(opset), lo), hi) if isinstance(opset, int) else 17
            k.report("target_opset", f"{shown(opset)} is outside what onnx-export takes ({lo}..{hi}); wrote {cfg['opset']}")
    elif ctx.exporter == "dynamo":
        cfg["opset"] = 18
    device = k.take("device", "cpu")
    if str(device).lower() != "cpu":
        k.report("device", f"{shown(device)} not mapped (modelmake exports on CPU)")
    dtype = k.take("torch_dtype")
    if dtype not in (None, "float32", "fp32"):
        k.report("torch_dtype", f"{shown(dtype)} not mapped (the export is float32; add an fp16 pass for half precision)")
    k.finish({**_COMMON, "dynamic": (True, "the exported batch and sequence axes are always dynamic"),
              "optimize": (True, "modelmake's export runs the exporter's own optimizations"),
              "merge_adapter_weights": (False, "finetune merges LoRA adapters before export"),
              "save_metadata_for_token_generation": (False, "no generation models yet"),
              "past_key_value_name": ("past_key_values", "no generation models yet"),
              "parallel_jobs": (None, "one export per step")})
    return [Step("onnx-export", cfg, notes)]


def transformers_optimization(k: Keys, ctx: Context) -> list[Step]:
    if ctx.exporter == "dynamo":
        # ORT's python fusions do not find attention in a dynamo graph; onnxscript's do
        for key in ("model_type", "num_heads", "hidden_size", "opt_level"):
            k.take(key)
        step = Step("onnxscript-fusion", {"attention": "mha"},
                    comment=["OrtTransformersOptimization after a dynamo export: onnxscript's ORT fusions, "
                             "attention up to MultiHeadAttention so int8 still covers the Q/K/V projections"])
    else:
        cfg: dict[str, Any] = {}
        model_type = k.take("model_type") or ctx.model_type or "bert"
        if model_type not in ctx.fusion_types:
            k.report("model_type", f"{shown(model_type)} is not a family ort-fusion knows; wrote \"bert\"")
            model_type = "bert"
        cfg["model_type"] = model_type
        for key in ("num_heads", "hidden_size"):
            v = k.take(key, 0)
            if v:
                cfg[key] = v
        level = k.take("opt_level")
        if level is not None:
            if level in (0, 1, 2, 99):
                cfg["opt_level"] = level
            else:
                k.report("opt_level", f"{shown(level)} not mapped (ort-fusion takes 0, 1, 2 or 99)")
        step = Step("ort-fusion", cfg)
    steps = [step]
    if k.take("float16", False):
        fp16 = {"keep_io_types": bool(k.take("keep_io_types", True))}
        for olive, ours in (("force_fp32_ops", "op_block_list"), ("force_fp32_nodes", "node_block_list")):
            v = k.take(olive)
            if v:
                fp16[ours] = _list(v)
        steps.append(Step("fp16", fp16, comment=["OrtTransformersOptimization's float16 = true, as a step of its own"]))
    else:
        for key in ("keep_io_types", "force_fp32_ops", "force_fp32_nodes"):
            k.take(key)
    if k.has("optimization_options"):
        k.report("optimization_options", "not mapped (ort-fusion applies every fusion of the model family)")
        k.take("optimization_options")
    k.finish({**_COMMON, "use_gpu": (False, "CPU only"), "only_onnxruntime": (False, "ORT's python fusions are used"),
              "num_key_value_heads": (0, "encoders only"), "use_gqa": (False, "encoders only"),
              "input_int32": (False, "inputs stay int64"), "force_fp16_inputs": (None, "no fp16 inputs")})
    return steps


def quantization(k: Keys, ctx: Context, mode: str | None) -> list[Step]:
    """OnnxQuantization (static by default, dynamic without data), OnnxDynamicQuantization,
    OnnxStaticQuantization."""
    given_mode = k.take("quant_mode")
    data = _dataset(k, ctx)
    mode = mode or given_mode or ("static" if data else "dynamic")
    cfg: dict[str, Any] = {}
    notes: dict[str, str] = {}
    if mode == "static" and data is None:
        k.report("data_config", "static quantization needs calibration data that this import could map; "
                                "wrote dynamic int8 instead")
        mode = "dynamic"
    cfg["per_channel"] = bool(k.take("per_channel", False))
    if not cfg["per_channel"]:
        notes["per_channel"] = "Olive's default; true was about 0.5 points more accurate on MiniLM here"
    if k.take("reduce_range", False):
        cfg["reduce_range"] = True
    _int8(k, "precision", k.take("precision"), cfg, "weight_type")
    _int8(k, "weight_type", k.take("weight_type"), cfg, "weight_type")
    ops = k.take("op_types_to_quantize")
    if ops:
        cfg["op_types"] = _list(ops)
    exclude = k.take("nodes_to_exclude")
    if exclude:
        cfg["nodes_to_exclude"] = _list(exclude)
    if mode == "static":
        cfg = {"data": data, **cfg}
        settings = ctx.data_settings.get(data, {})
        for ours in ("max_length", "batch_size"):
            if settings.get(ours):
                cfg[ours] = settings[ours]
        if settings.get("max_samples"):
            cfg["samples"] = settings["max_samples"]
        fmt = str(k.take("quant_format", "QDQ"))
        if fmt.lower() in ("qdq", "qoperator"):
            cfg["format"] = fmt.lower()
        else:
            k.report("quant_format", f"{shown(fmt)} not mapped (qdq or qoperator)")
        method = str(k.take("calibrate_method", "MinMax"))
        if method.lower() in _CALIBRATION:
            cfg["method"] = _CALIBRATION[method.lower()]
        else:
            k.report("calibrate_method", f"{shown(method)} not mapped (MinMax, Entropy or Percentile)")
        cfg["activation_type"] = "qint8"
        notes["activation_type"] = "Olive's default; quint8 ran faster on x86 here (docs/quantization.md)"
        _int8(k, "activation_type", k.take("activation_type"), cfg, "activation_type")
        if cfg["activation_type"] != "qint8":
            notes.pop("activation_type")
        step = Step("static-int8", cfg, notes)
    else:
        for key in ("quant_format", "calibrate_method", "activation_type"):
            k.take(key)
        step = Step("dynamic-int8", cfg, notes)
    k.finish({**_COMMON,
              "quant_preprocess": ((True, False), "ORT's quantizer runs on the model as the chain left it"),
              "activation_symmetric": (False, "ORT's default"), "weight_symmetric": (None, "ORT's default"),
              "op_types_to_exclude": (None, "list the op types to quantize (op_types) instead"),
              "nodes_to_quantize": (None, "list the nodes to keep in float (nodes_to_exclude) instead"),
              "extra_options": (None, "no free-form quantizer options"), "min_real_range": (None, "ORT's default"),
              "tensor_quant_overrides": (None, "no per-tensor overrides"),
              "prepare_qdq_config": ((True, False), "the quantizer's own configuration is used"),
              "calibration_providers": (None, "calibration runs on CPU")})
    return [step]


def int4(k: Keys, ctx: Context, default_block: int) -> list[Step]:
    """OnnxBlockWiseRtnQuantization (block 128 by default) and OnnxMatMul4Quantizer (32)."""
    cfg: dict[str, Any] = {}
    bits = k.take("bits")
    precision = k.take("precision")
    if precision is not None:
        bits = {"int4": 4, "uint4": 4, "int8": 8, "uint8": 8}.get(str(precision).lower(), bits)
    if bits is not None:
        cfg["bits"] = bits
    cfg["block_size"] = k.take("block_size", default_block)
    cfg["symmetric"] = bool(k.take("is_symmetric", True))
    level = k.take("accuracy_level")
    if level is not None:
        cfg["accuracy_level"] = _ACCURACY_LEVEL.get(str(level).lower(), level)
    exclude = k.take("nodes_to_exclude")
    if exclude:
        cfg["nodes_to_exclude"] = _list(exclude)
    algorithm = k.take("algorithm")
    if algorithm not in (None, "RTN", "rtn", "DEFAULT", "default"):
        k.report("algorithm", f"{shown(algorithm)} not mapped (int4 rounds to nearest)")
    k.finish({**_COMMON, "axis": (0, "blocks run along K"), "quant_axes": (None, "blocks run along K"),
              "nodes_to_include": (None, "list the nodes to keep in float (nodes_to_exclude) instead"),
              "op_types_to_quantize": (None, "MatMul only"), "weight_only_quant_configs": (None, "rounds to nearest")})
    return [Step("int4", cfg, comment=["before any fusion: int4 after ort-fusion leaves a fused Attention's "
                                       "Q/K/V weights in float (docs/quantization.md)"])]


def model_builder(k: Keys, ctx: Context) -> list[Step]:
    """ModelBuilder (onnxruntime-genai's builder, as genai-builder wraps it): a language model."""
    cfg: dict[str, Any] = {}
    precision = str(k.take("precision", "int4")).lower()
    if precision not in ("fp32", "int8", "int4"):
        k.report("precision", f"{shown(precision)} not mapped (fp32, int8 and int4 run on the CPU); wrote fp32")
        precision = "fp32"
    cfg["precision"] = precision
    block, level = k.take("int4_block_size"), k.take("int4_accuracy_level")
    symmetric = k.take("int4_is_symmetric")
    if precision == "int4":
        if block is not None:
            cfg["block_size"] = int(block)
        if level is not None:
            cfg["accuracy_level"] = _ACCURACY_LEVEL.get(str(level).lower(), level)
        if symmetric is not None:
            cfg["symmetric"] = bool(symmetric)
            if not symmetric:   # onnxruntime-genai 0.18 cannot load uint4 shared embeddings
                cfg["shared_embeddings"] = False
    else:
        for key, v in (("int4_block_size", block), ("int4_accuracy_level", level), ("int4_is_symmetric", symmetric)):
            if v is not None:
                k.report(key, f"only used with precision int4 (this pass builds {precision})")
    for key in ("exclude_embeds", "exclude_lm_head", "metadata_only", "enable_cuda_graph"):
        if k.take(key):
            k.report(key, "not mapped (genai-builder writes the whole model, for the CPU)")
    if k.take("search"):
        k.report("search", "not mapped (genai_config.json keeps the builder's search defaults; the evaluation "
                           "decodes greedily)")
    k.finish({**_COMMON})
    return [Step("genai-builder", cfg, comment=["onnxruntime-genai's model builder: an ONNX decoder with its "
                                                "key/value cache, genai_config.json and the tokenizer"])]


def float16(k: Keys, ctx: Context) -> list[Step]:
    cfg: dict[str, Any] = {"keep_io_types": bool(k.take("keep_io_types", False))}
    notes = {} if cfg["keep_io_types"] else {"keep_io_types": "Olive's default; true keeps callers feeding fp32"}
    for key in ("op_block_list", "node_block_list"):
        v = k.take(key)
        if v:
            cfg[key] = _list(v)
    k.finish({**_COMMON, "min_positive_val": (1e-7, "the converter's default"),
              "max_finite_val": (1e4, "the converter's default"),
              "use_symbolic_shape_infer": ((True, False), "the converter's shape inference"),
              "op_include_list": (None, "list the ops kept in float32 (op_block_list) instead"),
              "node_include_list": (None, "list the nodes kept in float32 (node_block_list) instead")})
    return [Step("fp16", cfg, notes)]


def session_tuning(k: Keys, ctx: Context) -> list[Step]:
    cfg: dict[str, Any] = {}
    for olive, ours in (("intra_thread_num_list", "intra_op_threads"), ("inter_thread_num_list", "inter_op_threads")):
        v = k.take(olive)
        if v is not None:
            cfg[ours] = [0 if x is None else x for x in _list(v)]
    modes = k.take("execution_mode_list")
    if modes is not None:
        mapped = [_EXEC_MODE.get(m) for m in _list(modes)]
        if None in mapped:
            k.report("execution_mode_list", f"{shown(modes)} not fully mapped (sequential 0, parallel 1)")
        cfg["execution_modes"] = [m for m in mapped if m] or ["sequential"]
    levels = k.take("opt_level_list")
    if levels is not None:
        mapped = [_GRAPH_LEVEL.get(x) for x in _list(levels)]
        if None in mapped:
            k.report("opt_level_list", f"{shown(levels)} not fully mapped (1 basic, 2 extended, 99 all)")
        cfg["graph_levels"] = [m for m in mapped if m] or ["all"]
    data = _dataset(k, ctx)
    settings = ctx.data_settings.get(data, {}) if data else {}
    if settings.get("batch_size"):
        cfg["batch"] = settings["batch_size"]
    if settings.get("max_length"):
        cfg["sequence"] = settings["max_length"]
    providers = [p for p in _list(k.take("providers_list", [CPU])) if p is not None]
    if any(p != CPU for p in providers):
        k.report("providers_list", f"{shown(providers)} not mapped (CPUExecutionProvider only)")
    k.finish({**_COMMON, "device": ("cpu", "CPU only"), "cpu_cores": (None, "list intra_op_threads instead"),
              "io_bind": (False, "CPU only"), "enable_cuda_graph": (False, "CPU only"),
              "provider_options_list": ({}, "CPU only"), "trt_fp16_enable": (False, "CPU only"),
              "extra_session_config": (None, "no free-form session options"),
              "force_evaluate_other_eps": (False, "CPU only"), "enable_profiling": (False, "no profiling")})
    return [Step("session-tune", cfg, comment=["timed on a fixed sentence at batch x sequence, not on the data config"]
                 if data else [])]


_TRAINING_ARGS = {"num_train_epochs": "epochs", "learning_rate": "learning_rate",
                  "per_device_train_batch_size": "batch_size", "seed": "seed", "weight_decay": "weight_decay",
                  "warmup_ratio": "warmup_ratio", "group_by_length": "group_by_length"}


def lora(k: Keys, ctx: Context) -> list[Step]:
    cfg: dict[str, Any] = {}
    data = _dataset(k, ctx, "train_data_config")
    if data is None:
        k.report("train_data_config", "needed: finetune trains on a recipe dataset ([data.NAME])")
    cfg["data"] = data
    settings = ctx.data_settings.get(data, {}) if data else {}
    if settings.get("max_length"):
        cfg["max_length"] = settings["max_length"]
    cfg["method"] = "lora"
    cfg["lora_r"] = k.take("r", k.take("lora_r", 64))
    alpha = k.take("alpha", k.take("lora_alpha", 16))
    cfg["lora_alpha"] = int(alpha) if float(alpha).is_integer() else alpha
    if float(alpha) != cfg["lora_alpha"]:
        k.report("alpha", f"{shown(alpha)} is not a whole number; lora_alpha takes one")
    cfg["lora_dropout"] = k.take("lora_dropout", 0.05)
    targets = k.take("target_modules")
    if targets:
        cfg["lora_target_modules"] = _list(targets)
    args = Keys(k.take("training_args") or {}, f"{k.where}.training_args", k.unmapped)
    for olive, ours in _TRAINING_ARGS.items():
        v = args.take(olive)
        if v is not None:
            cfg[ours] = v
    args.finish({"gradient_checkpointing": ((True, False), "the model is small enough to train without it"),
                 "report_to": ((None, "none", []), "modelmake prints its own progress"),
                 "output_dir": (None, "the result is the step's output"),
                 "max_steps": ((None, -1), "training runs whole epochs; finetune's max_samples limits the rows"),
                 "per_device_eval_batch_size": (None, "evaluation is [evaluate]'s"),
                 "evaluation_strategy": ((None, "no"), "evaluation is [evaluate]'s"),
                 "eval_strategy": ((None, "no"), "evaluation is [evaluate]'s")})
    eval_data = k.take("eval_data_config")
    if eval_data is not None:
        k.report("eval_data_config", "not mapped (training is not evaluated between epochs; [evaluate] measures the result)")
    dtype = k.take("torch_dtype")
    if dtype not in (None, "float32", "fp32"):
        k.report("torch_dtype", f"{shown(dtype)} not mapped (finetune trains in float32 on CPU)")
    k.finish({**_COMMON, "modules_to_save": (None, "the classifier head is trained in full"),
              "device_map": (("auto", "cpu"), "CPU only"),
              "ephemeral_gpu_offload": (False, "CPU only")})
    return [Step("finetune", cfg, comment=["LoRA: adapters trained, then merged into the weights (the export "
                                           "sees a plain model); the classifier head is trained in full"])]


# Olive pass type (lowercase, as Olive compares them) -> the mapping
PASSES: dict[str, Callable[[Keys, Context], list[Step]]] = {
    "onnxconversion": conversion,
    "orttransformersoptimization": transformers_optimization,
    "onnxquantization": lambda k, c: quantization(k, c, None),
    "onnxdynamicquantization": lambda k, c: quantization(k, c, "dynamic"),
    "onnxstaticquantization": lambda k, c: quantization(k, c, "static"),
    "onnxmatmul4quantizer": lambda k, c: int4(k, c, 32),
    "onnxblockwisertnquantization": lambda k, c: int4(k, c, 128),
    "onnxfloattofloat16": float16,
    "ortsessionparamstuning": session_tuning,
    "ortperftuning": session_tuning,   # its name before Olive 0.7
    "lora": lora,
    "modelbuilder": model_builder,
}

# the table docs/migrating-from-olive.md shows
PASS_NAMES = {"OnnxConversion": "onnx-export", "OrtTransformersOptimization": "ort-fusion (onnxscript-fusion after a dynamo export)",
              "OnnxQuantization": "static-int8 with a data_config, else dynamic-int8",
              "OnnxDynamicQuantization": "dynamic-int8", "OnnxStaticQuantization": "static-int8",
              "OnnxMatMul4Quantizer": "int4", "OnnxBlockWiseRtnQuantization": "int4",
              "OnnxFloatToFloat16": "fp16", "OrtSessionParamsTuning (OrtPerfTuning)": "session-tune",
              "LoRA": "finetune with method = \"lora\"", "ModelBuilder": "genai-builder (a text-generation model)"}
