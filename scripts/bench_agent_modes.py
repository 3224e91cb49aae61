"""Support modes side by side on τ² retail dev tasks: constrained agent, rules-first and model-led guided.

For each mode it runs ``concierge.evals.support_eval.evaluate`` on the dev split of
``tests/data/support_splits.json`` (the first ``--n`` ids) and prints one markdown row: pass^1 and
the do-nothing floor, tool calls, invalid actions, cut loops, write precision, harmful-write rate,
seconds per conversation and the load average before and after.

    nice -n 10 env PYTHONPATH=src python scripts/bench_agent_modes.py --data-dir ../shared/data/tau2 \\
        --n 10 --agent-model support-agent --guided-model retail-inhouse

Only dev tasks: nothing here is held out, and nothing was tuned on held-out tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

SPLITS = Path(__file__).resolve().parent.parent / "tests" / "data" / "support_splits.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/tau2"))
    ap.add_argument("--n", type=int, default=10, help="the first N retail dev task ids")
    ap.add_argument("--user", default="scripted", choices=["scripted", "cautious"])
    ap.add_argument("--agent-model", default="support-agent")
    ap.add_argument("--guided-model", default="retail-inhouse")
    ap.add_argument("--modes", nargs="*", default=["agent-constrained", "guided-rules", "guided-model"])
    ap.add_argument("--max-turns", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from concierge import config
    from concierge.evals.support_eval import evaluate
    from concierge.models.hub import ModelHub
    from concierge.support.tasks import load_tasks

    ids = json.loads(SPLITS.read_text())["splits"]["retail"]["dev"][: args.n]
    tasks = [t for t in load_tasks(args.data_dir / "retail" / "tasks_train.json") if str(t.id) in set(ids)]
    hub = ModelHub.from_config(config.deployment_path())
    runs = {
        "agent-constrained": ("agent", args.agent_model, {"actions": "constrained"}),
        "guided-rules": ("guided", args.guided_model, {"lead": "rules"}),
        "guided-model": ("guided", args.guided_model, {"lead": "model"}),
    }
    print(f"τ² retail dev tasks {', '.join(ids)}; user {args.user}; {platform.node()}, {os.cpu_count()} CPUs; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| mode | model | pass^1 | floor | tool calls | invalid actions | loops cut | write precision "
          "| harmful | s/conversation | load before -> after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    out = {}
    try:
        for name in args.modes:
            mode, alias, options = runs[name]
            before = os.getloadavg()[0]
            result = evaluate(
                "retail", args.data_dir, tasks, mode, args.user, hub, alias, max_turns=args.max_turns, **options
            )
            after = os.getloadavg()[0]
            m = result["metrics"]
            precision = "n/a" if m["write_precision"] is None else f"{m['write_precision']:.2f}"
            print(
                f"| {name} | {alias} | {result['pass^1']:.3f} | {result['floor']:.3f} | {result['tool_calls']} "
                f"| {result['invalid_actions']} | {result['looped_replies']} | {precision} "
                f"({m['conversations_with_write']} wrote) | {m['harmful_write_rate']:.3f} "
                f"| {result['seconds_per_conversation']:.1f} | {before:.1f} -> {after:.1f} |",
                flush=True,
            )
            out[name] = {k: v for k, v in result.items() if k != "tasks"}
    finally:
        hub.close()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
