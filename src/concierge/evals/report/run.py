"""Running the report: register the models, plan and run the evaluation steps (:mod:`.steps`),
relative improvement against the baseline, cost, and the JSON summary."""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from concierge.evals.report.config import (
    Progress,
    ReportConfig,
    ReportConfigError,
)
from concierge.evals.report.cost import Meter, cost_section, load_prices
from concierge.evals.report.statistics import paired_bootstrap
from concierge.evals.report.steps import (
    ReportRun,
    plan_commands,
    plan_recommender,
    plan_shop,
    plan_support,
)
from concierge.models.engine import Hub, ModelError


def _progress_for(progress: Progress | None, step: int, steps: int, label: str) -> Callable[[int, int], None]:
    def tick(done: int, total: int) -> None:
        if progress is not None:
            progress(step, steps, label, done, total)

    return tick


def _is_self_hosted(hub: Hub, name: str) -> bool:
    try:
        return hub.card(name).engine != "openai-upstream"
    except ModelError:  # not served by the hub: treat as self-hosted
        return True


def _choose_candidate(config: ReportConfig, hub: Hub) -> str | None:
    if config.candidate:
        return config.candidate
    others = [n for n in config.model_names if n != config.baseline_name()]
    for name in others:
        try:
            if hub.card(name).in_house:
                return name
        except ModelError:
            continue
    return others[0] if others else None


def _register_models(config: ReportConfig, hub: Hub) -> list[str]:
    """Register the config's endpoints on the hub and check every model name (before any evaluation)."""
    for endpoint in config.endpoints:
        if endpoint.api_key_env and not os.environ.get(endpoint.api_key_env):
            raise ReportConfigError(
                f"endpoint {endpoint.name!r}: environment variable {endpoint.api_key_env} (api_key_env) is not set"
            )
        hub.register(endpoint.name, endpoint.alias_spec())
    names = config.model_names
    for name in names:
        hub.card(name)  # unknown alias: ModelNotFoundError now, not after an hour of evaluation
    return names


def _execute(run: ReportRun, meter: Meter, progress: Progress | None) -> None:
    """Run the planned steps in order, metering model calls per section and timing each step."""
    steps = run.steps
    for i, step in enumerate(steps):
        meter.phase = step.section if step.section != "support" else step.label.split(" · ")[0]
        t0 = time.perf_counter()
        tick = _progress_for(progress, i, len(steps), step.label)
        tick(0, 1)
        step.run(tick)
        run.timings[step.label] = round(time.perf_counter() - t0, 2)


def _relative_improvements(
    run: ReportRun, baseline: str, candidate: str | None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Paired bootstrap of every model against the baseline: (the candidate's, every model's)."""
    config, names = run.config, run.names
    relative: dict[str, Any] = {}
    relative_all: dict[str, dict[str, Any]] = {}
    for metric, entry in run.per_task.items():
        by_model = entry["by_model"]
        if baseline not in by_model:
            continue
        for name in names:
            if name == baseline or name not in by_model:
                continue
            result = paired_bootstrap(
                by_model[baseline],
                by_model[name],
                entry["stat"],
                resamples=config.resamples,
                seed=config.seed,
            )
            result.update({"baseline": baseline, "candidate": name})
            relative_all.setdefault(name, {})[metric] = result
            if name == candidate:
                relative[metric] = result
    if run.recommender.get("relative_improvement"):
        relative["recommender.NDCG@10"] = run.recommender["relative_improvement"]
    return relative, relative_all


def run_report(config: ReportConfig, hub: Hub, progress: Progress | None = None) -> dict[str, Any]:
    """Run every configured evaluation on every model and return the JSON summary (package docstring).

    ``hub`` is a :class:`~concierge.models.hub.ModelHub` (endpoints in ``config.models`` are
    registered on it as aliases). ``progress(step, steps, label, done, total)`` follows the work.
    """
    config.validate()
    started = time.perf_counter()
    names = _register_models(config, hub)
    baseline = config.baseline_name()
    candidate = _choose_candidate(config, hub)
    meter = Meter()
    hub.add_observer(meter)
    try:
        prices = load_prices(config.cost.prices)
        run = ReportRun(config, hub, names)
        support_tasks = plan_support(run)
        plan_commands(run, support_tasks)
        plan_shop(run)
        plan_recommender(run)
        _execute(run, meter, progress)
    finally:
        hub.remove_observer(meter)

    relative, relative_all = _relative_improvements(run, baseline, candidate)
    s = config.support
    cost_mode = config.cost.mode or ("guided" if "guided" in s.modes else s.modes[0])
    cost, api, cost_notes = cost_section(
        config, hub, names, candidate, run.support_rows, cost_mode, prices, meter
    )
    summary: dict[str, Any] = {
        "models": run.metrics,
        "relative_improvement": relative,
        "cost": cost,
        "baseline": baseline,
        "candidate": candidate,
        "model_ci95": run.model_ci,
        "relative_improvement_all": relative_all,
        "api_prices": api,
        "recommender": run.recommender or {"skipped": run.skipped.get("recommender")},
        "skipped": run.skipped,
        "details": run.details,
        "per_task": run.per_task,
        "meta": _meta(
            config, hub, names, prices, run.timings, time.perf_counter() - started, cost_mode, meter
        ),
    }
    summary["meta"]["cost_notes"] = cost_notes
    return summary


def _meta(
    config: ReportConfig,
    hub: Hub,
    names: list[str],
    prices: dict[str, Any],
    timings: dict[str, float],
    seconds: float,
    cost_mode: str,
    meter: Meter,
) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        concierge_version: str | None = version("concierge")
    except PackageNotFoundError:
        concierge_version = None
    cards = {}
    for name in names:
        try:
            card = hub.card(name)
            cards[name] = {
                "engine": card.engine,
                "catalogue_id": card.catalogue_id,
                "source": card.source,
                "in_house": card.in_house,
            }
        except ModelError:
            cards[name] = {}
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "concierge_version": concierge_version,
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor() or None,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "models": cards,
        "config": config.to_dict(),
        "price_table": {"path": prices["path"], "as_of": prices["as_of"]},
        "cost_mode": cost_mode,
        "seconds": round(seconds, 1),
        "step_seconds": timings,
        "model_calls": meter.summary(),
        "metric_notes": {
            "support.<mode>.pass^k": "τ² scoring (final database equals the gold replay's and every "
            "communicate_info string said), scripted customer",
            "commands.intent_accuracy": "exact intent of the guided-mode command",
            "commands.slot_f1": "micro F1 of (slot, value) pairs",
            "shop.constraint_satisfaction": "share of written requests answered within their hard constraints",
        },
    }
