"""NL_ASSERTION reward, as ``tau2/evaluator/evaluator_nl_assertions.py``: a judge model grades each
assertion against the conversation; all met gives 1.0, else 0.0; no assertions gives 1.0.

The judge is any hub alias and gets τ²'s system prompt and user prompt verbatim (the conversation
as ``role: content`` lines, the assertions as a Python list). Without a judge the component is not
scored (``reward`` None). A judge reply that is not the expected JSON scores 0.0 with the error kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from concierge.evals.rewards.base import Component
from concierge.models.engine import ChatHub

SYSTEM_PROMPT = """
        TASK
        - You will be given a list of expected outcomes and a conversation that was collected during a test case run.
        - The conversation is between an agent and a customer.
        - Your job is to evaluate whether the agent satisfies each of the expected outcomes.
        - Grade each expected outcome individually.

        FORMAT
        - Your response should be a JSON object with the following fields:
        - `reasoning`: a short explanation for your classification
        - `metExpectation`: `true` if the agent satisfies the expected outcomes, `false` otherwise
        - `expectedOutcome`: repeat the expectation from the input that you are grading

        Example response structure:
        {
            "results": [
                {
                    "expectedOutcome": "<one of the expected outcomes from the input>",
                    "reasoning": "<reasoning trace>",
                    "metExpectation": <false or true>,
                }
            ]
        }
        """


def trajectory_text(turns: Sequence[dict[str, Any]]) -> str:
    """Concierge's turns as τ²'s ``role: content`` lines (tool calls and results as ``tool`` lines)."""
    lines = []
    for turn in turns:
        if turn.get("user") is not None:
            lines.append(f"user: {turn['user']}")
        for action in turn.get("actions") or []:
            result = action.get("result") if action.get("ok") else f"Error: {action.get('error')}"
            args = json.dumps(action.get("arguments") or {}, ensure_ascii=False)
            lines.append(f"tool: {action.get('tool')}({args}) -> {json.dumps(result, ensure_ascii=False)}")
        if turn.get("agent") is not None:
            lines.append(f"assistant: {turn['agent']}")
    return "\n".join(lines)


def _json_object(text: str) -> dict[str, Any]:
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the judge's reply")
    return json.loads(body[start : end + 1])


def nl_assertions_reward(
    nl_assertions: Sequence[str],
    turns: Sequence[dict[str, Any]],
    hub: ChatHub | None = None,
    judge: str | None = None,
) -> tuple[Component, dict[str, float]]:
    """The component and the judge's usage (``prompt_tokens``, ``completion_tokens``, ``model_calls``)."""
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "model_calls": 0}
    if not nl_assertions:
        return Component("NL_ASSERTION", 1.0, note="No nl_assertions to evaluate"), usage
    if hub is None or not judge:
        return Component("NL_ASSERTION", None, note="no judge model (--judge)"), usage
    user_prompt = f"""
        conversation:
        {trajectory_text(turns)}

        expectedOutcomes:
        {list(nl_assertions)}
        """
    request = {
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_prompt}],
        "temperature": 0.0,
        "max_tokens": 1024,
    }
    try:
        response = hub.chat(judge, request)
        got = response.get("usage") or {}
        usage.update(
            prompt_tokens=int(got.get("prompt_tokens") or 0),
            completion_tokens=int(got.get("completion_tokens") or 0),
            model_calls=1,
        )
        content = ((response.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        results = _json_object(content).get("results", [])
        checks = [
            {
                "nl_assertion": str(r["expectedOutcome"]),
                "met": r["metExpectation"] is True or str(r["metExpectation"]).lower() == "true",
                "justification": str(r.get("reasoning", "")),
            }
            for r in results
        ]
    except Exception as exc:  # noqa: BLE001 - a broken judge reply fails this component, not the run
        return Component("NL_ASSERTION", 0.0, note=f"judge error: {type(exc).__name__}: {exc}"), usage
    # τ²: reward 1 when every returned result is met (all([]) is True, as in τ²).
    return Component("NL_ASSERTION", 1.0 if all(c["met"] for c in checks) else 0.0, checks), usage
