"""Training data for in-house models: JSON lines with a schema, a content hash and a sidecar.

Every line is one example in OpenAI chat format (``messages``; the model learns the assistant
turns, and the last message is always the assistant's) plus fields of its kind:

* ``guided``: ``{"kind": "guided", "id", "task_id", "turn", "transcript": [{role, content}],
  "command": {"intent", "slots"}, "messages": [system, user, assistant]}`` — the guided-mode
  command the model must produce for the customer's latest message (``turn`` says which:
  opening, identify, order_id, reason, confirm, followup; ``sampled``: from a passed evaluation
  transcript, the command guided mode acted on). ``messages`` is
  :func:`command_messages` of the transcript plus the command as JSON.
* ``agent``: ``{"kind": "agent", "id", "task_id", "messages": [...], "tools": [...]}`` — a
  tool-calling trajectory (assistant ``tool_calls`` and ``tool`` results) from a gold replay.
* ``agent_actions``: ``{"kind": "agent_actions", "id", "task_id", "source": "gold" | "transcript",
  "format": "concierge-action-v1", "messages": [{role, content}]}`` — a whole conversation
  as the constrained agent (``actions: constrained``) reads it: ``messages[0]`` is its system prompt
  (policy and action rules), ``user`` turns are the customer's or ``TOOL RESULT <tool>: ...`` lines,
  and every ``assistant`` turn is one action, exactly ``{"action":"tool","name","arguments"}``,
  ``{"action":"message","content"}`` or ``{"action":"transfer","summary"}`` (compact JSON, keys in
  that order; :mod:`concierge.support.actions`). ``gold``: from a task's gold replay through the
  guardrails (:func:`constrained_examples`); ``transcript``: a passed conversation of the project's
  own evaluation runs (:func:`sampled_examples`, rejection sampling).
* ``agent_steps``: ``{"kind": "agent_steps", "id", "task_id", "source": "gold", "format":
  "concierge-agent-v1", "loss_on": "last", "messages"}`` — one step of a gold conversation in the
  compact agent prompt an in-house model is trained on and served with: ``messages[0]`` is
  :func:`~concierge.support.actions.compact_instructions` (tool lines, no policy), then the window
  of the conversation before the step (:func:`~concierge.support.actions.compact_history`), then
  the step as one action (the only turn learned). A few hundred tokens each
  (:func:`step_examples`).
* ``shop``: ``{"kind": "shop", "id", "turns": [str], "query": {...}, "messages"}`` — a shopper's
  request and the structured query JSON (``concierge.shop.query.model_schema``) that answers it.
* ``distilled``: ``{"kind": "distilled", "id", "teacher", "messages": [...], "tools"?}`` — a
  prompt answered by a stronger model through the hub (:func:`distill`).

``<file>.meta.json`` beside the data holds ``{kind, count, sha256, source, counts, created}``
(:mod:`.records`); reading a file whose canonical lines no longer hash to the sidecar's ``sha256``
fails with one line, as does any line that does not match its kind's schema. Each kind is built in its own module (:mod:`.guided_data`, :mod:`.agent_data`,
:mod:`.shop_data`, :mod:`.distill`); this module is the one entry point (:func:`build_dataset`) and
the names callers import.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from concierge.support.actions import COMPACT_AGENT_PROMPT
from concierge.support.domains import load_domain
from concierge.support.guided import PROMPT_VERSION, load_flows
from concierge.support.tasks import load_tasks
from concierge.train.agent_data import (
    agent_examples,
    constrained_examples,
    read_transcripts,
    sampled_examples,
    step_examples,
)
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
    "constrained_examples",
    "read_transcripts",
    "sampled_examples",
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
    "step_examples",
    "validate_record",
    "write_dataset",
]

# --------------------------------------------------------------------------- one entry point

KINDS = ("guided", "agent", "agent_actions", "agent_steps", "sampled", "shop")


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
    """Build a dataset of ``kind`` and write it (with its sidecar): ``guided``, ``agent`` or
    ``agent_actions`` from a task file; ``sampled`` from an evaluation's transcripts folder (given as
    ``tasks_path``); ``shop`` from shopper requests."""
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "sampled":
        transcripts = read_transcripts(tasks_path)[: limit or None]
        load_domain(domain, data_dir)
        records, tally = sampled_examples(
            transcripts, lambda: load_domain(domain, data_dir), load_flows(domain)
        )
        if not records:
            raise DatasetError(
                f"{tasks_path}: none of {len(transcripts)} conversations passed; nothing to keep"
            )
        source_info = {
            "transcripts": str(tasks_path),
            "domain": domain,
            "kept": tally,
            "prompt": PROMPT_VERSION,
            "builder": "concierge.train.datasets:sampled",
        }
        return write_dataset(out, records, source=source_info)
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
    elif kind == "agent_actions":
        load_domain(domain, data_dir)
        records, tally = constrained_examples(tasks, lambda: load_domain(domain, data_dir), seed=seed)
        source["tasks_used"] = tally
    elif kind == "agent_steps":
        load_domain(domain, data_dir)
        records, tally = step_examples(tasks, lambda: load_domain(domain, data_dir), seed=seed)
        source["tasks_used"] = tally
        source["prompt"] = COMPACT_AGENT_PROMPT
    else:
        load_domain(domain, data_dir)  # fails here, clearly, if the domain needs a --data-dir
        records = agent_examples(tasks, lambda: load_domain(domain, data_dir), seed=seed)
    return write_dataset(out, records, source=source)
