"""A tiny, randomly initialised Qwen2 model in Hugging Face format, for vLLM tests.

vLLM serves Hugging Face folders (config.json + safetensors + tokenizer), not GGUF, so this is
the counterpart of :mod:`concierge.models.tiny_gguf` for the OpenAI-upstream path: a folder of
about 1 MB whose weights a real ``vllm serve`` loads offline in milliseconds. The tokenizer is a
byte-level BPE built with ``tokenizers`` (any text, JSON included, can be encoded and
generated), with Qwen2.5's special tokens and chat template, so ``/v1/chat/completions``,
guided JSON decoding and the Hermes tool parser behave as with a real Qwen2.5 model. The
weights are noise: the text is gibberish, everything else is real.

Needs torch and transformers (the ``train`` extra, or the vLLM venv); they are imported lazily.
"""

from __future__ import annotations

from pathlib import Path

from concierge.models.tiny_gguf import QWEN25_CHAT_TEMPLATE, SPECIAL_TOKENS

# A few sentences to learn merges from; enough for a few hundred tokens of vocabulary.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello! How can I help you with your order today?",
    'Return the answer as JSON: {"answer": "yes", "confidence": 0.9}',
    "Your package was shipped on Monday and should arrive within three days.",
    "I would like to cancel the reservation and get a refund, please.",
    "Search the catalogue for running shoes under 100 dollars in size 42.",
    # The fixed text of the chat template, so ChatML and tool prompts take few tokens.
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_order", "description": "Look up an order by its id.", '
    '"parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}',
    "</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    "\n</tool_call>",
]
BPE_VOCAB_SIZE = 512  # 256 byte tokens + learned merges; special tokens are appended after


def build_tiny_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """A byte-level BPE with Qwen2.5's special tokens and ChatML template, built offline."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    # Appended after the BPE vocabulary, as in Qwen2.5; control tokens are special (never split,
    # skipped when decoding), the tool/think markers are plain added tokens as there.
    tok.add_tokens([AddedToken(text, special=control, normalized=False) for text, control in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN25_CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_tiny_qwen2_hf(folder: Path, seed: int = 0) -> Path:
    """Write a random Qwen2ForCausalLM (fp32, 2 layers, head size 64) and its tokenizer to ``folder``.

    Head size 64: vLLM's CPU attention accepts only some head sizes (0.32: 32, 64, 80, ... 512),
    and 64 is the common one (Qwen2.5-0.5B uses 64).
    Returns ``folder``; loading it needs no network (``HF_HUB_OFFLINE=1`` is fine).
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
