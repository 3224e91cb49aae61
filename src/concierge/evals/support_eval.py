"""Support evaluator: run the agent against simulated customers and score it as τ²-bench does.

Each conversation gets τ²'s reward (:mod:`concierge.evals.rewards`): the product of the
components its task's ``reward_basis`` lists: DB (final database equals the one from replaying
the gold actions), COMMUNICATE, ACTION, NL_ASSERTION (a judge model; not scored without one),
ENV_ASSERTION; 0 when the conversation ended on an error or the turn limit. A conversation
succeeds when its reward is 1. Each task runs ``trials`` times; pass^k is the mean over tasks of
C(successes, k) / C(trials, k), labelled with the components it covers. The do-nothing floor is
the share of tasks whose gold database equals the initial one (an agent that changes nothing
passes their database check). Beside them, :func:`run_metrics`: write precision, harmful-write
rate, missed writes, handoffs and questions per conversation.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from math import comb
from pathlib import Path
from typing import Any

from concierge.evals.rewards import (
    action_reward,
    combine,
    communicate_reward,
    communicated,
    db_reward,
    env_assertion_reward,
    nl_assertions_reward,
    pass_label,
)
from concierge.models.engine import ChatHub
from concierge.support.tasks import Task, load_tasks
from concierge.support.users import make_user

__all__ = ["communicated", "evaluate", "pass_hat_k", "run_conversation", "run_metrics", "score_conversation"]

Progress = Callable[[int, int], None]  # (done, total)


def pass_hat_k(successes: Sequence[int], trials: int, k: int) -> float:
    """τ²'s pass^k: mean over tasks of C(c, k) / C(n, k) (``successes`` per task, ``trials`` each)."""
    if not 1 <= k <= trials:
        raise ValueError(f"k must be in 1..{trials}")
    if not successes:
        return 0.0
    return sum(comb(c, k) / comb(trials, k) for c in successes) / len(successes)


def score_conversation(
    task: Task,
    convo: dict[str, Any],
    final_hash: str,
    gold_hash: str,
    *,
    hub: ChatHub | None = None,
    judge: str | None = None,
) -> dict[str, Any]:
    """τ²'s reward for one conversation (``convo`` as :func:`run_conversation` returns it)."""
    turns = convo.get("turns") or []
    agent_messages = [t["agent"] for t in turns if t.get("agent")]
    tool_calls = [a for t in turns for a in t.get("actions") or []]
    basis = set(task.reward_basis)
    components = [
        db_reward(final_hash, gold_hash, no_db_criteria=task.no_db_criteria),
        env_assertion_reward(task.env_assertions),
        action_reward(task.actions, tool_calls),
        communicate_reward(task.communicate_info, agent_messages),
    ]
    judge_usage = {"prompt_tokens": 0, "completion_tokens": 0, "model_calls": 0}
    if "NL_ASSERTION" in basis:  # τ² runs the judge only when the basis lists it
        nl, judge_usage = nl_assertions_reward(task.nl_assertions, turns, hub, judge)
        components.append(nl)
    premature = None
    if convo.get("error"):
        premature = f"error ({convo['error']})"
    elif convo.get("termination") == "max_turns":
        premature = "max_turns"
    combined = combine(task.reward_basis, components, premature=premature)
    return {
        **combined,
        "components": {c.kind: c.to_dict() for c in components},
        "communicate_missing": [c["info"] for c in components[3].checks if not c["met"]],
        "judge_usage": judge_usage,
    }


def _questions(turns: Sequence[dict[str, Any]]) -> int:
    return sum(1 for t in turns if (t.get("agent") or "").rstrip().endswith("?"))


def _writes(turns: Sequence[dict[str, Any]]) -> int:
    return sum(
        1
        for t in turns
        for a in t.get("actions") or []
        if a.get("ok") and a.get("kind") == "write" and not a.get("rolled_back")
    )


