"""A tiny, randomly initialised Qwen2-architecture GGUF for tests and demos.

It has the real Qwen2.5-Instruct chat template (with tools) and a byte-level BPE tokenizer
whose special tokens match Qwen2.5's, so llama.cpp treats it exactly like a Qwen2.5 model:
it detects the Hermes tool-call format, enforces JSON schemas with grammars and splits
``<think>`` blocks into ``reasoning_content``. The weights are noise, so the *text* is
gibberish, but everything that does not depend on the text being sensible (request shapes,
grammars, tool-call parsing, streaming, context limits, LoRA plumbing) can be tested in
well under a second with a file of a few hundred kilobytes. Needs only ``gguf`` and numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Qwen2.5-Instruct's chat template, verbatim (tokenizer_config.json of Qwen/Qwen2.5-*-Instruct,
# Apache-2.0). llama.cpp recognises it and parses <tool_call>{...}</tool_call> into tool_calls.
QWEN25_CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# (text, is_control): control tokens as in Qwen2.5; the tool/think markers are user-defined
# tokens there (special=false in tokenizer_config), which llama.cpp still matches as one token.
SPECIAL_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<think>", False),
    ("</think>", False),
]

# A handful of merges so the BPE path is exercised (results become tokens too); GPT-2 'Ġ' = space.
_MERGES: list[tuple[str, str]] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("Ġt", "he"),
    ("o", "n"),
    ("Ġ", "s"),
    ("r", "e"),
    ("a", "t"),
    ('"', ":"),
    ("Ċ", "Ċ"),
]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map (the 256 base tokens)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def tiny_vocab() -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges of the tiny tokenizer."""
    import gguf

    tokens = [bytes_to_unicode()[b] for b in range(256)]
    types = [int(gguf.TokenType.NORMAL)] * 256
    for left, right in _MERGES:
        tokens.append(left + right)
        types.append(int(gguf.TokenType.NORMAL))
    for text, control in SPECIAL_TOKENS:
        tokens.append(text)
        types.append(int(gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED))
    merges = [f"{left} {right}" for left, right in _MERGES]
    return tokens, types, merges


def build_tiny_qwen2_gguf(
    path: Path,
    *,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ctx: int = 2048,
) -> Path:
    """Write a random Qwen2 GGUF (F32, tied embeddings) to ``path`` and return it."""
    import gguf

    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, types, merges = tiny_vocab()
    n_vocab = len(tokens)
    head_dim = n_embd // n_head
    kv_dim = head_dim * n_head_kv
    n_ff = 2 * n_embd
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("tiny-qwen2-random")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    ids = {text: tokens.index(text) for text, _ in SPECIAL_TOKENS}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids["<|endoftext|>"])
    writer.add_eos_token_id(ids["<|im_end|>"])
    writer.add_pad_token_id(ids["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(QWEN25_CHAT_TEMPLATE)

    # numpy shapes are (out, in); gguf stores them reversed, as llama.cpp expects.
    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    for i in range(n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"{blk}.attn_q.bias", weight(n_embd))
        writer.add_tensor(f"{blk}.attn_k.weight", weight(kv_dim, n_embd))
        writer.add_tensor(f"{blk}.attn_k.bias", weight(kv_dim))
        writer.add_tensor(f"{blk}.attn_v.weight", weight(kv_dim, n_embd))
        writer.add_tensor(f"{blk}.attn_v.bias", weight(kv_dim))
        writer.add_tensor(f"{blk}.attn_output.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def build_tiny_lora_gguf(
    path: Path,
    *,
    seed: int = 1,
    n_layer: int = 2,
    n_embd: int = 64,
    rank: int = 4,
    alpha: float = 8.0,
    scale: float = 1.0,
) -> Path:
    """Write a random GGUF LoRA adapter for :func:`build_tiny_qwen2_gguf`'s model (same sizes).

    It adapts ``attn_q`` and ``ffn_up`` of every layer, the layout llama.cpp's
    ``convert_lora_to_gguf.py`` produces from a PEFT adapter; ``scale`` multiplies ``lora_b``
    so tests can make the adapter's effect as large as they need.
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_ff = 2 * n_embd

    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_name("tiny-qwen2-random-lora")
    # llama.cpp computes W + (alpha / rank) * B @ A; ggml wants lora_a as (rank, in), lora_b as (out, rank).
    for i in range(n_layer):
        for name, n_out in (("attn_q", n_embd), ("ffn_up", n_ff)):
            a = (rng.standard_normal((rank, n_embd)) * 0.5).astype(np.float32)
            b = (rng.standard_normal((n_out, rank)) * 0.5 * scale).astype(np.float32)
            writer.add_tensor(f"blk.{i}.{name}.weight.lora_a", a)
            writer.add_tensor(f"blk.{i}.{name}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
