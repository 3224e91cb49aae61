"""The built-in engines and chat formats, registered through the plugin door like any company's own.

Engines: a factory ``factory(spec, options)`` per engine name (what ``ModelCard.engine`` reports).
The three built-ins are reached through a deployment alias's own source fields (``gguf:`` /
``embedded: smollm2`` -> ``llama.cpp``, ``url:`` -> ``openai-upstream``, ``embedded: minilm`` ->
``onnx-embedding``); a plugin's engine through ``engine: <name>`` with an ``options:`` mapping.
Each factory imports its runtime when it runs, so registering stays cheap.

Chat formats: how each catalogue family writes reasoning blocks and tool calls, so callers can
say ``parse_message(text, "qwen3")``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from concierge.models.chat_format import ChatFormat
from concierge.models.deployment import BUILTIN_ENGINES
from concierge.plugins import Register, hookimpl

if TYPE_CHECKING:
    from concierge.models.deployment import AliasSpec
    from concierge.models.engine import Engine

__all__ = ["BUILTIN_ENGINES", "FAMILY_FORMATS"]

FAMILY_FORMATS: dict[str, ChatFormat] = {
    "qwen3": ChatFormat("think-tags", "hermes"),
    "qwen3.5": ChatFormat("think-tags", "qwen3-coder"),
    "qwen2.5": ChatFormat("none", "hermes"),
    "deepseek-r1": ChatFormat("think-prefilled", "deepseek"),
    "deepseek-r1-distill": ChatFormat("think-prefilled", "none"),
    "deepseek-v3": ChatFormat("think-tags", "deepseek"),
    "kimi-k2": ChatFormat("think-tags", "kimi"),
    "glm": ChatFormat("think-tags", "glm"),
    "minimax-m1": ChatFormat("think-tags", "minimax"),
    "minimax-m2": ChatFormat("think-prefilled", "minimax-m2"),
    "gpt-oss": ChatFormat("harmony", "harmony"),
    "llama3": ChatFormat("none", "llama3-json"),
    "gemma3": ChatFormat("none", "none"),
    "smollm2": ChatFormat("none", "hermes"),
}


@hookimpl
def register_chat_formats(register: Register) -> None:
    for family, chat_format in FAMILY_FORMATS.items():
        register(family, chat_format)


@hookimpl
def register_engines(register: Register) -> None:
    register("llama.cpp", llamacpp_engine)
    register("openai-upstream", upstream_engine)
    register("onnx-embedding", onnx_embedding_engine)


def upstream_engine(spec: AliasSpec, options: Mapping[str, Any]) -> Engine:
    """An OpenAI-compatible URL (vLLM, SGLang, a hosted API)."""
    from concierge.models.engine import EngineUnavailableError
    from concierge.models.upstream import OpenAIUpstreamEngine

    api_key = None
    if spec.api_key_env:
        api_key = os.environ.get(spec.api_key_env)
        if not api_key:
            raise EngineUnavailableError(
                f"alias {spec.alias!r}: environment variable {spec.api_key_env} (api_key_env) is not set"
            )
    entry = spec.catalogue_entry
    return OpenAIUpstreamEngine(
        str(spec.url),
        spec.served_name or (entry.hf_id if entry else spec.alias),
        api_key=api_key,
        timeout=spec.timeout or 60.0,
        context_length=spec.context_length or (entry.context_length if entry else None),
    )


def onnx_embedding_engine(spec: AliasSpec, options: Mapping[str, Any]) -> Engine:
    """all-MiniLM-L6-v2 (int8 ONNX) in-process: ``embedded: minilm``."""
    from concierge.models import locate
    from concierge.models.embeddings import OnnxEmbeddingEngine

    return OnnxEmbeddingEngine(locate.minilm_onnx(), locate.minilm_tokenizer(), threads=spec.threads)


def llamacpp_engine(spec: AliasSpec, options: Mapping[str, Any]) -> Engine:
    """llama.cpp in-process over a GGUF file (``gguf:``) or the embedded SmolLM2 (``embedded: smollm2``)."""
    from concierge.models import locate
    from concierge.models.deployment import DEFAULT_N_CTX, missing_gguf_message
    from concierge.models.engine import ModelFileMissingError

    path = spec.gguf if spec.source == "gguf" else locate.embedded_path(str(spec.embedded))
    assert path is not None
    if not path.is_file():
        raise ModelFileMissingError(missing_gguf_message(spec))
    for lora in spec.lora:
        if not lora.path.is_file():
            raise ModelFileMissingError(f"alias {spec.alias!r}: LoRA adapter {lora.path} not found")
    from concierge.models.llamacpp import LlamaCppEngine

    kwargs: dict[str, Any] = {
        "n_ctx": spec.n_ctx or DEFAULT_N_CTX,
        "embedding": spec.kind == "embeddings",
        "n_threads": spec.threads,
        "lora": [(lo.path, lo.scale) for lo in spec.lora] or None,
        "chat_template": spec.chat_template,
    }
    if spec.json_whitespace:
        kwargs["json_whitespace"] = True
    if spec.n_parallel:
        kwargs["n_parallel"] = spec.n_parallel
    if spec.reasoning_format:
        kwargs["reasoning_format"] = spec.reasoning_format
    elif (entry := spec.catalogue_entry) is not None and entry.chat_format.reasoning == "none":
        # A family that never writes reasoning blocks: no think-tag splitting, which would hold
        # back a stream's leading whitespace until it knows no "<think>" follows.
        kwargs["reasoning_format"] = "none"
    return LlamaCppEngine(path, **kwargs)
