"""Distillation: prompts labelled by a stronger model through the hub."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from concierge.models.engine import ChatHub
from concierge.train.records import DatasetError


def distill(
    teacher_alias: str,
    hub: ChatHub,
    prompts: Iterable[dict[str, Any] | Sequence[dict[str, Any]]],
    *,
    defaults: dict[str, Any] | None = None,
    on_error: str = "skip",
) -> list[dict[str, Any]]:
    """Label prompts with a stronger model through the hub: one ``distilled`` record per answer.

    A prompt is a chat request dict (``messages``, optional ``tools``, ``response_format`` ...) or
    a bare message list; ``defaults`` fills request fields a prompt leaves out (e.g. temperature).
    A failed call or an empty answer is skipped (``on_error="raise"`` re-raises instead).
    """
    records: list[dict[str, Any]] = []
    for index, prompt in enumerate(prompts):
        request = dict(prompt) if isinstance(prompt, dict) else {"messages": list(prompt)}
        request = {"temperature": 0, **(defaults or {}), **request}
        try:
            response = hub.chat(teacher_alias, request)
        except Exception:
            if on_error == "raise":
                raise
            continue
        message = ((response.get("choices") or [{}])[0].get("message")) or {}
        answer: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            answer["tool_calls"] = [
                {"id": c.get("id") or f"call_{i}", "type": "function", "function": dict(c["function"])}
                for i, c in enumerate(message["tool_calls"])
            ]
        if not answer["content"] and not answer.get("tool_calls"):
            if on_error == "raise":
                raise DatasetError(f"teacher {teacher_alias!r} gave an empty answer to prompt {index}")
            continue
        record: dict[str, Any] = {
            "kind": "distilled",
            "id": f"distill:{index}",
            "teacher": teacher_alias,
            "messages": [*request["messages"], answer],
        }
        if request.get("tools"):
            record["tools"] = request["tools"]
        records.append(record)
    return records
