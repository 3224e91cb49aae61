"""Support evaluator: run the agent against simulated customers and score it as τ²-bench does.

A conversation succeeds when the final database equals the one obtained by replaying the
task's gold actions on a fresh database, and every ``communicate_info`` string appears in the
agent's messages. Each task runs ``trials`` times; pass^k is the mean over tasks of
C(successes, k) / C(trials, k). The do-nothing floor is the share of tasks whose gold database
equals the initial one (an agent that changes nothing passes their database check).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from math import comb
from pathlib import Path
from typing import Any

from concierge.support.tasks import Task, load_tasks
from concierge.support.users import make_user

Progress = Callable[[int, int], None]  # (done, total)


def pass_hat_k(successes: Sequence[int], trials: int, k: int) -> float:
    """τ²'s pass^k: mean over tasks of C(c, k) / C(n, k) (``successes`` per task, ``trials`` each)."""
    if not 1 <= k <= trials:
        raise ValueError(f"k must be in 1..{trials}")
    if not successes:
        return 0.0
    return sum(comb(c, k) / comb(trials, k) for c in successes) / len(successes)


def communicated(info: str, agent_messages: Sequence[str]) -> bool:
    """τ²'s check: the string appears in an agent message (case-insensitive, commas ignored)."""
    needle = info.lower()
    return any(needle in m.lower().replace(",", "") for m in agent_messages)


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
        for key in ("prompt_tokens", "completion_tokens", "model_calls"):
            usage[key] += int(result.usage.get(key, 0))
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
    return {
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
    hub: Any,
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
) -> dict[str, Any]:
    """Evaluate ``mode`` ("agent" | "guided") with a ``user`` simulator ("scripted" | "llm").

    ``user_alias`` is the model playing the customer for ``user="llm"`` (default: ``model_alias``).
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
    successes: list[int] = []
    floor_hits = 0
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
            agent = build_agent(domain, mode, hub, model_alias, max_steps=max_steps, use_model=use_model)
            simulator = make_user(user, task, hub=hub, alias=user_model, max_turns=max_turns)
            convo = run_conversation(agent, simulator, max_turns=max_turns)
            final_hash = domain.db_hash()
            db_ok = final_hash == gold["db_hash"]
            agent_messages = [t["agent"] for t in convo["turns"] if t.get("agent")]
            missing = [info for info in task.communicate_info if not communicated(info, agent_messages)]
            success = db_ok and not missing and convo["error"] is None
            wins += success
            agent_diff = domain.diff(start_db)
            row = {
                "task_id": task.id,
                "trial": trial,
                "success": success,
                "db_match": db_ok,
                "communicate_missing": missing,
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
            "floor": round(floor_hits / len(task_list), 4),
            "model": model_alias,
            "mode": mode,
            "user": user if user != "llm" else f"llm:{user_model}",
            "domain": domain_name,
            "n_tasks": len(task_list),
            "trials": trials,
            "db_match_rate": round(sum(r["db_match"] for r in rows) / n_rows, 4),
            "tokens_per_conversation": round(sum(r["tokens"] for r in rows) / n_rows, 1),
            "seconds_per_conversation": round(sum(r["seconds"] for r in rows) / n_rows, 3),
            "turns_per_conversation": round(sum(r["turns"] for r in rows) / n_rows, 2),
            "tasks": rows,
        }
    )
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
        summary["transcripts"] = str(transcripts)
    return summary
