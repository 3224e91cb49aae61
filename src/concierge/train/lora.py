"""LoRA fine-tuning of a base model on a concierge dataset (PEFT, a plain PyTorch loop).

The base is the default GGUF (``embedded:smollm2``), any GGUF file (transformers dequantises it)
or a Hugging Face folder. The loop is deliberately plain: micro-batches with padding, loss only
on the assistant turns (the prompt is rendered by the model's chat template exactly as
llama.cpp renders it at serving time), AdamW with warm-up and cosine decay, gradient clipping,
a fixed seed, and checkpoints every N steps that ``resume=True`` continues from bit for bit
(LoRA weights, optimiser, scheduler, RNG state; the data order is a function of seed and step).
The device is chosen automatically (CUDA, then MPS, then CPU with ``threads`` threads), so the
same call runs on a laptop or a GPU box.

Outputs under ``out``: ``adapter/`` (PEFT ``save_pretrained`` plus ``concierge_base.json``,
what :mod:`concierge.train.export` needs), ``checkpoints/step-NNNNNN/`` and ``training.json``
(loss curve, timings, hyper-parameters, data hash).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from concierge.train.records import DatasetError, content_hash, read_dataset

# HF model_type -> llama.cpp architecture name (what general.architecture of a GGUF says).
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3"}
# Decoder classes whose hidden states go straight into lm_head (no logit scaling or soft-capping),
# so the loss can skip the vocabulary projection for prompt tokens.
_PLAIN_HEADS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
CHECKPOINTS_KEPT = 2


class TrainError(RuntimeError):
    """A training problem the caller can fix (bad base, data or resume state): one line."""


@dataclass
class TrainConfig:
    """Hyper-parameters. ``steps`` counts optimiser steps of ``batch_size`` examples each."""

    steps: int = 300
    batch_size: int = 4
    micro_batch: int = 1  # examples per forward pass (padding wastes CPU time; raise it on a GPU)
    lr: float = 2e-4
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_length: int = 512
    seed: int = 0
    save_every: int = 50
    threads: int = 2
    device: str = "auto"
    loss_on: str = "all"  # "all" assistant turns, or only the "last" one

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed (not steps, not save cadence, not device)."""
        skip = {"steps", "save_every", "threads", "device"}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k not in skip}


@dataclass
class TrainResult:
    out: Path
    adapter_dir: Path
    steps: int
    start_step: int
    losses: list[float]
    seconds: float
    examples: int
    skipped_too_long: int
    data_hash: str
    device: str
    base: dict[str, Any] = field(default_factory=dict)
    config: TrainConfig | None = None
    model: Any = field(default=None, repr=False)  # the PEFT model, still in memory
    tokenizer: Any = field(default=None, repr=False)

    @property
    def final_loss(self) -> float | None:
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else None


# --------------------------------------------------------------------------- base model


def resolve_base(base: str) -> dict[str, Any]:
    """``embedded:smollm2`` | a ``.gguf`` file | a Hugging Face folder -> where and what it is."""
    if base.startswith("embedded:"):
        name = base.split(":", 1)[1]
        if name != "smollm2":
            raise TrainError(f"unknown embedded base {name!r}; the embedded chat model is smollm2")
        from concierge.models.locate import smollm2_gguf

        path = smollm2_gguf()
        return {"spec": base, "gguf": path, "folder": path.parent, "embedded": name}
    path = Path(base).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return {"spec": str(path), "gguf": path, "folder": path.parent, "embedded": None}
    if path.is_dir() and (path / "config.json").is_file():
        return {"spec": str(path), "gguf": None, "folder": path, "embedded": None}
    raise TrainError(
        f"base {base!r} is neither embedded:smollm2, a .gguf file nor a Hugging Face model folder"
    )


