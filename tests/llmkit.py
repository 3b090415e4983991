"""Tiny random Llama language models shaped like SmolLM2, for fast tests of text-generation chains.

`tiny_llama_hf` writes a Hugging Face folder (safetensors + fast tokenizer) and `tiny_llama_gguf` the
same model as a quantized llama.cpp GGUF. Once torch and transformers are imported both take well under
a second, need no download and are deterministic for a given seed, so tests can compare bytes and digests.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2, as in SmolLM2
VOCAB_SIZE = 384  # 256 bytes + 3 specials + 125 merges; the corpus below is big enough to fill it
ARCH = dict(
    hidden_size=64,  # 64 and 128 are multiples of 32, the int4/Q4_0/Q8_0 block size
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    # 5x SmolLM2's 0.02, so attention is sharp enough that a rotary or q/k layout mistake shows in
    # the logits (at 0.02 attention is nearly uniform and hides it)
    initializer_range=0.1,
)
CHAT_TEMPLATE = (  # ChatML, as SmolLM2-Instruct (without its default system prompt)
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = """The quick brown fox jumps over the lazy dog. A small model learns to write short stories.
Once upon a time there was a little robot who liked to build things. Every morning it woke up,
looked at the sky and said hello to the sun. The robot had a friend, a curious cat named Tom.
Tom liked to read books about the sea, the mountains and the stars. They went on a long trip
together and found a garden full of red flowers, green trees and blue water. In the evening they
talked about what they had seen, and the robot wrote it all down in a notebook.
Models are trained on data, tested on new inputs and then shipped to users. A build tool runs each
step only when its inputs change: convert the weights, quantize them, export the graph, and check
that the answers are still right. Numbers like 1, 2, 3, 10, 42 and 2024 appear in text too.
"""


def _byte_level_bpe() -> Tokenizer:
    """A byte-level BPE trained on CORPUS (the `tokenizers` trainer is deterministic for a fixed input)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # all 256 bytes, so any text encodes
    tokenizer.train_from_iterator([CORPUS], trainer=trainer)
    assert tokenizer.get_vocab_size() == VOCAB_SIZE, tokenizer.get_vocab_size()
    return tokenizer


def _hf_tokenizer() -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    eot = SPECIAL_TOKENS[0]
    return PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(), bos_token=eot, eos_token=eot, unk_token=eot,
        additional_special_tokens=SPECIAL_TOKENS[1:], chat_template=CHAT_TEMPLATE,
        model_max_length=ARCH["max_position_embeddings"])


def _random_llama(seed: int) -> LlamaForCausalLM:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB_SIZE, bos_token_id=0, eos_token_id=0, **ARCH)
    with torch.random.fork_rng():  # leave the caller's global RNG as it was
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


def tiny_llama_hf(folder: Path, seed: int = 0) -> Path:
    """Write a random 2-layer Llama with its byte-level BPE tokenizer into `folder`; return `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _random_llama(seed).save_pretrained(folder)
    _hf_tokenizer().save_pretrained(folder)
    return folder


def _permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order for its rotary kernel (`LlamaModel.permute` in convert_hf_to_gguf.py)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama_gguf(path: Path, seed: int = 0, qtype: str = "Q8_0") -> Path:
    """Write the `tiny_llama_hf` model of the same seed as a GGUF file; return `path`.

    Every matrix is stored as `qtype` blocks ("Q8_0" or "Q4_0"; block size 32), so loading it runs a
    dequantizer; norms stay F32 as llama.cpp keeps them.
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = _random_llama(seed), _byte_level_bpe()
    head_dim = ARCH["hidden_size"] // ARCH["num_attention_heads"]

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(ARCH["max_position_embeddings"])
    writer.add_embedding_length(ARCH["hidden_size"])
    writer.add_block_count(ARCH["num_hidden_layers"])
    writer.add_feed_forward_length(ARCH["intermediate_size"])
    writer.add_head_count(ARCH["num_attention_heads"])
    writer.add_head_count_kv(ARCH["num_key_value_heads"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(ARCH["rope_theta"])
    writer.add_layer_norm_rms_eps(ARCH["rms_norm_eps"])
    writer.add_vocab_size(VOCAB_SIZE)
    writer.add_file_type(gguf.LlamaFileType[f"MOSTLY_{qtype}"])

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if token in SPECIAL_TOKENS else gguf.TokenType.NORMAL
                            for token, _ in vocab])
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([" ".join(pair) for pair in merges])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, ARCH["num_hidden_layers"])
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight":
            continue  # tied: llama.cpp writes no output.weight, and transformers re-ties when it is absent
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        data = tensor.float().numpy()
        if name.endswith(".attn_q.weight"):
            data = _permute_rotary(data, ARCH["num_attention_heads"])
        elif name.endswith(".attn_k.weight"):
            data = _permute_rotary(data, ARCH["num_key_value_heads"])
        if data.ndim == 1:
            writer.add_tensor(name, data)
        else:
            blocks = gguf.GGMLQuantizationType[qtype]
            writer.add_tensor(name, gguf.quants.quantize(data, blocks), raw_dtype=blocks)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def check_gguf_matches_hf(hf_folder: Path, gguf_path: Path, text: str = CORPUS.splitlines()[1]) -> float:
    """Load both with transformers; return the relative logits error |gguf - hf| / |hf| over all positions.

    Raises if the two tokenizers disagree on `text`. On the default text Q8_0 rounding alone gives about
    0.02 and Q4_0 about 0.3, while q/k rows left in llama.cpp's rotary order give 0.5 or more.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    gguf_kwargs = dict(pretrained_model_name_or_path=gguf_path.parent, gguf_file=gguf_path.name)
    ids = AutoTokenizer.from_pretrained(hf_folder)(text, return_tensors="pt").input_ids
    other = AutoTokenizer.from_pretrained(**gguf_kwargs)(text, return_tensors="pt").input_ids
    if not torch.equal(ids, other):
        raise AssertionError(f"tokenizers disagree on {text!r}: {ids.tolist()} vs {other.tolist()}")
    hf = AutoModelForCausalLM.from_pretrained(hf_folder).eval()
    from_gguf = AutoModelForCausalLM.from_pretrained(**gguf_kwargs).eval()
    with torch.no_grad():
        expected, actual = hf(ids).logits, from_gguf(ids).logits
    return float((actual - expected).norm() / expected.norm())
