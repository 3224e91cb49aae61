"""The evaluation steps of each report section (support, commands, shop, recommender).

Each ``plan_*`` function reads its section of the config, says in ``run.skipped`` why a section
cannot run, and otherwise appends one :class:`Step` per model (one in all for the recommender) to
``run.steps``; a step records its per-task values with :meth:`ReportRun.record_metric`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from concierge.evals.report.config import RecsysConfig, ReportConfig, SupportConfig
from concierge.evals.report.shop_checks import check_shop_answer, constraint_problems
from concierge.evals.report.statistics import bootstrap_ci, paired_bootstrap, pass_k_per_task, stat_value
from concierge.models.engine import Hub

Tick = Callable[[int, int], None]


@dataclass
class Step:
    section: str
    label: str
    run: Callable[[Tick], None]


@dataclass
class ReportRun:
    """One report run: the hub and its models, and what the evaluation steps fill in."""

    config: ReportConfig
    hub: Hub
    names: list[str]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    model_ci: dict[str, dict[str, list[float] | None]] = field(default_factory=dict)
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> {"ids", "stat", "by_model"}
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    support_rows: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    recommender: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metrics = {n: {} for n in self.names}
        self.model_ci = {n: {} for n in self.names}
        self.details = {n: {} for n in self.names}

    def record_metric(
        self, metric: str, name: str, ids: list[str], values: list[Any], stat: str = "mean"
    ) -> None:
        data = np.asarray(values, dtype=np.float64)
        self.metrics[name][metric] = round(stat_value(data, stat), 4) if len(data) else 0.0
        self.model_ci[name][metric] = bootstrap_ci(
            data, stat, resamples=self.config.resamples, seed=self.config.seed
        )
        entry = self.per_task.setdefault(metric, {"ids": ids, "stat": stat, "by_model": {}})
        entry["by_model"][name] = values


def resolve_support_inputs(cfg: SupportConfig) -> tuple[Path | None, Path]:
    """(data dir for load_domain, task file); ValueError with the reason when they are missing."""
    from concierge.support.domains import resolve_data_dir

    data_dir = resolve_data_dir(cfg.domain, cfg.data_dir) if cfg.data_dir else None
    tasks = cfg.tasks
    if tasks is None:
        if cfg.domain == "homestay" and data_dir is None:
            from concierge.support.domains.homestay import TASKS_PATH

            tasks = TASKS_PATH
        elif data_dir is not None and (data_dir / "tasks_train.json").is_file():
            tasks = data_dir / "tasks_train.json"
        else:
            raise ValueError(
                f"no task file for domain {cfg.domain!r}: set support.tasks (or support.data_dir)"
            )
    if not Path(tasks).is_file():
        raise ValueError(f"task file not found: {tasks}")
    return data_dir, Path(tasks)


def plan_support(run: ReportRun) -> list[Any]:
    """Support: one step per mode and model; returns the tasks (the commands section can build on them)."""
    config, hub, names = run.config, run.hub, run.names
    skipped, details, support_rows, steps = run.skipped, run.details, run.support_rows, run.steps
    record_metric = run.record_metric
    support_tasks: list[Any] = []
    s = config.support
    support_limit = s.limit or config.limit
    if s.enabled:
        try:
            from concierge.support.domains import load_domain
            from concierge.support.tasks import load_tasks

            data_dir, task_file = resolve_support_inputs(s)
            load_domain(s.domain, data_dir)  # a missing db.json says so here
            support_tasks = load_tasks(task_file)[: support_limit or None]
            if not support_tasks:
                raise ValueError(f"{task_file}: no tasks")
        except (ValueError, FileNotFoundError, OSError, KeyError) as exc:
            skipped["support"] = str(exc).splitlines()[0]
        else:
            from concierge.evals.support_eval import evaluate as evaluate_support

            def support_step(mode: str, name: str) -> Callable[[Tick], None]:
                def run_step(tick: Tick) -> None:
                    result = evaluate_support(
                        s.domain,
                        data_dir,
                        support_tasks,
                        mode,
                        "scripted",
                        hub,
                        name,
                        s.trials,
                        max_turns=s.max_turns,
                        max_steps=s.max_steps,
                        progress=tick,
                    )
                    rows = result.pop("tasks")
                    support_rows[(mode, name)] = rows
                    details[name][f"support.{mode}"] = {**result, "task_file": str(task_file)}
                    ids = [t.id for t in support_tasks]
                    wins = {i: 0 for i in ids}
                    for row in rows:
                        wins[row["task_id"]] += int(bool(row["success"]))
                    for k in range(1, s.trials + 1):
                        record_metric(
                            f"support.{mode}.pass^{k}",
                            name,
                            ids,
                            pass_k_per_task([wins[i] for i in ids], s.trials, k),
                        )

                return run_step

            for mode in s.modes:
                for name in names:
                    steps.append(Step("support", f"support {mode} · {name}", support_step(mode, name)))
    else:
        skipped["support"] = "switched off in the report config"
    return support_tasks


def plan_commands(run: ReportRun, support_tasks: list[Any]) -> None:
    """Guided-mode commands: one step per model, on an examples file or examples built from the support tasks."""
    config, hub, names = run.config, run.hub, run.names
    skipped, details, steps, record_metric = run.skipped, run.details, run.steps, run.record_metric
    s = config.support
    c = config.commands
    if c.enabled:
        try:
            from concierge.support.guided import load_flows

            command_domain = c.domain or s.domain
            flows = load_flows(command_domain)
            if c.examples is not None:
                from concierge.train.datasets import read_dataset

                records = [r for r in read_dataset(c.examples) if r.get("kind") == "guided"]
                records = records[: (c.limit or config.limit) or None]
                source = str(c.examples)
            else:
                if not support_tasks:
                    raise ValueError(
                        "no command examples: set commands.examples, or give support tasks to build them from"
                    )
                from concierge.train.datasets import guided_examples

                try:
                    records = guided_examples(support_tasks, flows, seed=c.seed)
                except (KeyError, ValueError) as exc:
                    raise ValueError(
                        f"cannot build command examples from the {command_domain} tasks ({exc!r}); "
                        "set commands.examples to a guided dataset"
                    ) from None
                records = records[: c.limit or None]
                source = f"built from the {len(support_tasks)} support tasks (guided_examples, seed {c.seed})"
            if not records:
                raise ValueError("no guided command examples")
        except (ValueError, OSError) as exc:  # DatasetError is a ValueError
            skipped["commands"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            from concierge.train.evaluate import command_accuracy

            def command_step(name: str) -> Callable[[Tick], None]:
                def run_step(tick: Tick) -> None:
                    result = command_accuracy(
                        hub, name, records, flows, prompt=c.prompt, progress=tick, per_example=True
                    )
                    rows = result.pop("per_example")
                    details[name]["commands"] = {**result, "examples_source": source}
                    ids = [str(r["id"]) for r in rows]
                    record_metric("commands.intent_accuracy", name, ids, [r["intent"] for r in rows])
                    record_metric(
                        "commands.slot_f1", name, ids, [[r["tp"], r["fp"], r["fn"]] for r in rows], "micro_f1"
                    )

                return run_step

            for name in names:
                steps.append(Step("commands", f"commands · {name}", command_step(name)))
    else:
        skipped["commands"] = "switched off in the report config"


def plan_shop(run: ReportRun) -> None:
    """Shop: one step per model over the written shopper requests, on a demo store built once."""
    config, hub, names = run.config, run.hub, run.names
    skipped, details, steps, record_metric = run.skipped, run.details, run.steps, run.record_metric
    sh = config.shop
    if sh.enabled:
        try:
            if sh.requests is None:
                raise ValueError("no shopper requests file: set shop.requests (shop_requests.yaml format)")
            requests = yaml.safe_load(Path(sh.requests).read_text(encoding="utf-8")) or []
            if not isinstance(requests, list) or not all(
                isinstance(r, dict) and r.get("turns") for r in requests
            ):
                raise ValueError(f"{sh.requests}: expected a list of {{id, turns, expect}}")
            requests = requests[: (sh.limit or config.limit) or None]
        except (ValueError, OSError, yaml.YAMLError) as exc:
            skipped["shop"] = str(exc).splitlines()[0]
        else:
            store: dict[str, Any] = {}

            def shop_store() -> dict[str, Any]:
                if not store:
                    from concierge.shop.catalog import Catalog
                    from concierge.shop.demo_store import generate_demo_store
                    from concierge.shop.personalize import Personalizer
                    from concierge.shop.search import HashingEmbedder, SearchIndex

                    products, interactions = generate_demo_store(
                        seed=sh.seed, n_products=sh.n_products, n_shoppers=sh.n_shoppers
                    )
                    catalog = Catalog.from_records(products, tenant="report", name="demo")
                    store["catalog"] = catalog
                    # Hashing embedder: retrieval is the same for every model; only the model's part differs.
                    store["index"] = SearchIndex.build(catalog, HashingEmbedder())
                    store["personalizer"] = Personalizer(catalog, interactions)
                    store["available"] = {
                        str(r.get("id")): sum(
                            1
                            for p in catalog
                            for v in p.variants
                            if not constraint_problems(p, v, r.get("expect") or {})
                        )
                        for r in requests
                    }
                return store

            def shop_step(name: str) -> Callable[[Tick], None]:
                def run_step(tick: Tick) -> None:
                    from concierge.shop.assistant import ShopAssistant

                    st = shop_store()
                    assistant = ShopAssistant(
                        hub,
                        st["catalog"],
                        st["index"],
                        st["personalizer"],
                        model_alias=name,
                        query_model=sh.query_model,
                    )
                    values: list[int] = []
                    failures: dict[str, list[str]] = {}
                    shown = violating = 0
                    turn_seconds: list[float] = []
                    for i, req in enumerate(requests):
                        rid = str(req.get("id", i))
                        expect = req.get("expect") or {}
                        messages: list[dict[str, str]] = []
                        state = None
                        try:
                            for text in req["turns"]:
                                messages.append({"role": "user", "content": str(text)})
                                t0 = time.perf_counter()
                                answer = assistant.answer(messages, state=state)
                                turn_seconds.append(time.perf_counter() - t0)
                                messages.append({"role": "assistant", "content": answer.message})
                                state = answer.state
                            problems = check_shop_answer(answer, st["catalog"], expect, st["available"][rid])
                            shown += len(answer.products)
                            violating += sum(
                                1
                                for card in answer.products
                                if (v := st["catalog"].get_variant(card.get("id"))) is None
                                or constraint_problems(st["catalog"].product(v.product_id), v, expect)
                            )
                        except Exception as exc:  # noqa: BLE001 - a failed turn fails its request only
                            problems = [f"error: {type(exc).__name__}: {exc}"]
                        values.append(int(not problems))
                        if problems:
                            failures[rid] = problems[:5]
                        tick(i + 1, len(requests))
                    details[name]["shop"] = {
                        "requests": len(requests),
                        "satisfied": sum(values),
                        "products_shown": shown,
                        "products_violating": violating,
                        "seconds_per_turn": round(float(np.mean(turn_seconds)), 3) if turn_seconds else None,
                        "failures": failures,
                        "store": f"demo store (seed {sh.seed}, {sh.n_products} products), hashing embedder",
                        "requests_file": str(sh.requests),
                    }
                    ids = [str(r.get("id", i)) for i, r in enumerate(requests)]
                    record_metric("shop.constraint_satisfaction", name, ids, values)

                return run_step

            for name in names:
                steps.append(Step("shop", f"shop · {name}", shop_step(name)))
    else:
        skipped["shop"] = "switched off in the report config"


def plan_recommender(run: ReportRun) -> None:
    """Recommender: one step that trains and ranks every recommender (not a chat model)."""
    config, skipped, steps = run.config, run.skipped, run.steps
    rc = config.recsys
    if rc.enabled:
        reason = _recsys_unavailable(rc)
        if reason:
            skipped["recommender"] = reason
        else:

            def recsys_step(tick: Tick) -> None:
                try:
                    result = _run_recsys(rc, config.resamples, config.seed, tick)
                except (ValueError, OSError) as exc:  # a malformed ratings file
                    skipped["recommender"] = str(exc).splitlines()[0]
                    return
                if "skipped" in result:
                    skipped["recommender"] = result["skipped"]
                    return
                run.recommender.update(result)

            steps.append(Step("recommender", "recommender (NDCG@10)", recsys_step))
    else:
        skipped["recommender"] = "switched off in the report config"


def _recsys_unavailable(r: RecsysConfig) -> str | None:
    if r.data is None:
        return "no ratings data: set recsys.data to a folder with a MovieLens-format ratings.csv"
    ratings = r.data / "ratings.csv" if r.data.is_dir() else r.data
    if not ratings.is_file():
        return f"no ratings.csv at {ratings}"
    return None


def _per_user_ndcg(model: Any, split: Any, stage: str, k: int = 10, batch: int = 256) -> np.ndarray:
    """NDCG@k of each evaluated user's target (same ranking rules as ``concierge.evals.recsys.evaluate``)."""
    from concierge.evals.recsys import rank_targets

    users = split.eval_users(stage)
    ranks = []
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        hists = split.histories(stage, chunk)
        scores = np.array(model.score(hists), dtype=np.float64, copy=True)
        scores[np.isnan(scores)] = -np.inf
        ranks.append(rank_targets(scores, hists, split.targets(stage, chunk)))
    rank = np.concatenate(ranks) if ranks else np.array([], dtype=np.float64)
    return np.where(rank <= k, 1.0 / np.log2(rank + 1.0), 0.0)