def gguf_hparams(path: Path) -> dict[str, Any]:
    """Architecture, head counts and layer count from a GGUF header."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def value(key: str) -> Any:
        fld = reader.fields.get(key)
        return None if fld is None else fld.contents()

    arch = value("general.architecture")
    return {
        "arch": arch,
        "n_head": value(f"{arch}.attention.head_count"),
        "n_head_kv": value(f"{arch}.attention.head_count_kv"),
        "n_layer": value(f"{arch}.block_count"),
    }


def pick_device(name: str = "auto") -> str:
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_base(base: str, *, device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, info)`` for a base; ``info`` is what export needs to name tensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    where = resolve_base(base)
    kwargs: dict[str, Any] = {"gguf_file": where["gguf"].name} if where["gguf"] else {}
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # GGUF loading is chatty; our progress bar says what happens
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(where["folder"]), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(where["folder"]), dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainError(f"could not load base {base!r}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    model.to(device)
    cfg = model.config
    info: dict[str, Any] = {
        "spec": where["spec"],
        "gguf": str(where["gguf"]) if where["gguf"] else None,
        "embedded": where["embedded"],
        "model_type": cfg.model_type,
        "arch": GGUF_ARCH.get(cfg.model_type, cfg.model_type),
        "n_head": cfg.num_attention_heads,
        "n_head_kv": getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
        "n_layer": cfg.num_hidden_layers,
    }
    if where["gguf"]:
        info.update({k: v for k, v in gguf_hparams(where["gguf"]).items() if v is not None})
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, info


# --------------------------------------------------------------------------- examples -> tokens


def encode_example(
    tokenizer: Any, record: dict[str, Any], *, loss_on: str = "all"
) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside the assistant turns that are learned).

    Each assistant turn is the text between the template rendered up to the turn (with the
    generation prompt) and the template rendered through it; the pieces are tokenised apart,
    so the prompt tokens are exactly those the serving engine sees.
    """
    messages = record["messages"]
    tools = record.get("tools") or None
    targets = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if record.get("loss_on", loss_on) == "last":  # a record may say (per-step examples learn one turn)
        targets = targets[-1:]

    def render(upto: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            messages[:upto], tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )

    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i in targets:
        prompt = render(i, True)
        full = render(i + 1, False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise DatasetError(
                f"example {record.get('id')}: the chat template does not render turns as prefixes"
            )
        context = tokenizer(prompt[len(done) :], add_special_tokens=False)["input_ids"]
        answer = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        ids += context + answer
        labels += [-100] * len(context) + answer
        done = full
    return ids, labels


# --------------------------------------------------------------------------- the loop


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(1, config.warmup_steps)
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine

    return factor


def _order(n: int, seed: int, start: int, count: int) -> list[int]:
    """Example indices ``start .. start+count`` of the endless, per-epoch shuffled stream."""
    out: list[int] = []
    epoch, offset = divmod(start, n)
    while len(out) < count:
        perm = list(range(n))
        random.Random(f"{seed}:epoch:{epoch}").shuffle(perm)
        out += perm[offset:]
        epoch, offset = epoch + 1, 0
    return out[:count]


def _step_loss(
    model: Any, batch: list[tuple[list[int], list[int]]], device: str, pad_id: int
) -> tuple[Any, int]:
    """Summed token cross-entropy of a micro-batch (right-padded) and its number of target tokens."""
    import torch
    import torch.nn.functional as F

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    input_ids, labels, mask = input_ids.to(device), labels.to(device), mask.to(device)
    # Position t predicts token t+1: keep only the positions whose next token is a target.
    targets = labels[:, 1:]
    keep = targets != -100
    causal = model.get_base_model()
    if type(causal).__name__ in _PLAIN_HEADS:
        decoder = getattr(causal, causal.base_model_prefix)
        hidden = decoder(input_ids=input_ids, attention_mask=mask).last_hidden_state[:, :-1]
        logits = causal.get_output_embeddings()(hidden[keep])
    else:
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1][keep]
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss, int(keep.sum())


def _latest_checkpoint(out: Path) -> Path | None:
    folder = out / "checkpoints"
    steps = sorted(folder.glob("step-*")) if folder.is_dir() else []
    steps = [s for s in steps if (s / "trainer.pt").is_file()]
    return steps[-1] if steps else None


