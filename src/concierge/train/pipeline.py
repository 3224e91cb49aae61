"""Train -> export -> check -> measure -> model card -> register: what ``concierge train run`` does.

The model card (``<out>/model_card.json``) records everything needed to trust and reproduce the
adapter: base, data hash and counts, hyper-parameters and seed, train time and device, the loss
curve, the llama.cpp-vs-torch export check and command accuracy of base and adapter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from concierge.support.actions import COMPACT_AGENT_PROMPT
from concierge.support.guided.command import PROMPT_VERSION
from concierge.train.export import check_export, export_gguf_lora
from concierge.train.lora import TrainConfig, TrainError, train_lora
from concierge.train.records import content_hash, meta_path, read_dataset
from concierge.train.registry import file_sha256, register
from concierge.train.registry import publish as publish_alias

CHECK_PROMPTS = [
    [{"role": "user", "content": "What can you help me with?"}],
    [{"role": "user", "content": "I want to cancel my order #W1234567, I no longer need it."}],
]
CANDIDATE_ALIAS = "inhouse-candidate"


def loss_curve(losses: list[float], points: int = 30) -> list[list[float]]:
    """``[[step, mean loss of the window ending there], ...]``, at most ``points`` long."""
    if not losses:
        return []
    window = max(1, len(losses) // points)
    curve = []
    for end in range(window, len(losses) + 1, window):
        chunk = losses[end - window : end]
        curve.append([end, round(sum(chunk) / len(chunk), 4)])
    if curve[-1][0] != len(losses):
        chunk = losses[-window:]
        curve.append([len(losses), round(sum(chunk) / len(chunk), 4)])
    return curve


def measure(
    adapter_gguf: Path,
    card: dict[str, Any],
    eval_data: Path,
    *,
    base_alias: str = "chat",
    domain: str = "retail",
) -> dict[str, Any]:
    """Command accuracy of the base alias and of the adapter, with both prompts, through the hub."""
    from concierge.models.hub import ModelHub
    from concierge.support.guided import load_flows
    from concierge.train.evaluate import PROMPTS, command_accuracy
    from concierge.train.registry import alias_spec

    records = [r for r in read_dataset(eval_data) if r["kind"] == "guided"]
    if not records:
        raise TrainError(f"{eval_data}: no guided examples to measure on")
    flows = load_flows(domain)
    metrics: dict[str, Any] = {
        "eval_data": Path(eval_data).name,
        "eval_data_sha256": content_hash(records),
        "eval_examples": len(records),
    }
    with ModelHub.from_config(None) as hub:
        hub.spec(base_alias)
        hub.register(CANDIDATE_ALIAS, alias_spec(card, str(adapter_gguf.resolve())))
        for prompt in PROMPTS:
            for label, alias in (("base", base_alias), ("inhouse", CANDIDATE_ALIAS)):
                result = command_accuracy(hub, alias, records, flows, prompt=prompt, progress=True)
                result["alias"] = alias if label == "base" else card.get("alias") or CANDIDATE_ALIAS
                metrics[f"{label}:{prompt}"] = result
    return metrics


def train_and_export(
    data: Path,
    base: str,
    out: Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    alias: str | None = None,
    dtype: str = "f16",
    eval_data: Path | None = None,
    eval_base: str = "chat",
    check: bool = True,
    publish: bool = False,
    description: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole pipeline; returns the model card (also written to ``out/model_card.json``)."""
    data, out = Path(data), Path(out)
    if publish and not alias:
        raise TrainError("--publish needs --alias (the name the committed adapter is served under)")
    result = train_lora(data, base, out, config, resume=resume, progress=progress)
    log(f"trained in {result.seconds:.0f}s; exporting")
    adapter_gguf = out / "adapter.gguf"
    exported = export_gguf_lora(result.adapter_dir, adapter_gguf, dtype=dtype, name=alias)
    source = {}
    if meta_path(data).is_file():
        source = json.loads(meta_path(data).read_text(encoding="utf-8")).get("source", {})
    # An embedded base is found on every machine by name; a GGUF base by its path.
    base_info = {k: v for k, v in result.base.items() if not (k == "gguf" and result.base.get("embedded"))}
    if result.base.get("gguf"):
        base_info["gguf_file"] = Path(result.base["gguf"]).name
        base_info["gguf_sha256"] = file_sha256(Path(result.base["gguf"]))
    if result.base.get("embedded"):
        from concierge.models.deployment import EMBEDDED

        base_info["catalogue"] = EMBEDDED[result.base["embedded"]][1]
    card: dict[str, Any] = {
        "alias": alias,
        "description": description
        or f"LoRA fine-tune of {base_info.get('catalogue') or base} on {result.examples} examples ({data.name})",
        "base": base_info,
        "adapter": {
            "path": str(adapter_gguf),
            "bytes": exported.bytes,
            "sha256": file_sha256(adapter_gguf),
            "arch": exported.arch,
            "rank": exported.rank,
            "alpha": exported.alpha,
            "dtype": exported.dtype,
            "tensors": exported.tensors,
            "target_modules": list(config.target_modules),
        },
        "data_hash": result.data_hash,
        "data_count": result.examples,
        "data_skipped_too_long": result.skipped_too_long,
        "data_source": source,
        "prompt": source.get("prompt")
        if source.get("prompt") in (PROMPT_VERSION, COMPACT_AGENT_PROMPT)
        else None,
        "hyperparameters": config.fingerprint(),
        "seed": config.seed,
        "steps": result.steps,
        "resumed_from": result.start_step or None,
        "device": result.device,
        "threads": config.threads if result.device == "cpu" else None,
        "train_seconds": round(result.seconds, 1),
        "loss_curve": loss_curve(result.losses),
        "final_loss": round(result.final_loss or 0.0, 4),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": json.loads((out / "training.json").read_text(encoding="utf-8")).get("versions", {}),
        "metrics": {},
    }
    if check and result.base.get("gguf"):
        log("checking llama.cpp against torch")
        card["export_check"] = check_export(
            result.model, result.tokenizer, Path(result.base["gguf"]), adapter_gguf, CHECK_PROMPTS
        )
    result.model = result.tokenizer = None  # free the torch model before llama.cpp loads for evaluation
    if eval_data is not None:
        log(f"measuring command accuracy on {eval_data}")
        card["metrics"] = measure(adapter_gguf, card, Path(eval_data), base_alias=eval_base)
    (out / "model_card.json").write_text(
        json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    registered = []
    if alias:
        registered.append(str(register(alias, adapter_gguf, card)))
    if publish and alias:
        registered.append(str(publish_alias(alias, adapter_gguf, card)))
    card["registered"] = registered
    return card
