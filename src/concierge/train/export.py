"""Export a PEFT LoRA adapter as a GGUF LoRA adapter that llama.cpp (and so concierge) serves.

llama.cpp's ``convert_lora_to_gguf.py`` is not on PyPI, so this writes the file with the
``gguf`` package, following what ``src/llama-adapter.cpp`` checks when it loads an adapter:

* ``general.type = "adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha`` (float32) and
  ``general.architecture`` equal to the base model's;
* per adapted base tensor ``blk.{i}.attn_q.weight`` a pair ``...weight.lora_a`` with ggml shape
  ``[in, rank]`` and ``...weight.lora_b`` with ``[rank, out]``. gguf-py reverses numpy shapes,
  so these are PEFT's own ``lora_A`` ``(rank, in)`` and ``lora_B`` ``(out, rank)``, untransposed;
* llama.cpp applies ``W x + scale * alpha / rank * B (A x)``, PEFT ``W x + alpha / r * B (A x)``:
  the same with the runtime scale 1.0 (rsLoRA's ``alpha / sqrt(r)`` is folded into alpha);
* llama.cpp's converter permutes the rows of ``q_proj`` / ``k_proj`` for the llama
  architecture (``LlamaModel.permute``: rotary pairs interleaved per head), and transformers
  undoes that when it loads such a GGUF, so an adapter trained on the HF layout needs the same
  row permutation on ``lora_B`` of q and k (A acts on the input side and is unchanged).

HF tensor names map to GGUF names with gguf-py's own ``TensorNameMap``. When the base GGUF is
known, every pair is checked against the base tensor's shape before the file is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# llama.cpp's convert_hf_to_gguf.py permutes q/k rows for these architectures.
PERMUTED_ARCHS = {"llama"}


class ExportError(RuntimeError):
    """The adapter cannot be exported (unknown names, shape mismatch): one line."""


@dataclass
class ExportInfo:
    path: Path
    arch: str
    rank: int
    alpha: float
    tensors: int
    bytes: int
    dtype: str


def permute_rows(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` on the output rows of a q/k projection (or its lora_B)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _peft_pairs(adapter_dir: Path) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The adapter config and ``{hf module name: (A, B)}`` as float32 numpy arrays."""
    from safetensors.numpy import load_file

    config_path = adapter_dir / "adapter_config.json"
    weights_path = adapter_dir / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise ExportError(
            f"{adapter_dir} is not a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)"
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{adapter_dir}: only LoRA adapters can be exported, not {config.get('peft_type')}")
    if config.get("fan_in_fan_out"):
        raise ExportError(f"{adapter_dir}: fan_in_fan_out adapters (Conv1D bases) are not supported")
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise ExportError(f"{weights_path}: cannot read ({exc})") from exc
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for name, value in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in name:
                module = name.split(marker)[0].removeprefix("base_model.model.")
                pairs.setdefault(module, {})[part] = np.asarray(value, dtype=np.float32)
                break
        else:
            raise ExportError(f"{weights_path}: tensor {name} is not a LoRA A/B matrix (modules_to_save?)")
    out = {}
    for module, pair in pairs.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise ExportError(f"{weights_path}: {module} lacks lora_A or lora_B")
        out[module] = (pair["lora_A"], pair["lora_B"])
    return config, out


def _base_info(adapter_dir: Path, base_gguf: Path | None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    sidecar = adapter_dir / "concierge_base.json"
    if sidecar.is_file():
        info.update(json.loads(sidecar.read_text(encoding="utf-8")))
    if base_gguf is not None:
        from concierge.train.lora import gguf_hparams

        info.update({k: v for k, v in gguf_hparams(base_gguf).items() if v is not None})
        info["gguf"] = str(base_gguf)
    if not info.get("arch") or not info.get("n_layer"):
        raise ExportError(
            f"{adapter_dir}: unknown base architecture; pass the base GGUF (or keep concierge_base.json)"
        )
    return info


def _base_shapes(base_gguf: Path) -> dict[str, tuple[int, ...]]:
    """GGUF tensor name -> numpy-order shape (out, in) of the base model's tensors."""
    import gguf

    reader = gguf.GGUFReader(str(base_gguf))
    return {t.name: tuple(int(x) for x in reversed(t.shape.tolist())) for t in reader.tensors}


def export_gguf_lora(
    adapter_dir: Path | str,
    out: Path | str,
    *,
    base_gguf: Path | str | None = None,
    dtype: str = "f16",
    name: str | None = None,
) -> ExportInfo:
    """Write ``out`` (a GGUF LoRA adapter) from a PEFT adapter folder; see the module docstring."""
    import gguf

    adapter_dir, out = Path(adapter_dir), Path(out)
    if dtype not in ("f16", "f32"):
        raise ExportError(f"dtype must be f16 or f32, not {dtype!r}")
    config, pairs = _peft_pairs(adapter_dir)
    if not pairs:
        raise ExportError(f"{adapter_dir}: the adapter has no LoRA weights")
    gguf_path = Path(base_gguf) if base_gguf else None
    info = _base_info(adapter_dir, gguf_path)
    if gguf_path is None and info.get("gguf") and Path(info["gguf"]).is_file():
        gguf_path = Path(info["gguf"])
    arch = str(info["arch"])
    try:
        arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    except StopIteration:
        raise ExportError(f"architecture {arch!r} is unknown to the gguf package") from None
    names = gguf.get_tensor_name_map(arch_enum, int(info["n_layer"]))
    shapes = _base_shapes(gguf_path) if gguf_path is not None else None

    rank = int(config.get("r") or 0)
    alpha = float(config.get("lora_alpha") or rank)
    if config.get("use_rslora"):
        alpha = alpha * math.sqrt(rank)  # PEFT scales by alpha/sqrt(r); llama.cpp by alpha/r
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ExportError(f"{adapter_dir}: per-module rank/alpha patterns are not supported")
    np_dtype = np.float16 if dtype == "f16" else np.float32

    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(name or adapter_dir.parent.name or "concierge-lora")
    count = 0
    try:
        for module in sorted(pairs, key=_natural_key):
            a, b = pairs[module]
            target = names.get_name(module + ".weight", try_suffixes=(".weight",))
            if target is None:
                raise ExportError(f"{adapter_dir}: no GGUF name for {module} in the {arch} architecture")
            if a.shape[0] != rank or b.shape[1] != rank:
                raise ExportError(f"{module}: lora_A {a.shape} / lora_B {b.shape} do not have rank {rank}")
            if arch in PERMUTED_ARCHS and target.endswith(("attn_q.weight", "attn_k.weight")):
                kv = info.get("n_head_kv") if target.endswith("attn_k.weight") else info.get("n_head")
                b = permute_rows(b, int(info["n_head"]), int(kv or info["n_head"]))
            if shapes is not None:
                base_shape = shapes.get(target)
                if base_shape is None:
                    raise ExportError(f"{target} is not a tensor of the base {gguf_path}")
                if base_shape != (b.shape[0], a.shape[1]):
                    raise ExportError(
                        f"{target}: adapter delta is {(b.shape[0], a.shape[1])}, base tensor is {base_shape}"
                    )
            writer.add_tensor(f"{target}.lora_a", np.ascontiguousarray(a.astype(np_dtype)))
            writer.add_tensor(f"{target}.lora_b", np.ascontiguousarray(b.astype(np_dtype)))
            count += 2
        out.parent.mkdir(parents=True, exist_ok=True)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return ExportInfo(out, arch, rank, alpha, count, out.stat().st_size, dtype)


def _natural_key(name: str) -> list[Any]:
    """``layers.10`` after ``layers.9``: the order llama.cpp's converter writes tensors in."""
    import re

    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def check_export(
    model: Any,
    tokenizer: Any,
    base_gguf: Path | str,
    adapter_gguf: Path | str,
    prompts: list[list[dict[str, Any]]],
    *,
    max_tokens: int = 24,
    threads: int | None = None,
) -> dict[str, Any]:
    """Does llama.cpp with the GGUF adapter compute what torch computes with the PEFT adapter?

    Each chat is rendered and tokenised by the model's tokenizer; llama.cpp (its ``/completion``
    route, fed the same token ids) continues it greedily and reports each token's log-probability;
    torch scores those tokens teacher-forced. Reported: top-1 agreement and mean |log-prob
    difference|, for the adapter and, as the noise floor of a quantised base, for the base alone
    (``model`` must be a PEFT model; its adapter is switched off for the floor).
    """
    import httpx
    import torch

    from concierge.models.llamacpp import LlamaCppEngine

    device = next(model.parameters()).device
    encoded = [
        tokenizer(
            tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
        for m in prompts
    ]

    def torch_scores(prompt_ids: list[int], new_ids: list[int]) -> tuple[list[float], list[bool]]:
        ids = torch.tensor([prompt_ids + new_ids], device=device)
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        positions = range(len(prompt_ids) - 1, len(prompt_ids) + len(new_ids) - 1)
        chosen = [float(logprobs[p, i]) for p, i in zip(positions, new_ids, strict=True)]
        top1 = [int(logprobs[p].argmax()) == i for p, i in zip(positions, new_ids, strict=True)]
        return chosen, top1

    def compare(lora: list[tuple[Path, float]] | None) -> dict[str, Any]:
        engine = LlamaCppEngine(Path(base_gguf), n_ctx=2048, n_parallel=1, n_threads=threads, lora=lora)
        diffs: list[float] = []
        agree = compared = 0
        try:
            for prompt_ids in encoded:
                response = httpx.post(
                    f"{engine.http_address}/completion",
                    headers={"Authorization": f"Bearer {engine.http_api_key}"},
                    json={
                        "prompt": prompt_ids,
                        "n_predict": max_tokens,
                        "temperature": 0,
                        "n_probs": 1,
                        "cache_prompt": False,
                        "ignore_eos": True,  # a numerical comparison: stopping early only loses tokens
                        "return_tokens": True,
                    },
                    timeout=120.0,
                    trust_env=False,  # a localhost call never goes through a proxy
                ).json()
                new_ids = [int(t) for t in response.get("tokens") or []]
                if not new_ids:
                    continue
                chosen, top1 = torch_scores(prompt_ids, new_ids)
                # llama-server leaves out probabilities of tokens that end inside a UTF-8 character.
                probs = response.get("completion_probabilities") or []
                if [int(c["id"]) for c in probs] == new_ids:
                    diffs += [abs(float(c["logprob"]) - s) for c, s in zip(probs, chosen, strict=True)]
                agree += sum(top1)
                compared += len(top1)
        finally:
            engine.close()
        return {
            "tokens": compared,
            "top1_agree": round(agree / compared, 4) if compared else None,
            "mean_abs_dlogprob": round(sum(diffs) / len(diffs), 4) if diffs else None,
            "max_abs_dlogprob": round(max(diffs), 4) if diffs else None,
        }

    was_training = model.training
    model.eval()
    try:
        adapted = compare([(Path(adapter_gguf), 1.0)])
        with model.disable_adapter():
            floor = compare(None)
    finally:
        model.train(was_training)
    return {"adapter_vs_torch": adapted, "base_vs_torch_base": floor, "max_tokens": max_tokens}
