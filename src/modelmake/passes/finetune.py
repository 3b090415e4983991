"""HF -> HF: fine-tune a sequence classifier on a recipe dataset with a plain, seeded PyTorch loop.

Two methods: "full" trains every weight; "lora" trains low-rank adapters (peft) on chosen linear
layers plus the classifier head, then merges the adapters into the weights, so the output is a
plain Hugging Face model either way and later passes never see peft.
"""
from __future__ import annotations

from pathlib import Path

from modelmake.passes.base import HF, Field, Pass, PassConfig, StepContext
from modelmake.core.progress import bar

PASS = Pass(
    type="finetune",
    summary="Fine-tune a sequence classifier on a recipe dataset (AdamW, linear warmup/decay, seeded)",
    fields=(
        Field("data", "dataset", None, "name of the recipe dataset whose train split is used",
              required=True),
        Field("epochs", "int", 1, "passes over the training rows", min=1),
        Field("max_samples", "int", 0,
              "train on a seeded random subset of this many rows; 0 = all train rows", min=0),
        Field("learning_rate", "float", 5e-5, "peak AdamW learning rate, reached after warmup "
              "(LoRA needs far more than full fine-tuning: MiniLM did best at 2e-3..3e-3)", min=0.0),
        Field("batch_size", "int", 32, "rows per optimizer step", min=1),
        Field("max_length", "int", 64, "tokens per text, [CLS]/[SEP] included (longer texts are truncated)",
              min=2),
        Field("weight_decay", "float", 0.01,
              "AdamW weight decay, not applied to biases and LayerNorm weights", min=0.0),
        Field("warmup_ratio", "float", 0.1,
              "fraction of the steps over which the learning rate rises linearly from 0", min=0.0,
              max=1.0),
        Field("seed", "int", 0, "seed of subset choice, shuffling, dropout, new head and adapter weights"),
        Field("group_by_length", "bool", True,
              "put rows of similar token count in the same batch (shuffled in groups of 10 batches, "
              "then the batches shuffled), as Hugging Face's group_by_length: far less padding, "
              "same rows per epoch"),
        Field("method", "str", "full",
              "'full' trains every weight; 'lora' trains low-rank adapters on `lora_target_modules` "
              "and the classifier head in full, then merges the adapters into the weights (the "
              "output is a plain model either way)", choices=("full", "lora")),
        Field("lora_r", "int", 8, "rank of each adapter (trainable weights grow linearly with it)",
              min=1, when=("method", "lora")),
        Field("lora_alpha", "int", 16, "adapter scale numerator: an adapter's update is multiplied "
              "by lora_alpha / lora_r", min=1, when=("method", "lora")),
        Field("lora_dropout", "float", 0.0, "dropout on the adapters' input during training "
              "(the model's own dropout still applies)", min=0.0, max=0.9, when=("method", "lora")),
        Field("lora_target_modules", "list[str]", ["query", "key", "value", "dense"],
              "linear layers that get adapters, by name or dotted suffix of their module path; the "
              "default is every linear layer of a BERT encoder (`dense` covers attention output, "
              "feed-forward and pooler); ['query', 'value'] is the classic smaller set. Each name "
              "must match a layer of the model", when=("method", "lora")),
    ),
    input_format=HF,
    output_format=HF,
    version=2,   # 2: rows of similar length batched together (group_by_length), fused AdamW
    libraries=("torch", "transformers"),
    libraries_when=(("method", "lora", ("peft",)),),
    run="modelmake.passes.finetune:run",
    tasks=("text-classification",),  # it trains a classifier head on labels
    needs_labels=True,
)

# Files save_pretrained may add that carry absolute paths, times or training state; the output
# must depend only on the key's inputs.
_VOLATILE = ("training_args.bin", "trainer_state.json", "README.md")


def select_rows(rows: list[tuple[str, int]], max_samples: int, seed: int) -> list[tuple[str, int]]:
    """All rows, or a seeded random subset of `max_samples` of them (in their original order)."""
    import numpy as np

    if not max_samples or max_samples >= len(rows):
        return list(rows)
    keep = np.random.default_rng(seed).choice(len(rows), size=max_samples, replace=False)
    return [rows[i] for i in sorted(keep.tolist())]