def wilson_interval(successes: int, n: int) -> list[float] | None:
    """95 % Wilson score interval of a proportion (None for n = 0): with a handful of conversations
    that wrote, 4 right of 5 is anywhere from 0.38 to 0.96."""
    if n == 0:
        return None
    from scipy.stats import binomtest  # noqa: PLC0415 - scipy is slow to import; only runs need it

    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def run_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-run trust metrics from rows with ``writes``, ``db_changed``, ``gold_changed``, ``db_match``,
    ``handoff`` and ``questions``:

    * write_precision: conversations with a (successful) write whose final database equals the gold
      one, over conversations with a write (None when none wrote), and its 95 % Wilson interval;
    * harmful_write_rate: conversations whose database changed and differs from the gold one, over all
      (with its Wilson interval);
    * missed_writes: conversations where the gold changes the database and the agent wrote nothing
      (and missed_write_rate over the conversations whose gold changes it);
    * handoffs (count and rate); questions_per_conversation: agent messages ending in '?'.
    """
    n = len(rows)
    wrote = [r for r in rows if r["writes"] > 0]
    right = sum(1 for r in wrote if r["db_match"])
    harmful = sum(1 for r in rows if r["db_changed"] and not r["db_match"])
    gold_writes = [r for r in rows if r["gold_changed"]]
    missed = sum(1 for r in gold_writes if r["writes"] == 0)
    handoffs = sum(1 for r in rows if r["handoff"])
    return {
        "write_precision": round(right / len(wrote), 4) if wrote else None,
        "write_precision_ci95": wilson_interval(right, len(wrote)),
        "conversations_with_write": len(wrote),
        "harmful_write_rate": round(harmful / n, 4) if n else 0.0,
        "harmful_write_rate_ci95": wilson_interval(harmful, n),
        "missed_writes": missed,
        "missed_write_rate": round(missed / len(gold_writes), 4) if gold_writes else None,
        "handoffs": handoffs,
        "handoff_rate": round(handoffs / n, 4) if n else 0.0,
        "questions_per_conversation": round(sum(r["questions"] for r in rows) / n, 2) if n else 0.0,
    }


def transcripts_dir_for(out: Path) -> Path:
    """``results/run.json`` → ``results/run_transcripts/``."""
    return out.with_name(out.stem + "_transcripts")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]


def run_conversation(agent: Any, user: Any, max_turns: int = 20) -> dict[str, Any]:
    """Alternate simulator and agent until the user stops, the agent hands off, or ``max_turns``."""
    state: dict[str, Any] = {}
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "model_calls": 0, "model_seconds": 0.0}
    turns: list[dict[str, Any]] = []
    started = time.perf_counter()
    text: str | None = user.start()
    status = "open"
    error = None
    while text is not None and len(turns) < max_turns:
        try:
            result = agent.respond(state, text)
        except Exception as exc:  # noqa: BLE001 - one failed conversation must not stop the evaluation
            error = f"{type(exc).__name__}: {exc}"
            turns.append({"user": text, "agent": None, "error": error})
            break
        for key in ("prompt_tokens", "completion_tokens", "model_calls", "invalid_actions", "looped_replies"):
            usage[key] = usage.get(key, 0) + int(result.usage.get(key, 0))
        usage["model_seconds"] += float(result.usage.get("seconds", 0.0))
        turns.append(
            {
                "user": text,
                "agent": result.message,
                "actions": result.actions,
                "status": result.status,
                **({"model_error": result.error} if getattr(result, "error", None) else {}),
            }
        )
        status = result.status
        if status != "open":
            break
        text = user.respond(result.message)
    if error:
        termination = "error"
    elif status == "handoff":
        termination = "handoff"
    elif text is not None and status == "open":
        termination = "max_turns"  # the customer had more to say: τ²'s max-steps termination
    else:
        termination = "stop"
    return {
        "termination": termination,
        "turns": turns,
        "state": state,
        "status": status,
        "error": error,
        "usage": usage,
        "seconds": time.perf_counter() - started,
    }


def evaluate(
    domain_name: str,
    data_dir: str | Path | None,
    tasks: Sequence[Task] | str | Path,
    mode: str,
    user: str,
    hub: ChatHub | None,
    model_alias: str | None,
    trials: int = 1,
    *,
    user_alias: str | None = None,
    max_turns: int = 20,
    max_steps: int = 12,
    limit: int | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
    use_model: bool = True,
    judge: str | None = None,
    actions: str | None = None,
    lead: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``mode`` ("agent" | "guided") with a ``user`` simulator ("scripted" | "cautious" | "llm").

    ``user_alias`` is the model playing the customer for ``user="llm"`` (default: ``model_alias``).
    ``judge`` is the hub alias grading NL assertions; without it NL_ASSERTION is not scored.
    ``actions`` (agent mode) and ``lead`` (guided mode) override the alias's deployment options.
    With ``out`` the summary is written there and one transcript per conversation goes to
    ``<out stem>_transcripts/``.
    """
    from concierge.support.domains import load_domain
    from concierge.support.replay import replay_gold
    from concierge.support.session import build_agent

    if trials < 1:
        raise ValueError("trials must be at least 1")
    task_list = load_tasks(tasks) if isinstance(tasks, str | Path) else list(tasks)
    if limit is not None:
        task_list = task_list[:limit]
    if not task_list:
        raise ValueError("no tasks to evaluate")

    def factory() -> Any:
        return load_domain(domain_name, data_dir)

    out_path = Path(out) if out else None
    transcripts = transcripts_dir_for(out_path) if out_path else None
    if transcripts:
        transcripts.mkdir(parents=True, exist_ok=True)
    user_model = user_alias or model_alias
    rows: list[dict[str, Any]] = []
    agent_settings: dict[str, Any] = {}
    successes: list[int] = []
    floor_hits = 0
    covered: set[str] = set()
    unscored: dict[str, int] = {}
    total = len(task_list) * trials
    done = 0
    for task in task_list:
        gold = replay_gold(factory, task)
        initial = factory()
        initial.apply_initial_state(task.initial_state)
        initial_hash = initial.db_hash()
        floor_hits += gold["db_hash"] == initial_hash
        wins = 0
        for trial in range(trials):
            domain = factory()
            domain.apply_initial_state(task.initial_state)
            start_db = domain.snapshot()
            agent = build_agent(
                domain, mode, hub, model_alias, max_steps=max_steps, use_model=use_model, actions=actions, lead=lead
            )
            if not agent_settings:
                agent_settings.update(
                    {"actions": getattr(agent, "actions", None), "lead": getattr(agent, "lead", None)}
                )
            simulator = make_user(user, task, hub=hub, alias=user_model, max_turns=max_turns)
            convo = run_conversation(agent, simulator, max_turns=max_turns)
            final_hash = domain.db_hash()
            db_ok = final_hash == gold["db_hash"]
            score = score_conversation(task, convo, final_hash, gold["db_hash"], hub=hub, judge=judge)
            success = score["success"]
            wins += success
            covered.update(score["covered"])
            for kind in score["not_scored"]:
                unscored[kind] = unscored.get(kind, 0) + 1
            agent_diff = domain.diff(start_db)
            row = {
                "task_id": task.id,
                "trial": trial,
                "success": success,
                "reward": score["reward"],
                "reward_basis": score["reward_basis"],
                "reward_breakdown": score["breakdown"],
                "not_scored": score["not_scored"],
                "reward_note": score["note"],
                "components": score["components"],
                "db_match": db_ok,
                "communicate_missing": score["communicate_missing"],
                "writes": _writes(convo["turns"]),
                "db_changed": bool(agent_diff),
                "gold_changed": gold["db_hash"] != initial_hash,
                "handoff": convo["status"] == "handoff",
                "questions": _questions(convo["turns"]),
                "termination": convo["termination"],
                "judge_tokens": score["judge_usage"]["prompt_tokens"]
                + score["judge_usage"]["completion_tokens"],
                "db_diff": {
                    "agent": {t: sorted(keys) for t, keys in agent_diff.items()},
                    "gold": {t: sorted(keys) for t, keys in gold["db_diff"].items()},
                },
                "turns": len(convo["turns"]),
                "status": convo["status"],
                "error": convo["error"],
                "tool_calls": sum(len(t.get("actions") or []) for t in convo["turns"]),
                "refused": sum(1 for t in convo["turns"] for a in t.get("actions") or [] if a.get("refused")),
                "tokens": convo["usage"]["prompt_tokens"] + convo["usage"]["completion_tokens"],
                "prompt_tokens": convo["usage"]["prompt_tokens"],
                "completion_tokens": convo["usage"]["completion_tokens"],
                "model_calls": convo["usage"]["model_calls"],
                "model_seconds": round(convo["usage"]["model_seconds"], 3),
                "invalid_actions": convo["usage"].get("invalid_actions", 0),
                "looped_replies": convo["usage"].get("looped_replies", 0),
                "user_tokens": int(
                    simulator.usage.get("prompt_tokens", 0) + simulator.usage.get("completion_tokens", 0)
                ),
                "seconds": round(convo["seconds"], 3),
            }
            rows.append(row)
            if transcripts:
                record = {
                    **row,
                    "mode": mode,
                    "user": simulator.name,
                    "model": model_alias,
                    "communicate_info": task.communicate_info,
                    "gold_actions": gold["actions"],
                    "gold_diff": gold["db_diff"],
                    "agent_diff": agent_diff,
                    "turns": convo["turns"],
                    "messages": convo["state"].get("messages", []),
                    "commands": convo["state"].get("commands", []),
                }
                path = transcripts / f"{_safe(task.id)}_trial{trial}.json"
                path.write_text(
                    json.dumps(record, indent=1, ensure_ascii=False, default=str), encoding="utf-8"
                )
            done += 1
            if progress:
                progress(done, total)
        successes.append(wins)
    n_rows = len(rows) or 1
    summary: dict[str, Any] = {
        f"pass^{k}": round(pass_hat_k(successes, trials, k), 4) for k in range(1, trials + 1)
    }
    summary.update(
        {
            "pass_labels": {
                f"pass^{k}": pass_label(k, covered, unscored, len(rows)) for k in range(1, trials + 1)
            },
            "scored_components": sorted(covered - set(unscored)),
            "not_scored_components": sorted(unscored),
            "not_scored_conversations": unscored,
            "judge": judge,
            "floor": round(floor_hits / len(task_list), 4),
            "model": model_alias,
            "mode": mode,
            **({"actions": agent_settings.get("actions")} if mode == "agent" else {}),
            **({"lead": agent_settings.get("lead")} if mode == "guided" else {}),
            "user": user if user != "llm" else f"llm:{user_model}",
            "domain": domain_name,
            "n_tasks": len(task_list),
            "trials": trials,
            "db_match_rate": round(sum(r["db_match"] for r in rows) / n_rows, 4),
            "tokens_per_conversation": round(sum(r["tokens"] for r in rows) / n_rows, 1),
            "seconds_per_conversation": round(sum(r["seconds"] for r in rows) / n_rows, 3),
            "turns_per_conversation": round(sum(r["turns"] for r in rows) / n_rows, 2),
            "tool_calls": sum(r["tool_calls"] for r in rows),
            "invalid_actions": sum(r["invalid_actions"] for r in rows),
            "looped_replies": sum(r["looped_replies"] for r in rows),
            "metrics": run_metrics(rows),
            "tasks": rows,
        }
    )
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
        summary["transcripts"] = str(transcripts)
    return summary
