"""Proof for the in-house support models (issue 16, item 5): off-the-shelf against in-house, mode by mode.

Two steps, so the runs can go one per core and be resumed:

    # one evaluation: a mode, a model, a split of tasks the model was not trained on
    nice -n 10 env PYTHONPATH=src python scripts/proof_agent_modes.py run --split retail-heldout \\
        --mode agent-constrained --model retail-agent-inhouse --user cautious --out-dir docs/proof/agent-modes
    # the table: pairs "mode:baseline:candidate", paired bootstrap over the same tasks, cost per resolved
    nice -n 10 env PYTHONPATH=src python scripts/proof_agent_modes.py report --split retail-heldout \\
        --pair agent-constrained:support-agent:retail-agent-inhouse --out-dir docs/proof/agent-modes

Splits (``tests/data/support_splits.json``; none was used for training or for choices):
``retail-heldout`` (τ² retail train tasks hashed to held-out), ``retail-dev`` (for choices only) and
``v1-dev`` (τ-bench v1 retail dev tasks, held out as a whole; the in-house models train on v1 *train*).

Each run writes ``<split>__<mode>__<model>.json`` (the evaluator's summary with per-task rows, plus
the command, machine, load average before and after, and UTC times; the conversations go to
``transcripts/``, which is not committed). The report prints a markdown
table and writes ``<split>_report.json`` and ``<split>_report.png``:

* pass^1 of each model (scored components named: NL_ASSERTION is not scored without a judge) and
  the do-nothing floor of the same tasks;
* the in-house/off-the-shelf ratio of pass^1, with the 2.5-97.5 percentile interval of 2000 paired
  resamples of the tasks (``concierge.evals.report.statistics.paired_bootstrap``, seed 0);
* write precision and harmful-write rate (``concierge.evals.support_eval.run_metrics``);
* cost per resolved conversation: self-hosted = engine seconds of all conversations over the resolved
  ones x ``--hourly-usd`` / ``--utilisation`` / 3600; API = an API model's price (``api_prices.yaml``)
  for the in-house model's own token volume per conversation, divided by that API model's published
  resolution rate (``--api-rate``, default gpt-4o's τ-bench retail pass^1 0.604 from the
  sierra-research/tau-bench README), so a cheaper model that resolves less stays visible.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ROOT / "tests" / "data" / "support_splits.json"
MODES = {
    "agent-constrained": ("agent", {"actions": "constrained"}),
    "guided-rules": ("guided", {"lead": "rules"}),
    "guided-model": ("guided", {"lead": "model"}),
}


def split_tasks(split: str, data_dir: Path) -> list[Any]:
    """The tasks of a named split (no task in them was trained on or used for a choice, but dev)."""
    from concierge.support.tasks import load_tasks

    if split == "v1-dev":
        return load_tasks(data_dir / "tau_v1" / "retail" / "tasks_dev.json")
    domain, _, part = split.partition("-")
    ids = set(json.loads(SPLITS.read_text())["splits"][domain][part])
    return [t for t in load_tasks(data_dir / "tau2" / domain / "tasks_train.json") if str(t.id) in ids]


def run(args: argparse.Namespace) -> int:
    from concierge import config
    from concierge.evals.support_eval import evaluate
    from concierge.models.hub import ModelHub

    tasks = split_tasks(args.split, args.data_dir)[: args.n or None]
    mode, options = MODES[args.mode]
    out = args.out_dir / f"{args.split}__{args.mode}__{args.model}.json"
    hub = ModelHub.from_config(config.deployment_path())
    started, before = time.gmtime(), os.getloadavg()
    try:
        result = evaluate(
            "retail",
            args.data_dir / "tau2" / "retail",
            tasks,
            mode,
            args.user,
            hub,
            args.model,
            max_turns=args.max_turns,
            out=args.out_dir / "transcripts" / out.name,
            **options,
        )
    finally:
        hub.close()
    result.pop("transcripts", None)
    result["run"] = {
        "command": "python scripts/proof_agent_modes.py " + shlex.join(sys.argv[1:]),
        "split": args.split,
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs",
        "load_before": [round(x, 2) for x in before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "started": time.strftime("%Y-%m-%d %H:%M UTC", started),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    m = result["metrics"]
    print(
        f"{args.split} {args.mode} {args.model}: pass^1 {result['pass^1']:.3f} (floor {result['floor']:.3f}), "
        f"{m['conversations_with_write']} wrote, precision {m['write_precision']}, harmful "
        f"{m['harmful_write_rate']:.3f}; {result['seconds_per_conversation']:.1f} s/conversation -> {out}"
    )
    return 0


def _price(model: str) -> dict[str, Any]:
    import yaml

    table = yaml.safe_load(
        (ROOT / "src" / "concierge" / "evals" / "api_prices.yaml").read_text(encoding="utf-8")
    )
    for row in table["rows"]:
        if row["id"] == model:
            return row
    raise SystemExit(f"error: no price row {model!r} in api_prices.yaml")


def summarise(
    base: dict[str, Any],
    cand: dict[str, Any],
    *,
    hourly_usd: float,
    utilisation: float,
    api: dict[str, Any],
    api_rate: float,
) -> dict[str, Any]:
    """One pair's figures: both models' pass^1, the paired ratio, write safety, cost per resolved."""
    from concierge.evals.report.statistics import paired_bootstrap

    def per_task(result: dict[str, Any]) -> dict[str, float]:
        return {str(r["task_id"]): float(r["success"]) for r in result["tasks"]}

    b, c = per_task(base), per_task(cand)
    common = sorted(set(b) & set(c))
    ratio = paired_bootstrap([b[t] for t in common], [c[t] for t in common])

    def model_figures(result: dict[str, Any]) -> dict[str, Any]:
        rows = result["tasks"]
        resolved = sum(r["success"] for r in rows)
        seconds = sum(r["model_seconds"] for r in rows)
        m = result["metrics"]
        return {
            "model": result["model"],
            "pass^1": result["pass^1"],
            "pass_label": result["pass_labels"]["pass^1"],
            "resolved": int(resolved),
            "conversations": len(rows),
            "write_precision": m["write_precision"],
            "conversations_with_write": m["conversations_with_write"],
            "harmful_write_rate": m["harmful_write_rate"],
            "tool_calls": sum(r["tool_calls"] for r in rows),
            "refused_calls": sum(r["refused"] for r in rows),
            "tokens_per_conversation": result["tokens_per_conversation"],
            "prompt_tokens_per_conversation": sum(r["prompt_tokens"] for r in rows) / max(len(rows), 1),
            "completion_tokens_per_conversation": sum(r["completion_tokens"] for r in rows)
            / max(len(rows), 1),
            "usd_per_resolved_conversation": (
                None if not resolved else round(seconds / resolved * hourly_usd / utilisation / 3600, 6)
            ),
        }

    fb, fc = model_figures(base), model_figures(cand)
    api_per_conversation = (
        fc["prompt_tokens_per_conversation"] * api["input"]
        + fc["completion_tokens_per_conversation"] * api["output"]
    ) / 1e6
    return {
        "tasks_in_common": len(common),
        "floor": cand["floor"],
        "baseline": fb,
        "candidate": fc,
        "ratio": ratio,
        "api": {
            "model": api["id"],
            "price_as_of": api["as_of"],
            "published_resolution_rate": api_rate,
            "usd_per_conversation_at_candidate_tokens": round(api_per_conversation, 6),
            "usd_per_resolved_conversation": round(api_per_conversation / api_rate, 6),
        },
    }


def _ratio_text(ratio: dict[str, Any]) -> str:
    if ratio.get("value") is None:
        lo, hi = ratio["absolute"]["ci95"] or (None, None)
        return f"undefined (off-the-shelf resolves 0); difference {ratio['absolute']['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    lo, hi = ratio["ci95"]
    return f"{1 + ratio['value']:.2f}x [{1 + lo:.2f}, {1 + hi:.2f}]"


def report(args: argparse.Namespace) -> int:
    api = _price(args.api_model)
    rows, lines = [], []
    for pair in args.pair:
        mode, baseline, candidate = pair.split(":")
        files = [args.out_dir / f"{args.split}__{mode}__{m}.json" for m in (baseline, candidate)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise SystemExit(f"error: no run for {', '.join(missing)} (run the `run` step first)")
        base, cand = (json.loads(f.read_text(encoding="utf-8")) for f in files)
        s = summarise(
            base,
            cand,
            hourly_usd=args.hourly_usd,
            utilisation=args.utilisation,
            api=api,
            api_rate=args.api_rate,
        )
        s["mode"] = mode
        s["runs"] = [base.get("run"), cand.get("run")]
        rows.append(s)
    lines.append(
        f"Split {args.split}; pass^1 scores {rows[0]['candidate']['pass_label']}; "
        f"cost at ${args.hourly_usd}/h, {args.utilisation:.0%} utilisation; API {api['id']} "
        f"(prices as of {api['as_of']}) at its published resolution rate {args.api_rate}."
    )
    lines.append("")
    lines.append(
        "| mode | model | pass^1 | floor | in-house / off-the-shelf (95 % CI) | write precision "
        "| harmful-write rate | tool calls (refused by the guardrails) | US$ per resolved conversation |"
    )
    lines.append("|---|---|---:|---:|---|---|---:|---:|---:|")
    for s in rows:
        for role in ("baseline", "candidate"):
            f = s[role]
            precision = "n/a" if f["write_precision"] is None else f"{f['write_precision']:.2f}"
            cost = (
                "n/a (none resolved)"
                if f["usd_per_resolved_conversation"] is None
                else (f"{f['usd_per_resolved_conversation']:.5f}")
            )
            ratio = _ratio_text(s["ratio"]) if role == "candidate" else ""
            lines.append(
                f"| {s['mode']} | {f['model']} | {f['pass^1']:.3f} ({f['resolved']}/{f['conversations']}) "
                f"| {s['floor']:.3f} | {ratio} | {precision} ({f['conversations_with_write']} wrote) "
                f"| {f['harmful_write_rate']:.3f} | {f['tool_calls']} ({f['refused_calls']}) | {cost} |"
            )
        a = s["api"]
        lines.append(
            f"| {s['mode']} | API {a['model']} (published rate) | {a['published_resolution_rate']:.3f} | | | | | "
            f"| {a['usd_per_resolved_conversation']:.5f} |"
        )
    text = "\n".join(lines)
    print(text)
    out = {
        "split": args.split,
        "pairs": rows,
        "table": text,
        "made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (args.out_dir / f"{args.split}_report.json").write_text(
        json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    _plot(rows, args.out_dir / f"{args.split}_report.png", args.split)
    return 0


def _plot(rows: list[dict[str, Any]], path: Path, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from concierge.evals.report.statistics import bootstrap_ci

    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(rows), 3.2))
    for i, s in enumerate(rows):
        for j, role in enumerate(("baseline", "candidate")):
            f = s[role]
            value = f["pass^1"]
            successes = [1.0] * f["resolved"] + [0.0] * (f["conversations"] - f["resolved"])
            lo, hi = bootstrap_ci(successes) or (value, value)
            ax.bar(
                i + (j - 0.5) * 0.38,
                value,
                width=0.36,
                color=("#9aa5b1", "#2f6fb0")[j],
                yerr=[[value - lo], [hi - value]],
                capsize=3,
                label=("off the shelf", "in-house")[j] if i == 0 else None,
            )
        ax.hlines(
            s["floor"],
            i - 0.4,
            i + 0.4,
            colors="#c0392b",
            linestyles="dashed",
            label="do-nothing floor" if i == 0 else None,
        )
    ax.set_xticks(range(len(rows)), [s["mode"] for s in rows])
    ax.set_ylabel("pass^1 (95 % bootstrap CI)")
    ax.set_title(f"In-house vs off the shelf, {split}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--split", required=True, choices=["retail-heldout", "retail-dev", "v1-dev"])
    common.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "proof" / "agent-modes")
    common.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    r = sub.add_parser("run", parents=[common], help="one evaluation")
    r.add_argument("--mode", required=True, choices=sorted(MODES))
    r.add_argument("--model", required=True)
    r.add_argument("--user", default="cautious", choices=["scripted", "cautious"])
    r.add_argument("--n", type=int, default=None, help="the first N tasks of the split")
    r.add_argument("--max-turns", type=int, default=20)
    p = sub.add_parser("report", parents=[common], help="the table from runs already made")
    p.add_argument("--pair", action="append", required=True, help="mode:baseline:candidate (repeatable)")
    p.add_argument("--hourly-usd", type=float, default=0.10)
    p.add_argument("--utilisation", type=float, default=0.5)
    p.add_argument("--api-model", default="gpt-4o")
    p.add_argument("--api-rate", type=float, default=0.604)
    args = ap.parse_args(argv)
    if not (args.data_dir / "tau2" / "retail" / "db.json").is_file():
        ap.error(f"no τ² retail data under {args.data_dir} (set --data-dir to the shared data folder)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return run(args) if args.step == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