def _label_maps(labels: dict[int, str]) -> tuple[dict[int, str], dict[str, int]]:
    ids = sorted(labels)
    if ids != list(range(len(ids))):
        raise ValueError(f"label ids must be 0..{len(ids) - 1} for a classifier head, got {ids}")
    return {i: labels[i] for i in ids}, {labels[i]: i for i in ids}


def _optimizer(model, lr: float, weight_decay: float):
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:  # frozen base weights under LoRA
            continue
        # Standard BERT practice: decaying biases and norm scales only hurts.
        (no_decay if p.ndim == 1 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # the fused CPU kernel: one pass over each tensor instead of a dozen (foreach), 5x faster per
    # step on MiniLM's 22.7 M weights, the same update up to float rounding, deterministic
    return torch.optim.AdamW(groups, lr=lr, fused=FUSED_ADAMW)


def _schedule(optimizer, warmup: int, total: int):
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# batches per length group. Hugging Face's LengthGroupedSampler uses 50; on bert-int8's 4,000 rows
# groups of 50 cost accuracy (mean 0.8092 over seeds 0-2 against 0.8116 shuffled), groups of 10
# did not (0.8120) and save nearly as much padding (docs/recipes.md, "Fine-tuning speed")
GROUP = 10
FUSED_ADAMW = True   # benchmarks/finetune.py turns it off to time fine-tuning as it was
JITTER = 4.0   # tokens of random noise added to each row's length before grouping, drawn per epoch


def epoch_batches(lengths: list[int], batch_size: int, generator, group_by_length: bool) -> list[list[int]]:
    """Row indices of every optimizer step of one epoch. The rows are shuffled; with
    group_by_length, each run of GROUP * batch_size shuffled rows is sorted by length plus up to
    JITTER tokens of noise and cut into batches, and the batches are shuffled: a batch holds rows
    of similar length (little padding), and both which rows share a batch and the order of the
    batches change from epoch to epoch, even when all rows fit in one group."""
    import torch

    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    noise = (torch.rand(len(lengths), generator=generator) * JITTER).tolist()
    span = GROUP * batch_size
    out: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i] + noise[i])
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffle = torch.randperm(len(out), generator=generator).tolist()
    return [out[i] for i in shuffle]


def _padded(encoded: dict[str, list[list[int]]], rows: list[int], pad_id: int) -> dict:
    """The rows' pre-tokenized inputs, padded on the right to the longest of them."""
    import torch

    width = max(len(encoded["input_ids"][i]) for i in rows)
    out = {}
    for name, values in encoded.items():
        fill = pad_id if name == "input_ids" else 0
        out[name] = torch.tensor([values[i] + [fill] * (width - len(values[i])) for i in rows], dtype=torch.long)
    return out


def train(model, tokenizer, rows: list[tuple[str, int]], cfg: PassConfig) -> list[float]:
    """Train `model` in place; returns the loss of every step."""
    import torch

    if tokenizer.padding_side != "right":
        raise ValueError(f"fine-tuning pads on the right; this tokenizer pads on the {tokenizer.padding_side}")
    # every text is tokenized once; a batch only pads what it holds
    from modelmake.core.textenc import as_columns

    # a pair of texts (premise, hypothesis) goes in as text and text_pair, as evaluation encodes it
    encoded = dict(tokenizer(*as_columns([t for t, _ in rows]), truncation=True, max_length=cfg.max_length))
    encoded = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    lengths = [len(ids) for ids in encoded["input_ids"]]
    targets = torch.tensor([y for _, y in rows], dtype=torch.long)
    order_rng = torch.Generator().manual_seed(cfg.seed)
    plan = [epoch_batches(lengths, cfg.batch_size, order_rng, cfg.group_by_length) for _ in range(cfg.epochs)]
    total = sum(len(epoch) for epoch in plan)
    optimizer = _optimizer(model, cfg.learning_rate, cfg.weight_decay)
    schedule = _schedule(optimizer, int(total * cfg.warmup_ratio), total)
    torch.manual_seed(cfg.seed)  # dropout masks
    losses: list[float] = []
    model.train()
    with bar("fine-tune", total) as progress:
        for epoch in plan:
            for batch in epoch:
                enc = _padded(encoded, batch, tokenizer.pad_token_id or 0)
                loss = model(**enc, labels=targets[batch]).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.detach().item())
                progress.advance(loss=f"{losses[-1]:.4f}")
    model.eval()
    return losses