def _run_recsys(r: RecsysConfig, resamples: int, seed: int, tick: Tick) -> dict[str, Any]:
    from concierge.evals.recsys import leave_last_out, load_ratings_csv, split_summary
    from concierge.shop.recommend import make_model, torch_available

    notes: list[str] = []
    in_house = list(r.in_house)
    if "sasrec" in in_house and not torch_available():
        in_house.remove("sasrec")
        notes.append("SASRec left out: torch is not installed (pip install 'concierge[train]')")
    if not in_house:
        return {"skipped": "; ".join(notes) or "no in-house recommender to evaluate"}
    split = leave_last_out(load_ratings_csv(r.data))  # type: ignore[arg-type]
    names = [*r.off_the_shelf, *in_house]
    results: dict[str, Any] = {}
    test_ndcg: dict[str, np.ndarray] = {}
    valid_ndcg: dict[str, float] = {}
    for i, name in enumerate(names):
        model = make_model(name, epochs=r.sasrec_epochs, seed=r.seed)
        t0 = time.perf_counter()
        model.fit(split)
        fit_seconds = time.perf_counter() - t0
        valid_ndcg[name] = float(_per_user_ndcg(model, split, "valid").mean())
        test_ndcg[name] = _per_user_ndcg(model, split, "test")
        results[name] = {
            "NDCG@10": round(float(test_ndcg[name].mean()), 4),
            "ci95": bootstrap_ci(test_ndcg[name], resamples=resamples, seed=seed),
            "valid_NDCG@10": round(valid_ndcg[name], 4),
            "train_seconds": round(fit_seconds, 2),
            "role": "off-the-shelf" if name in r.off_the_shelf else "in-house",
        }
        tick(i + 1, len(names))
    best = max(in_house, key=lambda n: valid_ndcg[n])
    versus = {}
    for base in r.off_the_shelf:
        res = paired_bootstrap(test_ndcg[base], test_ndcg[best], resamples=resamples, seed=seed)
        res.update({"baseline": base, "candidate": best})
        versus[base] = res
    main = dict(versus[r.baseline])
    main["label"] = (
        f"recommender (not a chat model): in-house {best} vs off-the-shelf {r.baseline}, "
        "NDCG@10 on leave-last-out test targets"
    )
    return {
        "label": "Recommender NDCG@10: concierge's own recommenders vs off-the-shelf baselines. "
        "Not a property of the chat models above.",
        "data": str(r.data),
        "split": split_summary(split),
        "models": results,
        "candidate": best,
        "candidate_rule": "in-house recommender with the best validation NDCG@10",
        "baseline": r.baseline,
        "versus": versus,
        "relative_improvement": main,
        "notes": notes,
    }
