"""Training data for in-house models: JSON lines with a schema, a content hash and a sidecar.

Every line is one example in OpenAI chat format (``messages``; the model learns the assistant
turns, and the last message is always the assistant's) plus fields of its kind:

* ``guided``: ``{"kind": "guided", "id", "task_id", "turn", "transcript": [{role, content}],
  "command": {"intent", "slots"}, "messages": [system, user, assistant]}`` — the guided-mode
  command the model must produce for the customer's latest message (``turn`` says which:
  opening, identify, order_id, reason, confirm, followup). ``messages`` is
  :func:`command_messages` of the transcript plus the command as JSON.
* ``agent``: ``{"kind": "agent", "id", "task_id", "messages": [...], "tools": [...]}`` — a
  tool-calling trajectory (assistant ``tool_calls`` and ``tool`` results) from a gold replay.
* ``shop``: ``{"kind": "shop", "id", "turns": [str], "query": {...}, "messages"}`` — a shopper's
  request and the structured query JSON (``concierge.shop.query.model_schema``) that answers it.
* ``distilled``: ``{"kind": "distilled", "id", "teacher", "messages": [...], "tools"?}`` — a
  prompt answered by a stronger model through the hub (:func:`distill`).

``<file>.meta.json`` beside the data holds ``{kind, count, sha256, source, counts, created}``
(:mod:`.records`). Each kind is built in its own module (:mod:`.guided_data`, :mod:`.agent_data`,
:mod:`.shop_data`, :mod:`.distill`); this module is the one entry point (:func:`build_dataset`) and
the names callers import.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from concierge.support.domains import load_domain
from concierge.support.guided import PROMPT_VERSION, load_flows
from concierge.support.tasks import load_tasks
from concierge.train.agent_data import agent_examples
from concierge.train.distill import distill
from concierge.train.guided_data import (
    COMMAND_SLOTS,
    IDENTIFY_INTENT,
    check_alignment,
    command_json,
    guided_examples,
)
from concierge.train.records import (
    SCHEMAS,
    DatasetError,
    DatasetInfo,
    canonical_line,
    content_hash,
    dataset_hash,
    meta_path,
    read_dataset,
    validate_record,
    write_dataset,
)
from concierge.train.shop_data import demo_shop_vocabulary, shop_examples

__all__ = [
    "COMMAND_SLOTS",
    "IDENTIFY_INTENT",
    "KINDS",
    "SCHEMAS",
    "DatasetError",
    "DatasetInfo",
    "agent_examples",
    "build_dataset",
    "canonical_line",
    "check_alignment",
    "command_json",
    "content_hash",
    "dataset_hash",
    "demo_shop_vocabulary",
    "distill",
    "guided_examples",
    "meta_path",
    "read_dataset",
    "shop_examples",
    "validate_record",
    "write_dataset",
]

# --------------------------------------------------------------------------- one entry point

KINDS = ("guided", "agent", "shop")


def build_dataset(
    kind: str,
    tasks_path: Path | str,
    out: Path | str,
    *,
    domain: str = "retail",
    data_dir: Path | str | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> DatasetInfo:
    """Build a ``guided`` or ``agent`` dataset from a task file and write it (with its sidecar)."""
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    tasks_path = Path(tasks_path)
    if not tasks_path.is_file():
        raise DatasetError(f"{tasks_path}: task file not found")
    if kind == "shop":
        import yaml

        requests = yaml.safe_load(tasks_path.read_text(encoding="utf-8")) or []
        if not isinstance(requests, list):
            raise DatasetError(f"{tasks_path}: expected a YAML list of shopper requests")
        records = shop_examples(requests[: limit or None], demo_shop_vocabulary())
        source = {
            "requests": str(tasks_path),
            "store": "demo (seed 7, 800 products)",
            "builder": "concierge.train.datasets:shop",
        }
        return write_dataset(out, records, source=source)
    tasks = load_tasks(tasks_path)[: limit or None]
    source = {
        "tasks": str(tasks_path),
        "tasks_sha256": hashlib.sha256(tasks_path.read_bytes()).hexdigest(),
        "domain": domain,
        "seed": seed,
        "builder": f"concierge.train.datasets:{kind}",
    }
    if kind == "guided":
        flows = load_flows(domain)
        records = guided_examples(tasks, flows, seed=seed)
        source["prompt"] = PROMPT_VERSION
    else:
        load_domain(domain, data_dir)  # fails here, clearly, if the domain needs a --data-dir
        records = agent_examples(tasks, lambda: load_domain(domain, data_dir), seed=seed)
    return write_dataset(out, records, source=source)
