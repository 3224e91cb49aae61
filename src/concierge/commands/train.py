"""``concierge train``: build datasets, fine-tune a LoRA adapter, export it, register the alias."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="In-house models: datasets from your own tasks, LoRA fine-tuning, GGUF export, registration.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    print(message, file=sys.stderr)
    return typer.Exit(2)


def _known_errors() -> tuple[type[BaseException], ...]:
    from concierge.models.deployment import DeploymentError
    from concierge.models.engine import ModelError
    from concierge.train.datasets import DatasetError

    errors: list[type[BaseException]] = [DatasetError, DeploymentError, FileNotFoundError, ValueError]
    try:
        from concierge.train.export import ExportError
        from concierge.train.lora import TrainError
        from concierge.train.registry import RegistryError

        errors += [TrainError, ExportError, RegistryError]
    except ImportError:
        pass
    return (*errors, ModelError)


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc).splitlines()[0]


@app.command("dataset")
def dataset(
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="guided (commands), agent (tool-calling trajectories), agent_actions (whole conversations "
            "in the constrained action format), sampled (passed conversations of an evaluation: --tasks is "
            "its transcripts folder) or shop (query understanding)",
        ),
    ],
    tasks: Annotated[
        Path,
        typer.Option("--tasks", help="task file (τ² or τ-bench v1), or shopper requests (YAML) for shop"),
    ],
    out: Annotated[Path, typer.Option("--out", help="the JSON-lines file to write (+ .meta.json)")],
    domain: Annotated[
        str, typer.Option("--domain", help="support domain (its flows file names the intents)")
    ] = "retail",
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="folder with the domain's db.json (agent datasets)")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="phrasing choices of the scripted customer")] = 0,
    limit: Annotated[int | None, typer.Option("--limit", help="only the first N tasks")] = None,
) -> None:
    """Build a training dataset from a task file."""
    from concierge.train.datasets import build_dataset

    try:
        info = build_dataset(kind, tasks, out, domain=domain, data_dir=data_dir, seed=seed, limit=limit)
    except _known_errors() as exc:
        raise _fail(_message(exc)) from None
    counts = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(info.counts.items()))
    print(f"wrote {info.count} {info.kind} examples to {info.path} ({counts}); sha256 {info.sha256[:16]}")


@app.command("run")
def run(
    data: Annotated[Path, typer.Option("--data", help="training dataset (JSON lines from `train dataset`)")],
    out: Annotated[Path, typer.Option("--out", help="working folder: checkpoints, adapter, card")],
    base: Annotated[
        str, typer.Option("--base", help="embedded:smollm2, a .gguf file or a HF folder")
    ] = "embedded:smollm2",
    alias: Annotated[
        str | None,
        typer.Option("--alias", help="register the adapter under this alias ($CONCIERGE_HOME/models.json)"),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="optimiser steps")] = 300,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue from the latest checkpoint in --out")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="examples per step")] = 4,
    micro_batch: Annotated[int, typer.Option("--micro-batch", help="examples per forward pass")] = 1,
    lr: Annotated[float, typer.Option("--lr")] = 2e-4,
    warmup: Annotated[int, typer.Option("--warmup", help="warm-up steps")] = 10,
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank")] = 16,
    alpha: Annotated[int, typer.Option("--alpha", help="LoRA alpha")] = 32,
    mlp: Annotated[bool, typer.Option("--mlp", help="also adapt gate/up/down projections")] = False,
    max_length: Annotated[int, typer.Option("--max-length", help="longer examples are skipped")] = 512,
    save_every: Annotated[int, typer.Option("--save-every", help="checkpoint every N steps")] = 50,
    threads: Annotated[
        int, typer.Option("--threads", help="CPU threads (1 is fastest on a busy machine)")
    ] = 2,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps")] = "auto",
    dtype: Annotated[
        str, typer.Option("--dtype", help="adapter tensor type in the GGUF: f16 or f32")
    ] = "f16",
    eval_data: Annotated[
        Path | None,
        typer.Option("--eval-data", help="guided dataset to measure command accuracy on (base vs adapter)"),
    ] = None,
    eval_base: Annotated[str, typer.Option("--eval-base", help="alias serving the base model")] = "chat",
    check: Annotated[bool, typer.Option("--check/--no-check", help="compare llama.cpp with torch")] = True,
    publish: Annotated[
        bool, typer.Option("--publish", help="also commit the adapter into the packaged in-house registry")
    ] = False,
    description: Annotated[str | None, typer.Option("--description")] = None,
) -> None:
    """Fine-tune a LoRA adapter, export it to GGUF, write its model card and register the alias."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise _fail("training needs torch and peft: pip install 'concierge[train]'") from None
    from concierge.train import pipeline

    targets = ("q_proj", "k_proj", "v_proj", "o_proj") + (
        ("gate_proj", "up_proj", "down_proj") if mlp else ()
    )
    from concierge.train.lora import TrainConfig

    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        micro_batch=micro_batch,
        lr=lr,
        warmup_steps=warmup,
        rank=rank,
        alpha=alpha,
        target_modules=targets,
        max_length=max_length,
        seed=seed,
        save_every=save_every,
        threads=threads,
        device=device,
    )
    try:
        card = pipeline.train_and_export(
            data,
            base,
            out,
            config,
            resume=resume,
            alias=alias,
            dtype=dtype,
            eval_data=eval_data,
            eval_base=eval_base,
            check=check,
            publish=publish,
            description=description,
            log=lambda line: print(line, file=sys.stderr),
        )
    except _known_errors() as exc:
        raise _fail(_message(exc)) from None
    _summary(card)


