"""``concierge eval support``: replay a support domain's gold actions, or run the agent and score it as τ² does."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def _fail(message: str) -> typer.Exit:
    print(message, file=sys.stderr)
    return typer.Exit(2)


def _default_tasks(domain: str, data_dir: Path | None) -> Path | None:
    if domain == "homestay" and data_dir is None:
        from concierge.support.domains.homestay import TASKS_PATH

        return TASKS_PATH
    if data_dir is not None:
        from concierge.support.domains import resolve_data_dir

        folder = resolve_data_dir(domain, data_dir)
        if folder is not None and (folder / "tasks_train.json").is_file():
            return folder / "tasks_train.json"
    return None


def eval_support(
    domain: Annotated[str, typer.Option("--domain", help="retail, airline or homestay")] = "homestay",
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="folder with the domain's db.json (and policy.md)")
    ] = None,
    tasks: Annotated[
        Path | None,
        typer.Option("--tasks", help="task file (τ² or τ-bench v1 schema); default: the domain's"),
    ] = None,
    replay_gold: Annotated[
        bool, typer.Option("--replay-gold", help="replay each task's expected actions on a fresh database")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results here as JSON")] = None,
    gold: Annotated[
        Path | None,
        typer.Option("--gold", help="reference replay (JSON lines) to compare with, e.g. gold_train.jsonl"),
    ] = None,
    exclude_tool: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-tool",
            help="leave a tool out (repeatable); τ²'s shared retail gold was made without get_item_details",
        ),
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="agent (tool calling) or guided (flows); default agent")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="customer simulator: scripted (always yes), cautious (declines what its task does not "
            "name) or llm; default scripted",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="model alias (agent mode default: support-agent; guided: rules only if unset)"
        ),
    ] = None,
    trials: Annotated[int, typer.Option("--trials", help="trials per task (agent evaluation)")] = 1,
    limit: Annotated[int | None, typer.Option("--limit", help="evaluate only the first N tasks")] = None,
    user_model: Annotated[
        str | None,
        typer.Option("--user-model", help="alias playing the customer for --user llm (default: --model)"),
    ] = None,
    max_turns: Annotated[int, typer.Option("--max-turns", help="customer messages per conversation")] = 20,
    judge: Annotated[
        str | None,
        typer.Option("--judge", help="model alias grading τ²'s NL assertions (without it: not scored)"),
    ] = None,
    actions: Annotated[
        str | None,
        typer.Option(
            "--actions",
            help="agent mode: tools (OpenAI tools format) or constrained (one JSON action per step); "
            "default: the alias's actions option",
        ),
    ] = None,
    lead: Annotated[
        str | None,
        typer.Option(
            "--lead",
            help="guided mode: rules (rules decide, the model fills gaps) or model (the model decides, "
            "rules are the fallback); default: the alias's guided_lead option",
        ),
    ] = None,
    task_ids: Annotated[
        list[str] | None,
        typer.Option("--task-id", help="evaluate only these task ids (repeatable)"),
    ] = None,
) -> None:
    """Evaluate a support domain on tasks. With --replay-gold: check the gold actions' outcomes."""
    if not replay_gold:
        _evaluate_agent(
            domain,
            data_dir,
            tasks,
            mode,
            user,
            model,
            trials,
            json_out,
            limit,
            user_model,
            max_turns,
            judge,
            actions=actions,
            lead=lead,
            task_ids=task_ids,
        )
        return

    from concierge.support.domains import load_domain
    from concierge.support.replay import compare_with_gold, load_gold
    from concierge.support.replay import replay_gold as replay
    from concierge.support.tasks import load_tasks
    from concierge.support.toolkit import ToolError

    excluded = tuple(exclude_tool or ())
    try:
        load_domain(domain, data_dir, exclude_tools=excluded)  # fail early, and warm the db cache
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise _fail(f"error: {exc}") from None
    task_file = tasks or _default_tasks(domain, data_dir)
    if task_file is None:
        raise _fail(f"error: no task file: pass --tasks (domain {domain!r} has no default)")
    if not Path(task_file).is_file():
        raise _fail(f"error: task file not found: {task_file}")
    if gold is not None and not gold.is_file():
        raise _fail(f"error: reference file not found: {gold}")
    try:
        task_list = load_tasks(task_file)
        reference = load_gold(gold) if gold is not None else None
    except (ValueError, OSError, KeyError) as exc:
        raise _fail(f"error: {exc}") from None

    def factory():  # noqa: ANN202 - a fresh domain per task
        return load_domain(domain, data_dir, exclude_tools=excluded)

    console = Console(stderr=True)
    results: list[dict[str, Any]] = []
    mismatches: dict[str, list[str]] = {}
    missing: list[str] = []
    started = time.perf_counter()
    with Progress(
        TextColumn("replaying {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        bar = progress.add_task(f"{domain} gold", total=len(task_list))
        for task in task_list:
            try:
                result = replay(factory, task)
            except (ToolError, ValueError, KeyError) as exc:  # a broken initial_state
                message = exc.message if isinstance(exc, ToolError) else str(exc)
                raise _fail(f"error: task {task.id}: initial state could not be applied: {message}") from None
            results.append(result)
            if reference is not None:
                row = reference.get(task.id)
                if row is None:
                    missing.append(task.id)
                else:
                    problems = compare_with_gold(result, row)
                    if problems:
                        mismatches[task.id] = problems
            progress.advance(bar)
    elapsed = time.perf_counter() - started

    n_actions = sum(len(r["actions"]) for r in results)
    n_failed = sum(1 for r in results for a in r["actions"] if not a["ok"])
    n_changed = sum(1 for r in results if r["db_changed"])
    out = Console()
    out.print(
        f"{domain}: replayed {len(results)} tasks from {task_file} in {elapsed:.1f}s: "
        f"{n_actions} actions ({n_failed} failed as scripted), {n_changed} tasks change the database"
    )
    summary: dict[str, Any] = {
        "domain": domain,
        "tasks_file": str(task_file),
        "excluded_tools": list(excluded),
        "n_tasks": len(results),
        "n_actions": n_actions,
        "n_failed_actions": n_failed,
        "n_db_changed": n_changed,
        "seconds": round(elapsed, 3),
        "results": results,
    }
    if reference is not None:
        compared = len(results) - len(missing)
        matched = compared - len(mismatches)
        out.print(
            f"reference {gold}: {matched}/{compared} tasks match"
            + (f", {len(missing)} not in it" if missing else "")
        )
        for task_id, problems in list(mismatches.items())[:10]:
            out.print(
                f"  task {task_id}: {problems[0]}"
                + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
            )
        summary["gold"] = {
            "file": str(gold),
            "compared": compared,
            "matched": matched,
            "missing": missing,
            "mismatches": mismatches,
        }
    if json_out is not None:
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        except OSError as exc:
            raise _fail(f"error: cannot write {json_out}: {exc}") from None
        out.print(f"wrote {json_out}")
    if reference is not None and (mismatches or missing):
        raise typer.Exit(1)


def _evaluate_agent(
    domain: str,
    data_dir: Path | None,
    tasks: Path | None,
    mode: str | None,
    user: str | None,
    model: str | None,
    trials: int,
    json_out: Path | None,
    limit: int | None,
    user_model: str | None,
    max_turns: int,
    judge: str | None = None,
    *,
    actions: str | None = None,
    lead: str | None = None,
    task_ids: list[str] | None = None,
) -> None:
    """Run the support agent (agent or guided mode) against simulated customers; τ² scoring."""
    from concierge.evals.support_eval import evaluate
    from concierge.support.domains import load_domain
    from concierge.support.tasks import load_tasks

    mode = mode or "agent"
    user = user or "scripted"
    if mode not in ("agent", "guided"):
        raise _fail(f"error: --mode must be agent or guided, not {mode!r}")
    if user not in ("scripted", "cautious", "llm"):
        raise _fail(f"error: --user must be scripted, cautious or llm, not {user!r}")
    if actions is not None and actions not in ("tools", "constrained"):
        raise _fail(f"error: --actions must be tools or constrained, not {actions!r}")
    if lead is not None and lead not in ("rules", "model"):
        raise _fail(f"error: --lead must be rules or model, not {lead!r}")
    if actions is not None and mode != "agent":
        raise _fail("error: --actions applies to --mode agent")
    if lead is not None and mode != "guided":
        raise _fail("error: --lead applies to --mode guided")
    if lead == "model" and model is None:
        raise _fail("error: --lead model needs --model (the alias whose commands lead)")
    if trials < 1:
        raise _fail("error: --trials must be at least 1")
    if limit is not None and limit < 1:
        raise _fail("error: --limit must be at least 1")
    if max_turns < 1:
        raise _fail("error: --max-turns must be at least 1")
    try:
        load_domain(domain, data_dir)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise _fail(f"error: {exc}") from None
    task_file = tasks or _default_tasks(domain, data_dir)
    if task_file is None or not Path(task_file).is_file():
        raise _fail(f"error: task file not found: {task_file or '(none: pass --tasks)'}")
    try:
        task_list = load_tasks(task_file)
    except (ValueError, OSError, KeyError) as exc:
        raise _fail(f"error: {exc}") from None
    if task_ids:
        known = {str(t.id) for t in task_list}
        unknown = [i for i in task_ids if i not in known]
        if unknown:
            raise _fail(f"error: task id {unknown[0]!r} is not in {task_file}")
        wanted = set(task_ids)
        task_list = [t for t in task_list if str(t.id) in wanted]
    hub = None
    alias = model
    needs_model = mode == "agent" or user == "llm" or model is not None or judge is not None
    if needs_model:
        from concierge import config
        from concierge.models.engine import ModelError
        from concierge.models.hub import ModelHub

        alias = model or ("support-agent" if mode == "agent" or user == "llm" else None)
        try:
            hub = ModelHub.from_config(config.deployment_path())
            if alias:
                hub.card(alias)
            if judge:
                hub.card(judge)
            if user == "llm":
                hub.card(user_model or alias)
        except (ModelError, ValueError, OSError) as exc:
            raise _fail(f"error: {getattr(exc, 'message', exc)}") from None
    n = min(len(task_list), limit) if limit else len(task_list)
    console = Console(stderr=True)
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            bar = progress.add_task(f"{domain} {mode} / {user}", total=n * trials)
            result = evaluate(
                domain,
                data_dir,
                task_list,
                mode,
                user,
                hub,
                alias,
                trials,
                user_alias=user_model,
                max_turns=max_turns,
                limit=limit,
                out=json_out,
                progress=lambda done, total: progress.update(bar, completed=done),
                judge=judge,
                actions=actions,
                lead=lead,
            )
    except (ValueError, OSError) as exc:
        raise _fail(f"error: {exc}") from None
    finally:
        if hub is not None:
            hub.close()
    out = Console()
    ks = ", ".join(
        f"{result['pass_labels'][f'pass^{k}']}={result[f'pass^{k}']:.3f}" for k in range(1, trials + 1)
    )
    how = f" ({result['actions']} actions)" if result.get("actions") else ""
    how += f" ({result['lead']}-led)" if result.get("lead") else ""
    out.print(
        f"{domain} {mode} mode{how}, user {result['user']}, model {alias or '(rules only)'}: {ks} over "
        f"{result['n_tasks']} tasks x {trials}; do-nothing floor {result['floor']:.3f}; "
        f"{result['tokens_per_conversation']:.0f} tokens and {result['seconds_per_conversation']:.1f}s per conversation"
    )
    m = result["metrics"]
    precision = "n/a" if m["write_precision"] is None else f"{m['write_precision']:.3f}"
    out.print(
        f"writes: precision {precision} ({m['conversations_with_write']} conversations wrote), "
        f"harmful-write rate {m['harmful_write_rate']:.3f}, missed writes {m['missed_writes']}; "
        f"handoffs {m['handoffs']}; {m['questions_per_conversation']:.2f} questions per conversation"
    )
    out.print(
        f"tool calls {result['tool_calls']}, invalid actions {result['invalid_actions']}, "
        f"looped replies cut {result['looped_replies']}"
    )
    if json_out is not None:
        out.print(f"wrote {json_out} (transcripts in {result.get('transcripts')})")