def train_lora(
    data: Path | str | Sequence[dict[str, Any]],
    base: str,
    out: Path | str,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    loaded: tuple[Any, Any, dict[str, Any]] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``data`` (a dataset file or records) and save it under ``out``.

    ``resume=True`` continues from the latest checkpoint in ``out`` (same base, data and
    hyper-parameters required); without it, an ``out`` holding checkpoints is an error rather
    than silently overwritten. ``loaded`` passes an already loaded ``load_base`` result;
    ``on_step(step, loss)`` is called after every optimiser step (for logs without a terminal).
    """
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    config = config or TrainConfig()
    out = Path(out)
    if config.steps < 1 or config.batch_size < 1 or config.micro_batch < 1:
        raise TrainError("steps, batch_size and micro_batch must be at least 1")
    records = read_dataset(data) if isinstance(data, str | Path) else list(data)
    if not records:
        raise TrainError("no training examples")
    data_hash = content_hash(records)
    checkpoint = _latest_checkpoint(out)
    if checkpoint is not None and not resume:
        raise TrainError(
            f"{out} already holds checkpoints ({checkpoint.name}); pass --resume or use a new --out"
        )
    if resume and checkpoint is None:
        raise TrainError(f"nothing to resume: no checkpoints under {out / 'checkpoints'}")

    device = pick_device(config.device)
    if device == "cpu":
        torch.set_num_threads(max(1, config.threads))
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)

    model, tokenizer, base_info = loaded or load_base(base, device=device)
    encoded = [encode_example(tokenizer, r, loss_on=config.loss_on) for r in records]
    examples = [e for e in encoded if len(e[0]) <= config.max_length and any(t != -100 for t in e[1])]
    skipped = len(encoded) - len(examples)
    if not examples:
        raise TrainError(f"every example is longer than max_length={config.max_length} tokens")

    torch.manual_seed(config.seed)  # LoRA A init depends on it: same seed, same adapter
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    fingerprint = {"base": base_info["spec"], "data_hash": data_hash, **config.fingerprint()}

    start, losses, seconds_before = 0, [], 0.0
    if resume and checkpoint is not None:
        state = torch.load(checkpoint / "trainer.pt", weights_only=False)
        if state["fingerprint"] != fingerprint:
            changed = sorted(k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k])
            raise TrainError(
                f"cannot resume {checkpoint}: it was trained with different {', '.join(changed)}"
            )
        set_peft_model_state_dict(peft_model, load_file(str(checkpoint / "adapter_model.safetensors")))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if device == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        start, losses, seconds_before = state["step"], list(state["losses"]), state["seconds"]
        if start > config.steps:
            raise TrainError(f"{checkpoint} is already at step {start}, past --steps {config.steps}")

    def save_checkpoint(step: int, seconds: float) -> None:
        folder = out / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        state_dict = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
        weights = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(weights, str(folder / "adapter_model.safetensors"))
        state = {
            "step": step,
            "losses": losses,
            "seconds": seconds,
            "fingerprint": fingerprint,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device == "cuda" else None,
        }
        torch.save(state, folder / "trainer.tmp")
        (folder / "trainer.tmp").replace(folder / "trainer.pt")  # a checkpoint is whole or absent
        for old in sorted((out / "checkpoints").glob("step-*"))[:-CHECKPOINTS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)

    # A finished run "resumed" trains nothing and writes its outputs again (e.g. to re-export).
    pad_id = tokenizer.pad_token_id
    order = _order(
        len(examples), config.seed, start * config.batch_size, (config.steps - start) * config.batch_size
    )
    peft_model.train()
    started = time.perf_counter()
    bar = _Progress(progress, config.steps, start)
    try:
        for step in range(start, config.steps):
            picked = order[(step - start) * config.batch_size : (step - start + 1) * config.batch_size]
            batch = [examples[i] for i in picked]
            n_tokens = sum(sum(1 for t in labs[1:] if t != -100) for _, labs in batch)
            total = 0.0
            for k in range(0, len(batch), config.micro_batch):
                loss, _ = _step_loss(peft_model, batch[k : k + config.micro_batch], device, pad_id)
                (loss / max(1, n_tokens)).backward()
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(total / max(1, n_tokens))
            bar.advance(step + 1, losses)
            if on_step is not None:
                on_step(step + 1, losses[-1])
            if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                save_checkpoint(step + 1, seconds_before + time.perf_counter() - started)
    finally:
        bar.close()
    seconds = seconds_before + time.perf_counter() - started

    adapter_dir = out / "adapter"
    peft_model.save_pretrained(str(adapter_dir), save_embedding_layers=False)
    (adapter_dir / "concierge_base.json").write_text(json.dumps(base_info, indent=2) + "\n", encoding="utf-8")
    result = TrainResult(
        out=out,
        adapter_dir=adapter_dir,
        steps=config.steps,
        start_step=start,
        losses=losses,
        seconds=seconds,
        examples=len(examples),
        skipped_too_long=skipped,
        data_hash=data_hash,
        device=device,
        base=base_info,
        config=config,
        model=peft_model,
        tokenizer=tokenizer,
    )
    summary = {
        "base": base_info,
        "data_hash": data_hash,
        "examples": len(examples),
        "skipped_too_long": skipped,
        "hyperparameters": config.fingerprint(),
        "steps": config.steps,
        "seed": config.seed,
        "device": device,
        "threads": config.threads if device == "cpu" else None,
        "train_seconds": round(seconds, 1),
        "losses": [round(x, 5) for x in losses],
        "final_loss": result.final_loss,
        "versions": _versions(),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return result


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft", "gguf"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


class _Progress:
    """A rich progress bar with the running loss (or nothing when ``enabled`` is false)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self._bar = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]LoRA[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._bar.start()
        self._task = self._bar.add_task("loss -", total=total, completed=start)

    def advance(self, step: int, losses: list[float]) -> None:
        if self._bar is not None:
            recent = losses[-10:]
            self._bar.update(self._task, completed=step, description=f"loss {sum(recent) / len(recent):.4f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------- using an adapter in torch


def load_adapter(
    base: str, adapter_dir: Path | str, *, device: str = "cpu", merge: bool = False
) -> tuple[Any, Any]:
    """The base with a saved adapter on top (``merge=True`` folds it into the weights)."""
    from peft import PeftModel

    model, tokenizer, _ = load_base(base, device=device)
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    peft_model.eval()
    return (peft_model.merge_and_unload() if merge else peft_model), tokenizer


def greedy(
    model: Any, tokenizer: Any, messages: list[dict[str, Any]], max_new_tokens: int = 32
) -> tuple[str, list[int]]:
    """Greedy completion of a chat (text and token ids), for comparing with llama.cpp."""
    import torch

    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(
            ids.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    new = out[0, ids.shape[1] :].tolist()
    return tokenizer.decode(new, skip_special_tokens=True), new