def _summary(card: dict[str, Any]) -> None:
    print(
        f"trained {card['steps']} steps in {card['train_seconds']:.0f}s on {card['device']}: "
        f"loss {card['loss_curve'][0][1]:.3f} -> {card['final_loss']:.3f}; adapter {card['adapter']['path']} "
        f"({card['adapter']['bytes'] / 1e6:.1f} MB)"
    )
    for name, metrics in (card.get("metrics") or {}).items():
        if isinstance(metrics, dict) and "intent_accuracy" in metrics:
            print(f"  {name}: intent {metrics['intent_accuracy']:.3f}, slot F1 {metrics['slot_f1']:.3f}")
    for line in card.get("registered", []):
        print(f"  registered in {line}")


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Option("--data", help="guided dataset (e.g. built from held-out tasks)")],
    alias: Annotated[list[str], typer.Option("--alias", help="alias to score (repeatable)")],
    prompt: Annotated[
        str, typer.Option("--prompt", help="compact (training prompt) or guided (production)")
    ] = "compact",
    domain: Annotated[str, typer.Option("--domain")] = "retail",
    limit: Annotated[int | None, typer.Option("--limit", help="only the first N examples")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results here")] = None,
) -> None:
    """Command accuracy (exact intent, slot F1) of aliases on guided examples, through the hub."""
    from concierge.models.hub import ModelHub
    from concierge.support.guided import load_flows
    from concierge.train.datasets import read_dataset
    from concierge.train.evaluate import command_accuracy

    try:
        records = [r for r in read_dataset(data) if r["kind"] == "guided"][: limit or None]
        if not records:
            raise _fail(f"{data}: no guided examples")
        flows = load_flows(domain)
        results = []
        with ModelHub.from_config(None) as hub:
            for name in alias:
                hub.spec(name)
                results.append(command_accuracy(hub, name, records, flows, prompt=prompt, progress=True))
    except _known_errors() as exc:
        raise _fail(_message(exc)) from None
    for r in results:
        print(
            f"{r['alias']} ({r['prompt']}, {r['examples']} examples): intent {r['intent_accuracy']:.3f}, "
            f"slot P {r['slot_precision']:.3f} R {r['slot_recall']:.3f} F1 {r['slot_f1']:.3f}, {r['seconds']:.0f}s"
        )
    if json_out is not None:
        json_out.write_text(
            json.dumps({"data": str(data), "at": time.time(), "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    app()
