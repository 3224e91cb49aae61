"""Command accuracy of a model on guided-mode examples: exact intent and slot F1, through the hub.

Two prompts: ``compact`` (the training prompt, :func:`concierge.support.guided.command.command_request`,
the model's raw JSON is scored) and ``guided`` (the production path:
:meth:`concierge.support.guided.GuidedAgent.model_command`, whose own prompt it uses and whose
slot checks drop values that do not fit the slot or do not appear in the message). Both decode
under the same JSON schema (llama.cpp grammar), so every answer parses unless generation stops
at ``max_tokens``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from concierge.models.engine import ChatHub
from concierge.support.guided.command import NO_INTENT, command_request

PROMPTS = ("compact", "guided")


def slot_pairs(slots: dict[str, Any] | None) -> set[tuple[str, str]]:
    """Comparable ``(slot, value)`` pairs: case and spacing folded, order ids as ``#W...``, lists split."""
    pairs: set[tuple[str, str]] = set()
    for name, value in (slots or {}).items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v in (None, "", []):
                continue
            text = " ".join(str(v).split()).lower().rstrip(".")
            if name == "order_id":
                text = "#" + text.lstrip("#")
            pairs.add((name, text))
    return pairs


def _parse(content: str) -> dict[str, Any] | None:
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        match = re.search(r"\{.*\}", content, re.S)
        try:
            data = json.loads(match.group(0)) if match else None
        except json.JSONDecodeError:
            data = None
    return data if isinstance(data, dict) else None


def command_accuracy(
    hub: ChatHub,
    alias: str,
    records: Sequence[dict[str, Any]],
    flows: Any,
    *,
    prompt: str = "compact",
    progress: bool | Callable[[int, int], None] = False,
    per_example: bool = False,
) -> dict[str, Any]:
    """Score ``alias`` on guided records: intent accuracy, slot precision/recall/F1 (micro), per turn.

    ``progress``: True shows a rich bar; a callable gets ``(done, total)`` after each record instead.
    With ``per_example`` the result also lists ``{"id", "intent", "tp", "fp", "fn"}`` per record, in
    order (``intent`` 1 when exact), so callers can resample examples (bootstrap intervals).
    """
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {', '.join(PROMPTS)}, not {prompt!r}")
    guided = None
    if prompt == "guided":
        from concierge.support.guided import GuidedAgent

        # model_command only needs the flows and the hub; no database is touched.
        guided = GuidedAgent(SimpleNamespace(name=flows.domain), hub, alias, flows=flows)
    totals = {"n": 0, "intent": 0, "tp": 0, "fp": 0, "fn": 0, "parsed": 0, "errors": 0}
    by_turn: dict[str, dict[str, int]] = {}
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    bar = None
    report = progress if callable(progress) else None
    if progress is True:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn(f"{alias} ({prompt})"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        bar.start()
        task = bar.add_task("eval", total=len(records))
    try:
        for record in records:
            gold = record["command"]
            predicted: dict[str, Any] | None
            if guided is not None:
                usage: dict[str, Any] = {
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "model_calls": 0,
                    "seconds": 0.0,
                }
                command = guided.model_command(list(record["transcript"]), usage)
                if usage.get("model_errors"):
                    totals["errors"] += 1
                predicted = (
                    None
                    if command is None
                    else {"intent": command.intent or NO_INTENT, "slots": command.slots}
                )
            else:
                try:
                    response = hub.chat(alias, command_request(flows, record["transcript"]))
                    content = ((response.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
                    predicted = _parse(content)
                except Exception:  # noqa: BLE001 - a failed call scores as a wrong answer
                    totals["errors"] += 1
                    predicted = None
            turn = by_turn.setdefault(
                record.get("turn", "all"), {"n": 0, "intent": 0, "tp": 0, "fp": 0, "fn": 0}
            )
            gold_pairs = slot_pairs(gold.get("slots"))
            got_pairs = slot_pairs(
                predicted.get("slots") if predicted and isinstance(predicted.get("slots"), dict) else {}
            )
            hit = bool(predicted) and predicted.get("intent") == gold["intent"]
            for bucket in (totals, turn):
                bucket["n"] += 1
                bucket["intent"] += int(hit)
                bucket["tp"] += len(gold_pairs & got_pairs)
                bucket["fp"] += len(got_pairs - gold_pairs)
                bucket["fn"] += len(gold_pairs - got_pairs)
            totals["parsed"] += int(predicted is not None)
            if per_example:
                rows.append(
                    {
                        "id": record.get("id"),
                        "intent": int(hit),
                        "tp": len(gold_pairs & got_pairs),
                        "fp": len(got_pairs - gold_pairs),
                        "fn": len(gold_pairs - got_pairs),
                    }
                )
            if bar is not None:
                bar.advance(task)
            if report is not None:
                report(totals["n"], len(records))
    finally:
        if bar is not None:
            bar.stop()
    result = {
        "alias": alias,
        "prompt": prompt,
        **_rates(totals),
        "json_valid": round(totals["parsed"] / max(1, totals["n"]), 4),
        "errors": totals["errors"],
        "by_turn": {name: _rates(bucket) for name, bucket in sorted(by_turn.items())},
        "seconds": round(time.perf_counter() - started, 1),
    }
    if per_example:
        result["per_example"] = rows
    return result


def _rates(bucket: dict[str, int]) -> dict[str, Any]:
    tp, fp, fn = bucket["tp"], bucket["fp"], bucket["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "examples": bucket["n"],
        "intent_accuracy": round(bucket["intent"] / max(1, bucket["n"]), 4),
        "slot_precision": round(precision, 4),
        "slot_recall": round(recall, 4),
        "slot_f1": round(f1, 4),
    }
