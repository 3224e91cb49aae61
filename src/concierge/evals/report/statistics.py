"""Bootstrap intervals (per model and paired between two models) and pass^k per task."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import comb
from typing import Any

import numpy as np

from concierge.evals.report.config import RESAMPLES


def _mean_stat(samples: np.ndarray) -> np.ndarray:
    """Mean over the task axis (axis 1) of (resamples, tasks) arrays."""
    return samples.mean(axis=1)


def _micro_f1_stat(samples: np.ndarray) -> np.ndarray:
    """Micro F1 from per-task (tp, fp, fn): 2 TP / (2 TP + FP + FN), 0 when there is nothing at all."""
    tp, fp, fn = (samples[..., i].sum(axis=1) for i in range(3))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)


STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"mean": _mean_stat, "micro_f1": _micro_f1_stat}


def stat_value(values: np.ndarray, stat: str) -> float:
    return float(STATS[stat](values[None, ...])[0])


def _interval(samples: np.ndarray) -> list[float] | None:
    if samples.size == 0:
        return None
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def bootstrap_ci(
    values: Sequence[Any], stat: str = "mean", *, resamples: int = RESAMPLES, seed: int = 0
) -> list[float] | None:
    """95 % percentile interval of one model's metric over resampled tasks (None for no tasks)."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(data), size=(resamples, len(data)))
    return _interval(STATS[stat](data[idx]))


def paired_bootstrap(
    baseline: Sequence[Any],
    candidate: Sequence[Any],
    stat: str = "mean",
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Relative improvement ``stat(candidate) / stat(baseline) - 1`` with a paired bootstrap 95 % interval.

    ``baseline[i]`` and ``candidate[i]`` are the same task (a number, or (tp, fp, fn) for
    ``micro_f1``). A zero baseline gives ``value: None`` and a ``reason``; the absolute difference
    and its interval are always there.
    """
    base = np.asarray(baseline, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if base.shape != cand.shape:
        raise ValueError(f"paired samples differ in shape: {base.shape} vs {cand.shape}")
    n = len(base)
    if n == 0:
        return {"value": None, "ci95": None, "reason": "no tasks in common", "n": 0}
    f = STATS[stat]
    b0, c0 = stat_value(base, stat), stat_value(cand, stat)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    bs, cs = f(base[idx]), f(cand[idx])
    out: dict[str, Any] = {
        "value": None,
        "ci95": None,
        "baseline_value": round(b0, 4),
        "candidate_value": round(c0, 4),
        "absolute": {"value": round(c0 - b0, 4), "ci95": _interval(cs - bs)},
        "n": n,
        "resamples": resamples,
        "seed": seed,
        "method": f"paired bootstrap over tasks, percentile interval, statistic {stat}",
    }
    if b0 == 0:
        out["reason"] = "baseline scores 0: the relative change is undefined (see absolute)"
        return out
    ok = bs != 0
    out["value"] = round(c0 / b0 - 1, 4)
    out["ci95"] = _interval(cs[ok] / bs[ok] - 1)
    out["undefined_resamples"] = int((~ok).sum())
    return out


def pass_k_per_task(successes: Sequence[int], trials: int, k: int) -> list[float]:
    """τ²'s pass^k term per task: C(c, k) / C(trials, k)."""
    return [comb(c, k) / comb(trials, k) for c in successes]