def _head_modules(model) -> list[str]:
    """Top-level modules outside the encoder that hold weights: the classifier head, new per task."""
    return [name for name, child in model.named_children()
            if name != model.base_model_prefix and any(True for _ in child.parameters())]


def _check_targets(model, targets: list[str], head: list[str]) -> None:
    """Every target must match a linear layer of the encoder: peft itself only fails when none
    does, so a typo in one of two names would silently train fewer adapters."""
    import torch

    paths = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and n.split(".")[0] not in head]
    names = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in paths}))
    if not targets:
        raise ValueError(f"lora_target_modules: empty; name at least one linear layer (this model has: {names})")
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in paths):
            raise ValueError(f"lora_target_modules: {t!r} matches no linear layer of the model's encoder "
                             f"(its linear layers: {names}; the classifier head is always trained in full)")


def _with_adapters(model, cfg: PassConfig, log):
    """Wrap `model` in peft LoRA adapters: only adapters and the classifier head stay trainable."""
    import warnings

    from peft import LoraConfig, get_peft_model

    head = _head_modules(model)
    targets = cfg.lora_target_modules
    _check_targets(model, targets, head)
    total = sum(p.numel() for p in model.parameters())
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=list(targets), modules_to_save=head, bias="none")
    with warnings.catch_warnings():
        # transformers 5 deprecates an attribute peft still reads; nothing a recipe can act on
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = get_peft_model(model, config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    log(f"LoRA r={cfg.lora_r} alpha={cfg.lora_alpha} on {', '.join(targets)} + head "
        f"({', '.join(head)}): training {trainable:,} parameters, {100 * trainable / total:.2f}% "
        f"of the model's {total:,}")
    return wrapped


def _merged(wrapped):
    """The plain transformers model with the trained adapters added into its weights."""
    # safe_merge checks the merged weights for NaN before they replace the originals
    return wrapped.merge_and_unload(safe_merge=True)


def _remove_volatile(out_dir: Path) -> None:
    for name in _VOLATILE:
        (out_dir / name).unlink(missing_ok=True)


def run(ctx: StepContext) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the fine-tune bar is the one that matters
    # transformers reports the new classifier head as "MISSING" weights: expected when a head is
    # added for fine-tuning, and our own log line already says what is trained
    hf_logging.set_verbosity_error()
    cfg = ctx.config
    dataset = ctx.datasets[cfg.data]
    id2label, label2id = _label_maps(dataset.labels)
    rows = select_rows(dataset.train, cfg.max_samples, cfg.seed)
    ctx.log(f"training on {len(rows)} of {len(dataset.train)} train rows, {len(id2label)} labels, "
            f"{cfg.epochs} epoch(s)")
    torch.manual_seed(cfg.seed)  # a new or resized classifier head is drawn here
    model = AutoModelForSequenceClassification.from_pretrained(
        ctx.model_dir, num_labels=len(id2label), id2label=id2label, label2id=label2id,
        attn_implementation="eager", ignore_mismatched_sizes=True)
    tokenizer = AutoTokenizer.from_pretrained(ctx.model_dir)
    if cfg.method == "lora":
        model = _with_adapters(model, cfg, ctx.log)
    else:
        ctx.log(f"full fine-tuning: training all {sum(p.numel() for p in model.parameters()):,} parameters")
    losses = train(model, tokenizer, rows, cfg)
    if cfg.method == "lora":
        model = _merged(model)
    steps_per_epoch = len(losses) // cfg.epochs
    last_epoch = losses[-steps_per_epoch:]
    ctx.log(f"mean loss: first epoch {sum(losses[:steps_per_epoch]) / steps_per_epoch:.4f}, "
            f"last epoch {sum(last_epoch) / len(last_epoch):.4f}")
    model.save_pretrained(ctx.out_dir, safe_serialization=True)
    tokenizer.save_pretrained(ctx.out_dir)
    _remove_volatile(ctx.out_dir)
