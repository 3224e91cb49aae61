"""Trust benchmark of guided mode: pass^1 beside write precision, harmful writes and missed writes.

Runs guided mode (rules alone by default; ``--model ALIAS`` adds a model) over the τ² retail and
airline train tasks, split into a development half and a held-out half by
``tests/data/support_splits.json`` (made by ``--write-splits``: sha256 of "<domain>:<task id>",
first byte even = dev), over τ-bench v1 retail train (a development set) and dev (held-out as a
whole), with the
``scripted`` and ``cautious`` customers, and prints one markdown table. Besides the evaluator's
run metrics it shows the wrong-record rate: conversations whose agent changed a record the gold
leaves alone (a subset of the harmful writes).

    nice -n 10 env PYTHONPATH=src python scripts/bench_support_trust.py \
        --data-dir /work/shared/data/tau2 --v1-dir /work/shared/data/tau_v1/retail

Every design choice is made on the dev rows; held-out rows are reported, never tuned on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

SPLITS = Path(__file__).resolve().parent.parent / "tests" / "data" / "support_splits.json"
DOMAINS = ("retail", "airline")
USERS = ("scripted", "cautious")


def split_of(domain: str, task_id: str) -> str:
    """dev or heldout: a fixed hash of the task id, so the split never depends on results."""
    digest = hashlib.sha256(f"{domain}:{task_id}".encode()).digest()
    return "dev" if digest[0] % 2 == 0 else "heldout"


def wrong_record(row: dict) -> bool:
    """The agent changed a record (order, user, reservation, ...) that the gold leaves alone: the worst
    kind of harmful write ("changed the wrong order"), as opposed to doing part of the job or the right
    record with other values."""
    diff = row.get("db_diff") or {}
    agent, gold = diff.get("agent") or {}, diff.get("gold") or {}
    return any(set(ids) - set(gold.get(table) or []) for table, ids in agent.items())


def write_splits(data_dir: Path) -> dict:
    from concierge.support.tasks import load_tasks

    out: dict = {
        "how": 'sha256("<domain>:<task id>"), first byte even -> dev, odd -> heldout '
        "(scripts/bench_support_trust.py --write-splits); tau-bench v1 retail dev is held-out as a whole",
        "splits": {},
    }
    for domain in DOMAINS:
        tasks = load_tasks(data_dir / domain / "tasks_train.json")
        groups: dict[str, list[str]] = {"dev": [], "heldout": []}
        for t in tasks:
            groups[split_of(domain, str(t.id))].append(str(t.id))
        out["splits"][domain] = groups
    SPLITS.parent.mkdir(parents=True, exist_ok=True)
    SPLITS.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/tau2"))
    ap.add_argument("--v1-dir", type=Path, default=Path("/work/shared/data/tau_v1/retail"))
    ap.add_argument("--splits", nargs="*", default=["dev", "heldout", "v1train", "v1dev"])
    ap.add_argument("--domains", nargs="*", default=list(DOMAINS))
    ap.add_argument("--users", nargs="*", default=list(USERS))
    ap.add_argument("--model", default=None, help="hub alias for guided mode (default: rules alone)")
    ap.add_argument("--json", type=Path, default=None, help="write all summaries (without transcripts) here")
    ap.add_argument("--write-splits", action="store_true", help="(re)write tests/data/support_splits.json")
    args = ap.parse_args(argv)

    from concierge.evals.support_eval import evaluate
    from concierge.support.tasks import load_tasks

    if args.write_splits or not SPLITS.is_file():
        write_splits(args.data_dir)
    splits = json.loads(SPLITS.read_text(encoding="utf-8"))["splits"]
    hub = None
    if args.model:
        from concierge import config
        from concierge.models.hub import ModelHub

        hub = ModelHub.from_config(config.deployment_path())
    runs: list[tuple[str, str, list]] = []
    for split in args.splits:
        if split in ("v1dev", "v1train"):
            # τ-bench v1 retail: train is a development set (rules were chosen on it), dev is held out.
            name = "tasks_dev.json" if split == "v1dev" else "tasks_train.json"
            if "retail" in args.domains:
                runs.append((split.replace("v1", "v1-"), "retail", load_tasks(args.v1_dir / name)))
            continue
        for domain in args.domains:
            ids = set(splits[domain][split])
            tasks = [t for t in load_tasks(args.data_dir / domain / "tasks_train.json") if str(t.id) in ids]
            runs.append((split, domain, tasks))
    rows = []
    print(
        "| split | domain | customer | n | pass^1 (covers) | do-nothing floor | write precision [95 % Wilson] "
        "| harmful-write rate [95 % Wilson] | wrong-record rate | missed writes | handoffs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for split, domain, tasks in runs:
        for user in args.users:
            r = evaluate(
                domain, args.data_dir, tasks, "guided", user, hub, args.model, 1, use_model=bool(hub)
            )
            m = r["metrics"]
            wp = "n/a" if m["write_precision"] is None else f"{m['write_precision']:.3f}"
            if m.get("write_precision_ci95"):
                lo, hi = m["write_precision_ci95"]
                wp += f" [{lo:.2f}, {hi:.2f}]"
            hw = f"{m['harmful_write_rate']:.3f}"
            if m.get("harmful_write_rate_ci95"):
                lo, hi = m["harmful_write_rate_ci95"]
                hw += f" [{lo:.2f}, {hi:.2f}]"
            wrong = sum(1 for t in r["tasks"] if wrong_record(t)) / max(1, len(r["tasks"]))
            print(
                f"| {split} | {domain} | {user} | {r['n_tasks']} | {r['pass^1']:.3f} ({r['pass_labels']['pass^1']}) "
                f"| {r['floor']:.3f} | {wp} ({m['conversations_with_write']} wrote) | {hw} | {wrong:.3f} "
                f"| {m['missed_writes']} | {m['handoffs']} |",
                flush=True,
            )
            rows.append(
                {
                    "split": split,
                    "domain": domain,
                    "user": user,
                    **{k: v for k, v in r.items() if k != "tasks"},
                    "task_rows": [
                        {
                            k: t.get(k)
                            for k in ("task_id", "reward", "db_match", "db_changed", "writes", "db_diff")
                        }
                        for t in r["tasks"]
                    ],
                }
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    if hub is not None:
        hub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
