"""Proof report: the same held-out evaluations for every model, relative improvement with a paired
bootstrap interval, and what a resolved conversation costs self-hosted against API prices.

Evaluations (each can be switched off; one that cannot run says why in ``summary["skipped"]``):

* ``support.<mode>.pass^k``: the support agent (``guided`` and/or ``agent`` mode) against the
  scripted customer on a task file, scored as τ²-bench does (:mod:`concierge.evals.support_eval`);
  per task the value is C(successes, k) / C(trials, k).
* ``commands.intent_accuracy`` and ``commands.slot_f1`` (micro): guided-mode commands
  (:func:`concierge.train.evaluate.command_accuracy`), from an examples file or built from the
  support tasks (:func:`concierge.train.datasets.guided_examples`).
* ``shop.constraint_satisfaction``: share of written shopper requests (``shop_requests.yaml``
  format) answered within their hard constraints on the demo store: every product shown exists,
  is in stock and meets the request's categories, price bounds, attributes and exclusions; a
  request that needs a clarifying question gets one and no products; otherwise products are
  shown exactly when the catalogue has matching ones; required structured-query fields match.
* ``recommender.NDCG@10``: NOT a property of a chat model, so it is its own section: concierge's
  own recommenders (ItemKNN sequence-aware, SASRec) against off-the-shelf baselines (popularity,
  ALS) on a MovieLens-format ``ratings.csv``, leave-last-out and full ranking
  (:mod:`concierge.evals.recsys`). The in-house candidate is the one with the best *validation*
  NDCG@10; the figures are on the test targets.

Relative improvement of the candidate c over the baseline b on metric m, over the same n tasks:
``value = m(c) / m(b) - 1``. ``ci95`` is the 2.5th and 97.5th percentile of that ratio over
2000 paired resamples of the tasks (numpy, fixed seed): each resample draws n task indices with
replacement and recomputes both models' m on them. ``value`` is null (with ``reason``) when
m(b) = 0; resamples whose baseline is 0 are left out of the interval and counted
(``undefined_resamples``). The absolute difference m(c) - m(b) and its interval are always given.

Cost, for a self-hosted alias, from this report's own support conversations (``cost.mode``):

* ``tokens_per_second = completion tokens / engine seconds`` summed over the alias's model calls
  (engine seconds are each call's wall time, prompt processing included, because the machine is
  busy for both; calls are made one at a time, so this is single-stream speed, a conservative
  figure for a server that batches);
* ``usd_per_1m_output_tokens = hourly_usd / utilisation / (tokens_per_second * 3600) * 1e6``;
* ``usd_per_resolved_conversation = completion tokens per resolved conversation *
  usd_per_1m_output_tokens / 1e6`` (all conversations' tokens over the resolved ones: failures
  are paid for too). This equals engine seconds per resolved conversation * hourly_usd /
  utilisation / 3600.

For an OpenAI-compatible endpoint the price row (``price:`` or its model name) of the dated table
``api_prices.yaml`` gives ``usd_per_1m_output_tokens``, and ``usd_per_resolved_conversation =
(prompt tokens * input price + completion tokens * output price) / 1e6 / resolved``.

Every row of the price table is also set against the self-hosted reference (the candidate, or
the first self-hosted model), at the reference's measured token volume per conversation:
``api_usd_per_conversation = (prompt tokens * input + completion tokens * output) / 1e6`` per
conversation. Break-even volume, one machine always on:

* fixed monthly cost ``F = hourly_usd * hours_per_month`` (730 h);
* marginal self-hosted cost per conversation ``m = marginal_usd_per_hour * engine seconds per
  conversation / 3600`` (0 by default: a rented machine costs the same busy or idle);
* ``break_even_conversations_per_month = F / (api_usd_per_conversation - m)``;
* null when ``api_usd_per_conversation <= m``, or when that volume is above what the machine
  serves at the configured utilisation, ``capacity = utilisation * hours_per_month * 3600 /
  engine seconds per conversation`` (with m = 0 this is exactly "the API costs less per
  conversation than the machine at that utilisation").
"""

from __future__ import annotations

import base64
import datetime as dt
import difflib
import html
import io
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from math import comb
from pathlib import Path
from typing import Any

import numpy as np
import yaml

PRICES_PATH = Path(__file__).with_name("api_prices.yaml")
HOURS_PER_MONTH = 730.0
RESAMPLES = 2000
MODES = ("guided", "agent")
EVALUATIONS = ("support", "commands", "shop", "recommender")
RECSYS_OFF_THE_SHELF = ("pop", "als")
RECSYS_IN_HOUSE = ("itemknn-seq", "sasrec")

# (done, total) within one step, and which step of how many: the CLI draws both.
Progress = Callable[[int, int, str, int, int], None]  # (step, steps, label, done, total)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ReportConfigError(ValueError):
    """A report config problem, as one line."""


# --------------------------------------------------------------------------- configuration


@dataclass
class Endpoint:
    """An OpenAI-compatible endpoint to evaluate beside the hub's aliases (e.g. a proprietary API)."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    price: str | None = None  # row id in the price table; default: ``model``
    timeout: float = 120.0

    def alias_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"url": self.base_url, "served_name": self.model, "timeout": self.timeout}
        if self.api_key_env:
            spec["api_key_env"] = self.api_key_env
        return spec


@dataclass
class SupportConfig:
    enabled: bool = True
    domain: str = "retail"
    data_dir: Path | None = None  # folder with the domain's db.json (or its parent)
    tasks: Path | None = None  # default: <data_dir>/tasks_train.json, or homestay's own tasks
    modes: tuple[str, ...] = ("guided",)
    trials: int = 1
    limit: int | None = None
    max_turns: int = 20
    max_steps: int = 12


@dataclass
class CommandsConfig:
    enabled: bool = True
    examples: Path | None = None  # guided dataset (JSON lines); default: built from the support tasks
    domain: str | None = None  # flows the commands belong to; default: the support domain
    prompt: str = "guided"  # guided (production path) or compact (training prompt)
    limit: int | None = None
    seed: int = 0


@dataclass
class ShopConfig:
    enabled: bool = True
    requests: Path | None = None  # shop_requests.yaml format
    seed: int = 7  # demo store
    n_products: int = 800
    n_shoppers: int = 200
    query_model: str = "always"
    limit: int | None = None


@dataclass
class RecsysConfig:
    enabled: bool = True
    data: Path | None = None  # folder with ratings.csv (or the file)
    off_the_shelf: tuple[str, ...] = RECSYS_OFF_THE_SHELF
    in_house: tuple[str, ...] = RECSYS_IN_HOUSE
    baseline: str = "als"
    sasrec_epochs: int = 30
    seed: int = 0


@dataclass
class CostConfig:
    hourly_usd: float = 0.10  # a 2-vCPU cloud VM, like the machine the shipped figures came from
    utilisation: float = 0.5
    marginal_usd_per_hour: float = 0.0
    hours_per_month: float = HOURS_PER_MONTH
    prices: Path | None = None  # default: the packaged api_prices.yaml
    mode: str | None = None  # support mode whose conversations are priced (default: guided if run)


@dataclass
class ReportConfig:
    """What to evaluate, on which models, and at what hardware price (see the module docstring)."""

    models: list[str | Endpoint] = field(default_factory=lambda: ["support-agent", "retail-inhouse"])
    baseline: str | None = None  # default: the first model
    candidate: str | None = None  # default: the first in-house alias that is not the baseline
    limit: int | None = None  # tasks per evaluation, where a section sets none
    support: SupportConfig = field(default_factory=SupportConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    shop: ShopConfig = field(default_factory=ShopConfig)
    recsys: RecsysConfig = field(default_factory=RecsysConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    resamples: int = RESAMPLES
    seed: int = 0

    @property
    def model_names(self) -> list[str]:
        return [m.name if isinstance(m, Endpoint) else m for m in self.models]

    @property
    def endpoints(self) -> list[Endpoint]:
        return [m for m in self.models if isinstance(m, Endpoint)]

    def baseline_name(self) -> str:
        return self.baseline or self.model_names[0]

    @classmethod
    def from_yaml(cls, path: str | Path) -> ReportConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ReportConfigError(f"cannot read report config {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ReportConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data or {}, base_dir=path.parent, origin=str(path))

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None, origin: str = "report config"
    ) -> ReportConfig:
        """Validate a mapping (as in the YAML file); relative paths are relative to ``base_dir``."""
        reader = _Reader(origin, base_dir)
        if not isinstance(data, Mapping):
            raise ReportConfigError(f"{origin}: expected a mapping at the top level")
        top = reader.keys(data, "", set(_TOP_KEYS))
        config = cls()
        if "models" in top:
            config.models = reader.models(top["models"])
        for key in ("baseline", "candidate"):
            if top.get(key) is not None:
                setattr(config, key, reader.text(top[key], key))
        if top.get("limit") is not None:
            config.limit = reader.positive_int(top["limit"], "limit")
        if "resamples" in top:
            config.resamples = reader.positive_int(top["resamples"], "resamples")
        if "seed" in top:
            config.seed = reader.integer(top["seed"], "seed")
        for section, klass in _SECTIONS.items():
            if section in top:
                raw = top[section]
                if raw is False:
                    setattr(config, section, klass(enabled=False))
                    continue
                setattr(config, section, reader.section(raw or {}, section, klass))
        config.validate()
        return config

    def validate(self) -> None:
        """Cross-field checks (also run after the CLI applies its overrides)."""
        names = self.model_names
        if not names:
            raise ReportConfigError("models: give at least one model")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ReportConfigError(f"models: {dupes[0]!r} is listed twice")
        for name in names:
            if not _NAME_RE.match(name):
                raise ReportConfigError(f"models: {name!r} is not a valid model name")
        for key in ("baseline", "candidate"):
            value = getattr(self, key)
            if value is not None and value not in names:
                raise ReportConfigError(f"{key} {value!r} is not one of the models ({', '.join(names)})")
        if self.candidate is not None and self.candidate == self.baseline_name():
            raise ReportConfigError("candidate and baseline are the same model")
        s = self.support
        bad_modes = [m for m in s.modes if m not in MODES]
        if not s.modes or bad_modes:
            raise ReportConfigError(f"support.modes: choose from {', '.join(MODES)}, got {list(s.modes)}")
        if s.trials < 1:
            raise ReportConfigError("support.trials must be at least 1")
        for what, value in (
            ("limit", self.limit),
            ("support.limit", s.limit),
            ("commands.limit", self.commands.limit),
            ("shop.limit", self.shop.limit),
        ):
            if value is not None and value < 1:
                raise ReportConfigError(f"{what} must be at least 1")
        if self.commands.prompt not in ("guided", "compact"):
            raise ReportConfigError(
                f"commands.prompt must be guided or compact, not {self.commands.prompt!r}"
            )
        if self.shop.query_model not in ("always", "auto", "never"):
            raise ReportConfigError("shop.query_model must be always, auto or never")
        c = self.cost
        if not c.hourly_usd > 0:
            raise ReportConfigError(f"cost.hourly_usd must be above 0, got {c.hourly_usd}")
        if not 0 < c.utilisation <= 1:
            raise ReportConfigError(f"cost.utilisation must be in (0, 1], got {c.utilisation}")
        if c.marginal_usd_per_hour < 0 or c.hours_per_month <= 0:
            raise ReportConfigError("cost.marginal_usd_per_hour must be >= 0 and cost.hours_per_month > 0")
        if c.mode is not None and c.mode not in s.modes:
            raise ReportConfigError(f"cost.mode {c.mode!r} is not one of support.modes")
        from concierge.shop.recommend import model_names

        r = self.recsys
        for name in (*r.off_the_shelf, *r.in_house, r.baseline):
            if name not in model_names():
                raise ReportConfigError(f"recsys: unknown recommender {name!r} ({', '.join(model_names())})")
        if r.baseline not in r.off_the_shelf:
            raise ReportConfigError(f"recsys.baseline {r.baseline!r} must be one of recsys.off_the_shelf")
        if not r.in_house:
            raise ReportConfigError("recsys.in_house: give at least one recommender")
        if self.resamples < 100:
            raise ReportConfigError("resamples must be at least 100")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for the report's ``meta``."""

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple | list):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        out = plain(asdict(self))
        out["models"] = [asdict(m) if isinstance(m, Endpoint) else m for m in self.models]
        return out


_TOP_KEYS = (
    "models",
    "baseline",
    "candidate",
    "limit",
    "support",
    "commands",
    "shop",
    "recsys",
    "cost",
    "resamples",
    "seed",
)
_SECTIONS: dict[str, type] = {
    "support": SupportConfig,
    "commands": CommandsConfig,
    "shop": ShopConfig,
    "recsys": RecsysConfig,
    "cost": CostConfig,
}
_PATH_FIELDS = {"data_dir", "tasks", "examples", "requests", "data", "prices"}


class _Reader:
    """Typed reads with one-line errors naming the file and the key."""

    def __init__(self, origin: str, base_dir: Path | None) -> None:
        self.origin = origin
        self.base_dir = base_dir

    def fail(self, where: str, what: str) -> ReportConfigError:
        return ReportConfigError(f"{self.origin}: {where}: {what}")

    def keys(self, raw: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(where or "top level", "expected a mapping")
        for key in raw:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                raise self.fail(
                    f"{where}.{key}" if where else str(key),
                    "unknown setting" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                )
        return dict(raw)

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def integer(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer, got {value!r}")
        return value

    def positive_int(self, value: Any, where: str) -> int:
        value = self.integer(value, where)
        if value < 1:
            raise self.fail(where, f"must be at least 1, got {value}")
        return value

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(where, f"expected a number, got {value!r}")
        return float(value)

    def path(self, value: Any, where: str) -> Path:
        path = Path(os.path.expandvars(os.path.expanduser(self.text(value, where))))
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    def models(self, raw: Any) -> list[str | Endpoint]:
        if isinstance(raw, str):
            raw = [m.strip() for m in raw.split(",") if m.strip()]
        if not isinstance(raw, list):
            raise self.fail("models", "expected a list of aliases or endpoints")
        out: list[str | Endpoint] = []
        for i, item in enumerate(raw):
            where = f"models[{i}]"
            if isinstance(item, str):
                out.append(self.text(item, where))
                continue
            entry = self.keys(item, where, {"name", "base_url", "model", "api_key_env", "price", "timeout"})
            for key in ("name", "base_url", "model"):
                if key not in entry:
                    raise self.fail(where, f"an endpoint needs {key}")
            url = self.text(entry["base_url"], f"{where}.base_url")
            if not url.startswith(("http://", "https://")):
                raise self.fail(f"{where}.base_url", f"must start with http:// or https://, got {url!r}")
            env = entry.get("api_key_env")
            if env is not None and not _ENV_RE.match(str(env)):
                raise self.fail(f"{where}.api_key_env", f"must be an environment variable name, got {env!r}")
            timeout = self.number(entry.get("timeout", 120.0), f"{where}.timeout")
            if timeout <= 0:
                raise self.fail(f"{where}.timeout", "must be above 0")
            out.append(
                Endpoint(
                    name=self.text(entry["name"], f"{where}.name"),
                    base_url=url.rstrip("/"),
                    model=self.text(entry["model"], f"{where}.model"),
                    api_key_env=str(env) if env else None,
                    price=self.text(entry["price"], f"{where}.price") if entry.get("price") else None,
                    timeout=timeout,
                )
            )
        return out

    def section(self, raw: Any, name: str, klass: type) -> Any:
        defaults = klass()
        allowed = set(asdict(defaults))
        entry = self.keys(raw, name, allowed)
        values: dict[str, Any] = {}
        for key, value in entry.items():
            where = f"{name}.{key}"
            default = getattr(defaults, key)
            if value is None:
                values[key] = None
            elif key in _PATH_FIELDS:
                values[key] = self.path(value, where)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise self.fail(where, f"expected true or false, got {value!r}")
                values[key] = value
            elif isinstance(default, tuple):
                items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
                if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
                    raise self.fail(where, "expected a list of names")
                values[key] = tuple(items)
            elif isinstance(default, float):
                values[key] = self.number(value, where)
            elif isinstance(default, int) or key == "limit":
                values[key] = self.integer(value, where)
            elif key == "mode":
                values[key] = self.text(value, where)
            else:
                values[key] = self.text(value, where)
        return klass(**{**asdict(defaults), **values})


# --------------------------------------------------------------------------- statistics


def _mean_stat(samples: np.ndarray) -> np.ndarray:
    """Mean over the task axis (axis 1) of (resamples, tasks) arrays."""
    return samples.mean(axis=1)


def _micro_f1_stat(samples: np.ndarray) -> np.ndarray:
    """Micro F1 from per-task (tp, fp, fn): 2 TP / (2 TP + FP + FN), 0 when there is nothing at all."""
    tp, fp, fn = (samples[..., i].sum(axis=1) for i in range(3))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)


STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"mean": _mean_stat, "micro_f1": _micro_f1_stat}


def _stat_value(values: np.ndarray, stat: str) -> float:
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
    b0, c0 = _stat_value(base, stat), _stat_value(cand, stat)
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


# --------------------------------------------------------------------------- cost


def load_prices(path: str | Path | None = None) -> dict[str, Any]:
    """The dated price table: ``{"as_of", "rows": {id: {provider, input, output, as_of, source}}}``."""
    file = Path(path) if path else PRICES_PATH
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ReportConfigError(f"cannot read price table {file}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ReportConfigError(f"{file}: not valid YAML ({str(exc).splitlines()[0]})") from None
    rows = raw.get("rows") if isinstance(raw, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ReportConfigError(f"{file}: expected 'rows:' with at least one price")
    table: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("id"):
            raise ReportConfigError(f"{file}: rows[{i}] needs an id")
        for key in ("input", "output"):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ReportConfigError(f"{file}: row {row['id']!r}: {key} must be a price >= 0")
        if not row.get("as_of"):
            row = {**row, "as_of": raw.get("as_of")}
        if not row.get("as_of"):
            raise ReportConfigError(f"{file}: row {row['id']!r} has no as_of date")
        table[str(row["id"])] = {
            "provider": row.get("provider"),
            "input": float(row["input"]),
            "output": float(row["output"]),
            "as_of": str(row["as_of"]),
            "source": row.get("source"),
            **({"note": row["note"]} if row.get("note") else {}),
        }
    return {"as_of": str(raw.get("as_of") or ""), "path": str(file), "rows": table}


def usd_per_1m_output_tokens(hourly_usd: float, utilisation: float, tokens_per_second: float) -> float:
    """``hourly_usd / utilisation / (tokens_per_second * 3600) * 1e6``."""
    return hourly_usd / utilisation / (tokens_per_second * 3600.0) * 1e6


def api_usd(prompt_tokens: float, completion_tokens: float, row: Mapping[str, Any]) -> float:
    """What ``prompt_tokens`` in and ``completion_tokens`` out cost at a price-table row."""
    return (prompt_tokens * float(row["input"]) + completion_tokens * float(row["output"])) / 1e6


def self_hosted_cost(
    *,
    completion_tokens: int,
    prompt_tokens: int,
    engine_seconds: float,
    conversations: int,
    resolved: int,
    hourly_usd: float,
    utilisation: float,
) -> dict[str, Any]:
    """The self-hosted cost figures of one alias from its measured support conversations."""
    out: dict[str, Any] = {
        "kind": "self-hosted",
        "usd_per_1m_output_tokens": None,
        "usd_per_resolved_conversation": None,
        "usd_per_conversation": None,
        "tokens_per_second": None,
        "completion_tokens": int(completion_tokens),
        "prompt_tokens": int(prompt_tokens),
        "engine_seconds": round(float(engine_seconds), 3),
        "conversations": int(conversations),
        "resolved": int(resolved),
        "hourly_usd": hourly_usd,
        "utilisation": utilisation,
    }
    if completion_tokens <= 0 or engine_seconds <= 0:
        out["reason"] = "no generated tokens were measured for this model"
        return out
    tps = completion_tokens / engine_seconds
    price = usd_per_1m_output_tokens(hourly_usd, utilisation, tps)
    out["tokens_per_second"] = round(tps, 2)
    out["usd_per_1m_output_tokens"] = round(price, 6)
    if conversations:
        out["usd_per_conversation"] = round(completion_tokens / conversations * price / 1e6, 8)
        out["engine_seconds_per_conversation"] = round(engine_seconds / conversations, 4)
    if resolved:
        out["completion_tokens_per_resolved_conversation"] = round(completion_tokens / resolved, 2)
        out["usd_per_resolved_conversation"] = round(completion_tokens / resolved * price / 1e6, 8)
    else:
        out["reason"] = "no conversation was resolved, so a resolved one has no price"
    return out


def break_even(
    *,
    api_usd_per_conversation: float,
    engine_seconds_per_conversation: float,
    hourly_usd: float,
    utilisation: float,
    marginal_usd_per_hour: float = 0.0,
    hours_per_month: float = HOURS_PER_MONTH,
) -> dict[str, Any]:
    """Monthly conversations above which one always-on machine is cheaper than the API (or None)."""
    fixed = hourly_usd * hours_per_month
    marginal = marginal_usd_per_hour * engine_seconds_per_conversation / 3600.0
    capacity = (
        utilisation * hours_per_month * 3600.0 / engine_seconds_per_conversation
        if engine_seconds_per_conversation > 0
        else math.inf
    )
    out: dict[str, Any] = {
        "conversations_per_month": None,
        "fixed_usd_per_month": round(fixed, 4),
        "marginal_usd_per_conversation": round(marginal, 8),
        "api_usd_per_conversation": round(api_usd_per_conversation, 8),
        "capacity_conversations_per_month": None if math.isinf(capacity) else round(capacity, 1),
    }
    if api_usd_per_conversation <= marginal:
        out["reason"] = "never: the API costs no more per conversation than running the machine"
        return out
    volume = fixed / (api_usd_per_conversation - marginal)
    if volume > capacity:
        out["reason"] = (
            f"never on one machine: break-even needs {volume:,.0f} conversations a month, more than it "
            f"serves at {utilisation:.0%} utilisation ({capacity:,.0f}); the API is cheaper per conversation"
        )
        return out
    out["conversations_per_month"] = round(volume, 1)
    return out


# --------------------------------------------------------------------------- measuring model calls


class _Meter:
    """Hub observer: completion tokens and engine seconds per (phase, alias), for tokens/s."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.totals: dict[tuple[str, str], dict[str, float]] = {}

    def __call__(self, record: Any) -> None:
        if getattr(record, "endpoint", "chat") != "chat":
            return
        row = self.totals.setdefault(
            (self.phase, record.alias),
            {"calls": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0},
        )
        row["calls"] += 1
        row["errors"] += int(bool(getattr(record, "error", None)))
        row["prompt_tokens"] += int(record.prompt_tokens or 0)
        row["completion_tokens"] += int(record.completion_tokens or 0)
        row["seconds"] += float(record.latency_s or 0.0)

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for (phase, alias), row in sorted(self.totals.items()):
            entry = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
            entry["tokens_per_second"] = (
                round(row["completion_tokens"] / row["seconds"], 2) if row["seconds"] > 0 else None
            )
            out.setdefault(alias, {})[phase] = entry
        return out


# --------------------------------------------------------------------------- shop constraints


def _attr_values(product: Any, variant: Any, key: str) -> set[str]:
    if key in variant.options:
        return {str(variant.options[key]).lower()}
    if key in product.attributes:
        value = product.attributes[key]
        return {str(v).lower() for v in (value if isinstance(value, list) else [value])}
    if key == "brand":
        return {str(product.brand).lower()}
    return set()


def constraint_problems(product: Any, variant: Any, expect: Mapping[str, Any]) -> list[str]:
    """Every way a shown variant breaks a written request's hard constraints (empty: it meets them)."""
    problems = []
    if not variant.in_stock:
        problems.append("out of stock")
    if "price_min" in expect and variant.price < expect["price_min"]:
        problems.append(f"price {variant.price} < {expect['price_min']}")
    if "price_max" in expect and variant.price > expect["price_max"]:
        problems.append(f"price {variant.price} > {expect['price_max']}")
    cats = expect.get("categories")
    if cats and not any(product.category == c or product.category.startswith(c + " > ") for c in cats):
        problems.append(f"category {product.category}")
    for key, allowed in (expect.get("attributes") or {}).items():
        if not _attr_values(product, variant, key) & {str(v).lower() for v in allowed}:
            problems.append(f"{key} not in {allowed}")
    for key, banned in (expect.get("exclude_attributes") or {}).items():
        if _attr_values(product, variant, key) & {str(v).lower() for v in banned}:
            problems.append(f"{key} is one of the excluded {banned}")
    attrs = " ".join(
        f"{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in product.attributes.items()
    )
    text = " ".join([product.title, product.description, product.category, product.brand, attrs])
    text = (text + " " + " ".join(map(str, variant.options.values()))).lower()
    for word in expect.get("exclude_words") or []:
        if re.search(rf"\b{re.escape(str(word).lower())}", text):
            problems.append(f"mentions {word}")
    return problems


def check_shop_answer(answer: Any, catalog: Any, expect: Mapping[str, Any], available: int) -> list[str]:
    """Why an answer fails its request (empty: satisfied); ``available`` = matching in-stock variants."""
    problems: list[str] = []
    for card in answer.products:
        variant = catalog.get_variant(card.get("id"))
        if variant is None:
            problems.append(f"{card.get('id')} is not a variant of the catalogue")
            continue
        product = catalog.product(variant.product_id)
        problems += [f"{card.get('id')}: {p}" for p in constraint_problems(product, variant, expect)]
    if expect.get("clarifying"):
        if not answer.clarifying or answer.products:
            problems.append("a clarifying question (and no products) was needed")
    elif answer.clarifying:
        problems.append("asked a question where products were expected")
    elif bool(answer.products) != (available > 0):
        problems.append(
            "showed nothing though the catalogue has matches" if available else "showed products for none"
        )
    for key, value in (expect.get("query") or {}).items():
        if answer.query.get(key) != value:
            problems.append(f"query {key} is {answer.query.get(key)!r}, expected {value!r}")
    if expect.get("sorted") == "price_asc":
        prices = [c["price"] for c in answer.products]
        if prices != sorted(prices):
            problems.append("not sorted by price")
    return problems


# --------------------------------------------------------------------------- the report


def _progress_for(progress: Progress | None, step: int, steps: int, label: str) -> Callable[[int, int], None]:
    def tick(done: int, total: int) -> None:
        if progress is not None:
            progress(step, steps, label, done, total)

    return tick


def _is_self_hosted(hub: Any, name: str) -> bool:
    try:
        return hub.card(name).engine != "openai-upstream"
    except Exception:  # noqa: BLE001 - a hub without cards: treat as self-hosted
        return True


def _choose_candidate(config: ReportConfig, hub: Any) -> str | None:
    if config.candidate:
        return config.candidate
    others = [n for n in config.model_names if n != config.baseline_name()]
    for name in others:
        try:
            if hub.card(name).in_house:
                return name
        except Exception:  # noqa: BLE001
            continue
    return others[0] if others else None


def resolve_support_inputs(cfg: SupportConfig) -> tuple[Path | None, Path]:
    """(data dir for load_domain, task file); ValueError with the reason when they are missing."""
    from concierge.support.domain import resolve_data_dir

    data_dir = resolve_data_dir(cfg.domain, cfg.data_dir) if cfg.data_dir else None
    tasks = cfg.tasks
    if tasks is None:
        if cfg.domain == "homestay" and data_dir is None:
            from concierge.support.homestay import TASKS_PATH

            tasks = TASKS_PATH
        elif data_dir is not None and (data_dir / "tasks_train.json").is_file():
            tasks = data_dir / "tasks_train.json"
        else:
            raise ValueError(
                f"no task file for domain {cfg.domain!r}: set support.tasks (or support.data_dir)"
            )
    if not Path(tasks).is_file():
        raise ValueError(f"task file not found: {tasks}")
    return data_dir, Path(tasks)


@dataclass
class _Step:
    section: str
    label: str
    run: Callable[[Callable[[int, int], None]], None]


def run_report(config: ReportConfig, hub: Any, progress: Progress | None = None) -> dict[str, Any]:
    """Run every configured evaluation on every model and return the JSON summary (module docstring).

    ``hub`` is a :class:`~concierge.models.hub.ModelHub` (endpoints in ``config.models`` are
    registered on it as aliases). ``progress(step, steps, label, done, total)`` follows the work.
    """
    config.validate()
    started = time.perf_counter()
    for endpoint in config.endpoints:
        if endpoint.api_key_env and not os.environ.get(endpoint.api_key_env):
            raise ReportConfigError(
                f"endpoint {endpoint.name!r}: environment variable {endpoint.api_key_env} (api_key_env) is not set"
            )
        hub.register(endpoint.name, endpoint.alias_spec())
    names = config.model_names
    for name in names:
        hub.card(name)  # unknown alias: ModelNotFoundError now, not after an hour of evaluation
    baseline = config.baseline_name()
    candidate = _choose_candidate(config, hub)
    meter = _Meter()
    if hasattr(hub, "add_observer"):
        hub.add_observer(meter)
    prices = load_prices(config.cost.prices)
    seed = config.seed

    metrics: dict[str, dict[str, float]] = {n: {} for n in names}
    model_ci: dict[str, dict[str, list[float] | None]] = {n: {} for n in names}
    per_task: dict[str, dict[str, Any]] = {}  # metric -> {"ids", "stat", "by_model": {name: values}}
    details: dict[str, dict[str, Any]] = {n: {} for n in names}
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {}
    support_rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    steps: list[_Step] = []

    def record_metric(metric: str, name: str, ids: list[str], values: list[Any], stat: str = "mean") -> None:
        data = np.asarray(values, dtype=np.float64)
        metrics[name][metric] = round(_stat_value(data, stat), 4) if len(data) else 0.0
        model_ci[name][metric] = bootstrap_ci(data, stat, resamples=config.resamples, seed=seed)
        entry = per_task.setdefault(metric, {"ids": ids, "stat": stat, "by_model": {}})
        entry["by_model"][name] = values

    # -- support ------------------------------------------------------------------------------
    support_tasks: list[Any] = []
    s = config.support
    support_limit = s.limit or config.limit
    if s.enabled:
        try:
            from concierge.support.domain import load_domain
            from concierge.support.tasks import load_tasks

            data_dir, task_file = resolve_support_inputs(s)
            load_domain(s.domain, data_dir)  # a missing db.json says so here
            support_tasks = load_tasks(task_file)[: support_limit or None]
            if not support_tasks:
                raise ValueError(f"{task_file}: no tasks")
        except (ValueError, FileNotFoundError, OSError, KeyError) as exc:
            skipped["support"] = str(exc).splitlines()[0]
        else:
            from concierge.evals.support_eval import evaluate as evaluate_support

            def support_step(mode: str, name: str) -> Callable[[Callable[[int, int], None]], None]:
                def run(tick: Callable[[int, int], None]) -> None:
                    result = evaluate_support(
                        s.domain,
                        data_dir,
                        support_tasks,
                        mode,
                        "scripted",
                        hub,
                        name,
                        s.trials,
                        max_turns=s.max_turns,
                        max_steps=s.max_steps,
                        progress=tick,
                    )
                    rows = result.pop("tasks")
                    support_rows[(mode, name)] = rows
                    details[name][f"support.{mode}"] = {**result, "task_file": str(task_file)}
                    ids = [t.id for t in support_tasks]
                    wins = {i: 0 for i in ids}
                    for row in rows:
                        wins[row["task_id"]] += int(bool(row["success"]))
                    for k in range(1, s.trials + 1):
                        record_metric(
                            f"support.{mode}.pass^{k}",
                            name,
                            ids,
                            pass_k_per_task([wins[i] for i in ids], s.trials, k),
                        )

                return run

            for mode in s.modes:
                for name in names:
                    steps.append(_Step("support", f"support {mode} · {name}", support_step(mode, name)))
    else:
        skipped["support"] = "switched off in the report config"

    # -- commands -----------------------------------------------------------------------------
    c = config.commands
    if c.enabled:
        try:
            from concierge.support.guided import load_flows

            command_domain = c.domain or s.domain
            flows = load_flows(command_domain)
            if c.examples is not None:
                from concierge.train.datasets import read_dataset

                records = [r for r in read_dataset(c.examples) if r.get("kind") == "guided"]
                records = records[: (c.limit or config.limit) or None]
                source = str(c.examples)
            else:
                if not support_tasks:
                    raise ValueError(
                        "no command examples: set commands.examples, or give support tasks to build them from"
                    )
                from concierge.train.datasets import guided_examples

                try:
                    records = guided_examples(support_tasks, flows, seed=c.seed)
                except (KeyError, ValueError) as exc:
                    raise ValueError(
                        f"cannot build command examples from the {command_domain} tasks ({exc!r}); "
                        "set commands.examples to a guided dataset"
                    ) from None
                records = records[: c.limit or None]
                source = f"built from the {len(support_tasks)} support tasks (guided_examples, seed {c.seed})"
            if not records:
                raise ValueError("no guided command examples")
        except (ValueError, OSError) as exc:  # DatasetError is a ValueError
            skipped["commands"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            from concierge.train.evaluate import command_accuracy

            def command_step(name: str) -> Callable[[Callable[[int, int], None]], None]:
                def run(tick: Callable[[int, int], None]) -> None:
                    result = command_accuracy(
                        hub, name, records, flows, prompt=c.prompt, progress=tick, per_example=True
                    )
                    rows = result.pop("per_example")
                    details[name]["commands"] = {**result, "examples_source": source}
                    ids = [str(r["id"]) for r in rows]
                    record_metric("commands.intent_accuracy", name, ids, [r["intent"] for r in rows])
                    record_metric(
                        "commands.slot_f1", name, ids, [[r["tp"], r["fp"], r["fn"]] for r in rows], "micro_f1"
                    )

                return run

            for name in names:
                steps.append(_Step("commands", f"commands · {name}", command_step(name)))
    else:
        skipped["commands"] = "switched off in the report config"

    # -- shop ---------------------------------------------------------------------------------
    sh = config.shop
    if sh.enabled:
        try:
            if sh.requests is None:
                raise ValueError("no shopper requests file: set shop.requests (shop_requests.yaml format)")
            requests = yaml.safe_load(Path(sh.requests).read_text(encoding="utf-8")) or []
            if not isinstance(requests, list) or not all(
                isinstance(r, dict) and r.get("turns") for r in requests
            ):
                raise ValueError(f"{sh.requests}: expected a list of {{id, turns, expect}}")
            requests = requests[: (sh.limit or config.limit) or None]
        except (ValueError, OSError, yaml.YAMLError) as exc:
            skipped["shop"] = str(exc).splitlines()[0]
        else:
            store: dict[str, Any] = {}

            def shop_store() -> dict[str, Any]:
                if not store:
                    from concierge.shop.catalog import Catalog
                    from concierge.shop.demo_store import generate_demo_store
                    from concierge.shop.personalize import Personalizer
                    from concierge.shop.search import HashingEmbedder, SearchIndex

                    products, interactions = generate_demo_store(
                        seed=sh.seed, n_products=sh.n_products, n_shoppers=sh.n_shoppers
                    )
                    catalog = Catalog.from_records(products, tenant="report", name="demo")
                    store["catalog"] = catalog
                    # Hashing embedder: retrieval is the same for every model; only the model's part differs.
                    store["index"] = SearchIndex.build(catalog, HashingEmbedder())
                    store["personalizer"] = Personalizer(catalog, interactions)
                    store["available"] = {
                        str(r.get("id")): sum(
                            1
                            for p in catalog
                            for v in p.variants
                            if not constraint_problems(p, v, r.get("expect") or {})
                        )
                        for r in requests
                    }
                return store

            def shop_step(name: str) -> Callable[[Callable[[int, int], None]], None]:
                def run(tick: Callable[[int, int], None]) -> None:
                    from concierge.shop.assistant import ShopAssistant

                    st = shop_store()
                    assistant = ShopAssistant(
                        hub,
                        st["catalog"],
                        st["index"],
                        st["personalizer"],
                        model_alias=name,
                        query_model=sh.query_model,
                    )
                    values: list[int] = []
                    failures: dict[str, list[str]] = {}
                    shown = violating = 0
                    turn_seconds: list[float] = []
                    for i, req in enumerate(requests):
                        rid = str(req.get("id", i))
                        expect = req.get("expect") or {}
                        messages: list[dict[str, str]] = []
                        state = None
                        try:
                            for text in req["turns"]:
                                messages.append({"role": "user", "content": str(text)})
                                t0 = time.perf_counter()
                                answer = assistant.answer(messages, state=state)
                                turn_seconds.append(time.perf_counter() - t0)
                                messages.append({"role": "assistant", "content": answer.message})
                                state = answer.state
                            problems = check_shop_answer(answer, st["catalog"], expect, st["available"][rid])
                            shown += len(answer.products)
                            violating += sum(
                                1
                                for card in answer.products
                                if (v := st["catalog"].get_variant(card.get("id"))) is None
                                or constraint_problems(st["catalog"].product(v.product_id), v, expect)
                            )
                        except Exception as exc:  # noqa: BLE001 - a failed turn fails its request only
                            problems = [f"error: {type(exc).__name__}: {exc}"]
                        values.append(int(not problems))
                        if problems:
                            failures[rid] = problems[:5]
                        tick(i + 1, len(requests))
                    details[name]["shop"] = {
                        "requests": len(requests),
                        "satisfied": sum(values),
                        "products_shown": shown,
                        "products_violating": violating,
                        "seconds_per_turn": round(float(np.mean(turn_seconds)), 3) if turn_seconds else None,
                        "failures": failures,
                        "store": f"demo store (seed {sh.seed}, {sh.n_products} products), hashing embedder",
                        "requests_file": str(sh.requests),
                    }
                    ids = [str(r.get("id", i)) for i, r in enumerate(requests)]
                    record_metric("shop.constraint_satisfaction", name, ids, values)

                return run

            for name in names:
                steps.append(_Step("shop", f"shop · {name}", shop_step(name)))
    else:
        skipped["shop"] = "switched off in the report config"

    # -- recommender --------------------------------------------------------------------------
    recommender: dict[str, Any] = {}
    rc = config.recsys
    if rc.enabled:
        reason = _recsys_unavailable(rc)
        if reason:
            skipped["recommender"] = reason
        else:

            def recsys_step(tick: Callable[[int, int], None]) -> None:
                try:
                    result = _run_recsys(rc, config.resamples, seed, tick)
                except (ValueError, OSError) as exc:  # a malformed ratings file
                    skipped["recommender"] = str(exc).splitlines()[0]
                    return
                if "skipped" in result:
                    skipped["recommender"] = result["skipped"]
                    return
                recommender.update(result)

            steps.append(_Step("recommender", "recommender (NDCG@10)", recsys_step))
    else:
        skipped["recommender"] = "switched off in the report config"

    # -- run ----------------------------------------------------------------------------------
    for i, step in enumerate(steps):
        meter.phase = step.section if step.section != "support" else step.label.split(" · ")[0]
        t0 = time.perf_counter()
        tick = _progress_for(progress, i, len(steps), step.label)
        tick(0, 1)
        step.run(tick)
        timings[step.label] = round(time.perf_counter() - t0, 2)
    if hasattr(hub, "remove_observer"):
        hub.remove_observer(meter)

    # -- relative improvement -----------------------------------------------------------------
    relative: dict[str, Any] = {}
    relative_all: dict[str, dict[str, Any]] = {}
    for metric, entry in per_task.items():
        by_model = entry["by_model"]
        if baseline not in by_model:
            continue
        for name in names:
            if name == baseline or name not in by_model:
                continue
            result = paired_bootstrap(
                by_model[baseline], by_model[name], entry["stat"], resamples=config.resamples, seed=seed
            )
            result.update({"baseline": baseline, "candidate": name})
            relative_all.setdefault(name, {})[metric] = result
            if name == candidate:
                relative[metric] = result
    if recommender.get("relative_improvement"):
        relative["recommender.NDCG@10"] = recommender["relative_improvement"]

    # -- cost ---------------------------------------------------------------------------------
    cost_mode = config.cost.mode or ("guided" if "guided" in s.modes else s.modes[0])
    cost, api, cost_notes = _cost_section(
        config, hub, names, candidate, support_rows, cost_mode, prices, meter
    )

    summary: dict[str, Any] = {
        "models": metrics,
        "relative_improvement": relative,
        "cost": cost,
        "baseline": baseline,
        "candidate": candidate,
        "model_ci95": model_ci,
        "relative_improvement_all": relative_all,
        "api_prices": api,
        "recommender": recommender or {"skipped": skipped.get("recommender")},
        "skipped": skipped,
        "details": details,
        "per_task": per_task,
        "meta": _meta(config, hub, names, prices, timings, time.perf_counter() - started, cost_mode, meter),
    }
    summary["meta"]["cost_notes"] = cost_notes
    return summary


def _recsys_unavailable(r: RecsysConfig) -> str | None:
    if r.data is None:
        return "no ratings data: set recsys.data to a folder with a MovieLens-format ratings.csv"
    ratings = r.data / "ratings.csv" if r.data.is_dir() else r.data
    if not ratings.is_file():
        return f"no ratings.csv at {ratings}"
    return None


def _per_user_ndcg(model: Any, split: Any, stage: str, k: int = 10, batch: int = 256) -> np.ndarray:
    """NDCG@k of each evaluated user's target (same ranking rules as ``concierge.evals.recsys.evaluate``)."""
    from concierge.evals.recsys import rank_targets

    users = split.eval_users(stage)
    ranks = []
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        hists = split.histories(stage, chunk)
        scores = np.array(model.score(hists), dtype=np.float64, copy=True)
        scores[np.isnan(scores)] = -np.inf
        ranks.append(rank_targets(scores, hists, split.targets(stage, chunk)))
    rank = np.concatenate(ranks) if ranks else np.array([], dtype=np.float64)
    return np.where(rank <= k, 1.0 / np.log2(rank + 1.0), 0.0)


def _run_recsys(
    r: RecsysConfig, resamples: int, seed: int, tick: Callable[[int, int], None]
) -> dict[str, Any]:
    from concierge.evals.recsys import leave_last_out, load_ratings_csv, split_summary
    from concierge.shop.recommend import make_model, torch_available

    notes: list[str] = []
    in_house = list(r.in_house)
    if "sasrec" in in_house and not torch_available():
        in_house.remove("sasrec")
        notes.append("SASRec left out: torch is not installed (pip install 'concierge[train]')")
    if not in_house:
        return {"skipped": "; ".join(notes) or "no in-house recommender to evaluate"}
    split = leave_last_out(load_ratings_csv(r.data))  # type: ignore[arg-type]
    names = [*r.off_the_shelf, *in_house]
    results: dict[str, Any] = {}
    test_ndcg: dict[str, np.ndarray] = {}
    valid_ndcg: dict[str, float] = {}
    for i, name in enumerate(names):
        model = make_model(name, epochs=r.sasrec_epochs, seed=r.seed)
        t0 = time.perf_counter()
        model.fit(split)
        fit_seconds = time.perf_counter() - t0
        valid_ndcg[name] = float(_per_user_ndcg(model, split, "valid").mean())
        test_ndcg[name] = _per_user_ndcg(model, split, "test")
        results[name] = {
            "NDCG@10": round(float(test_ndcg[name].mean()), 4),
            "ci95": bootstrap_ci(test_ndcg[name], resamples=resamples, seed=seed),
            "valid_NDCG@10": round(valid_ndcg[name], 4),
            "train_seconds": round(fit_seconds, 2),
            "role": "off-the-shelf" if name in r.off_the_shelf else "in-house",
        }
        tick(i + 1, len(names))
    best = max(in_house, key=lambda n: valid_ndcg[n])
    versus = {}
    for base in r.off_the_shelf:
        res = paired_bootstrap(test_ndcg[base], test_ndcg[best], resamples=resamples, seed=seed)
        res.update({"baseline": base, "candidate": best})
        versus[base] = res
    main = dict(versus[r.baseline])
    main["label"] = (
        f"recommender (not a chat model): in-house {best} vs off-the-shelf {r.baseline}, "
        "NDCG@10 on leave-last-out test targets"
    )
    return {
        "label": "Recommender NDCG@10: concierge's own recommenders vs off-the-shelf baselines. "
        "Not a property of the chat models above.",
        "data": str(r.data),
        "split": split_summary(split),
        "models": results,
        "candidate": best,
        "candidate_rule": "in-house recommender with the best validation NDCG@10",
        "baseline": r.baseline,
        "versus": versus,
        "relative_improvement": main,
        "notes": notes,
    }


def _support_usage(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    rows = list(rows)
    return {
        "conversations": len(rows),
        "resolved": sum(1 for row in rows if row.get("success")),
        "prompt_tokens": sum(int(row.get("prompt_tokens", 0)) for row in rows),
        "completion_tokens": sum(int(row.get("completion_tokens", 0)) for row in rows),
        "engine_seconds": sum(float(row.get("model_seconds", 0.0)) for row in rows),
    }


def _cost_section(
    config: ReportConfig,
    hub: Any,
    names: list[str],
    candidate: str | None,
    support_rows: dict[tuple[str, str], list[dict[str, Any]]],
    mode: str,
    prices: dict[str, Any],
    meter: _Meter,
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    cc = config.cost
    cost: dict[str, Any] = {}
    notes: list[str] = []
    endpoints = {e.name: e for e in config.endpoints}
    for name in names:
        rows = support_rows.get((mode, name))
        if rows is None:
            cost[name] = {
                "usd_per_1m_output_tokens": None,
                "usd_per_resolved_conversation": None,
                "reason": f"no support conversations in {mode} mode were run to measure",
            }
            continue
        u = _support_usage(rows)
        if name in endpoints:
            row_id = endpoints[name].price or endpoints[name].model
            row = prices["rows"].get(row_id)
            entry: dict[str, Any] = {
                "kind": "api",
                "usd_per_1m_output_tokens": None,
                "usd_per_resolved_conversation": None,
                "price_row": row_id,
                **{k: u[k] for k in ("conversations", "resolved", "prompt_tokens", "completion_tokens")},
            }
            if row is None:
                entry["reason"] = f"no row {row_id!r} in the price table (set price: on the endpoint)"
            else:
                total = api_usd(u["prompt_tokens"], u["completion_tokens"], row)
                entry["usd_per_1m_output_tokens"] = row["output"]
                entry["usd_per_1m_input_tokens"] = row["input"]
                entry["price_as_of"] = row["as_of"]
                entry["usd_per_conversation"] = (
                    round(total / u["conversations"], 8) if u["conversations"] else None
                )
                if u["resolved"]:
                    entry["usd_per_resolved_conversation"] = round(total / u["resolved"], 8)
                else:
                    entry["reason"] = "no conversation was resolved, so a resolved one has no price"
            cost[name] = entry
            continue
        entry = self_hosted_cost(
            completion_tokens=int(u["completion_tokens"]),
            prompt_tokens=int(u["prompt_tokens"]),
            engine_seconds=u["engine_seconds"],
            conversations=int(u["conversations"]),
            resolved=int(u["resolved"]),
            hourly_usd=cc.hourly_usd,
            utilisation=cc.utilisation,
        )
        entry["measured_on"] = f"support {mode} conversations of this report"
        overall = meter.summary().get(name, {})
        if overall:
            entry["tokens_per_second_by_evaluation"] = {
                phase: v.get("tokens_per_second") for phase, v in overall.items()
            }
        cost[name] = entry

    # The self-hosted reference that the price table is set against.
    reference = candidate if candidate and cost.get(candidate, {}).get("kind") == "self-hosted" else None
    if reference is None:
        reference = next((n for n in names if cost.get(n, {}).get("kind") == "self-hosted"), None)
    api: dict[str, Any] = {
        "as_of": prices["as_of"],
        "source_file": prices["path"],
        "warning": "list prices change: check each row's source before quoting these figures",
        "reference_model": reference,
        "rows": {},
    }
    ref = cost.get(reference or "", {})
    if not reference or not ref.get("conversations") or not ref.get("tokens_per_second"):
        api["reason"] = "no self-hosted model with measured support conversations to compare with"
        for row_id, row in prices["rows"].items():
            api["rows"][row_id] = {**row, "usd_per_conversation": None, "break_even": None}
        return cost, api, notes
    n_conv = ref["conversations"]
    prompt_per = ref["prompt_tokens"] / n_conv
    completion_per = ref["completion_tokens"] / n_conv
    engine_per = ref["engine_seconds"] / n_conv
    api["token_basis"] = {
        "model": reference,
        "prompt_tokens_per_conversation": round(prompt_per, 1),
        "completion_tokens_per_conversation": round(completion_per, 1),
        "engine_seconds_per_conversation": round(engine_per, 4),
        "note": "API cost of the same conversations at their measured token counts; an API model "
        "driven with its own prompts would use a different number of tokens",
    }
    for row_id, row in prices["rows"].items():
        per_conv = api_usd(prompt_per, completion_per, row)
        api["rows"][row_id] = {
            **row,
            "usd_per_conversation": round(per_conv, 8),
            "break_even": break_even(
                api_usd_per_conversation=per_conv,
                engine_seconds_per_conversation=engine_per,
                hourly_usd=cc.hourly_usd,
                utilisation=cc.utilisation,
                marginal_usd_per_hour=cc.marginal_usd_per_hour,
                hours_per_month=cc.hours_per_month,
            ),
        }
    notes.append(
        "self-hosted cost uses single-stream speed measured on this machine; a server batching many "
        "conversations at once produces more tokens per second and costs less per token"
    )
    return cost, api, notes


def _meta(
    config: ReportConfig,
    hub: Any,
    names: list[str],
    prices: dict[str, Any],
    timings: dict[str, float],
    seconds: float,
    cost_mode: str,
    meter: _Meter,
) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        concierge_version: str | None = version("concierge")
    except PackageNotFoundError:
        concierge_version = None
    cards = {}
    for name in names:
        try:
            card = hub.card(name)
            cards[name] = {
                "engine": card.engine,
                "catalogue_id": card.catalogue_id,
                "source": card.source,
                "in_house": card.in_house,
            }
        except Exception:  # noqa: BLE001
            cards[name] = {}
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "concierge_version": concierge_version,
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor() or None,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "models": cards,
        "config": config.to_dict(),
        "price_table": {"path": prices["path"], "as_of": prices["as_of"]},
        "cost_mode": cost_mode,
        "seconds": round(seconds, 1),
        "step_seconds": timings,
        "model_calls": meter.summary(),
        "metric_notes": {
            "support.<mode>.pass^k": "τ² scoring (final database equals the gold replay's and every "
            "communicate_info string said), scripted customer",
            "commands.intent_accuracy": "exact intent of the guided-mode command",
            "commands.slot_f1": "micro F1 of (slot, value) pairs",
            "shop.constraint_satisfaction": "share of written requests answered within their hard constraints",
        },
    }


# --------------------------------------------------------------------------- HTML


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _metrics_plot(summary: Mapping[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    models = list(summary.get("models") or {})
    metric_names = sorted({m for v in summary["models"].values() for m in v})
    if not models or not metric_names:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(metric_names) + 2), 4.0))
    width = 0.8 / len(models)
    x = np.arange(len(metric_names))
    for i, name in enumerate(models):
        values = [summary["models"][name].get(m, np.nan) for m in metric_names]
        cis = [(summary.get("model_ci95") or {}).get(name, {}).get(m) for m in metric_names]
        low = [v - ci[0] if ci and not math.isnan(v) else 0 for v, ci in zip(values, cis, strict=True)]
        high = [ci[1] - v if ci and not math.isnan(v) else 0 for v, ci in zip(values, cis, strict=True)]
        ax.bar(
            x + (i - (len(models) - 1) / 2) * width,
            values,
            width,
            yerr=[np.maximum(low, 0), np.maximum(high, 0)],
            capsize=3,
            label=name,
        )
    ax.set_xticks(x)
    ax.set_xticklabels(metric_names, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% bootstrap CI)")
    ax.set_title("Held-out evaluations per model")
    ax.legend()
    return _png(fig)


def _relative_plot(summary: Mapping[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    rows = [
        (m, r) for m, r in (summary.get("relative_improvement") or {}).items() if r.get("value") is not None
    ]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.0, 0.6 * len(rows) + 1.5))
    y = np.arange(len(rows))
    values = [100 * r["value"] for _, r in rows]
    err_low = [100 * (r["value"] - r["ci95"][0]) if r.get("ci95") else 0 for _, r in rows]
    err_high = [100 * (r["ci95"][1] - r["value"]) if r.get("ci95") else 0 for _, r in rows]
    colors = ["tab:green" if v >= 0 else "tab:red" for v in values]
    ax.barh(y, values, xerr=[np.maximum(err_low, 0), np.maximum(err_high, 0)], capsize=4, color=colors)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y)
    # Rows comparing other things (the recommender section) name their own pair.
    ax.set_yticklabels(
        [
            m
            if r.get("candidate") == summary.get("candidate")
            else f"{m}\n({r.get('candidate')} vs {r.get('baseline')})"
            for m, r in rows
        ]
    )
    ax.set_xlabel("relative improvement, % (95% paired bootstrap CI)")
    ax.set_title(f"{summary.get('candidate')} vs {summary.get('baseline')}")
    return _png(fig)


def _cost_plot(summary: Mapping[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    bars: list[tuple[str, float, str]] = []
    for name, entry in (summary.get("cost") or {}).items():
        if entry.get("usd_per_resolved_conversation"):
            bars.append((f"{name}\n(per resolved)", entry["usd_per_resolved_conversation"], "tab:blue"))
        if entry.get("usd_per_conversation"):
            bars.append((f"{name}\n(per conversation)", entry["usd_per_conversation"], "tab:cyan"))
    for row_id, row in ((summary.get("api_prices") or {}).get("rows") or {}).items():
        if row.get("usd_per_conversation"):
            bars.append((f"{row_id}\n(API, same tokens)", row["usd_per_conversation"], "tab:orange"))
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(max(7.0, 0.8 * len(bars)), 4.5))
    ax.bar(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
    ax.set_yscale("log")
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([b[0] for b in bars], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("US$ per conversation (log scale)")
    as_of = (summary.get("api_prices") or {}).get("as_of")
    ax.set_title(f"Self-hosted cost vs API list prices (as of {as_of})")
    return _png(fig)


def _break_even_plot(summary: Mapping[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    api = summary.get("api_prices") or {}
    rows = {k: v for k, v in (api.get("rows") or {}).items() if v.get("break_even")}
    if not rows:
        return None
    first = next(iter(rows.values()))["break_even"]
    fixed = first["fixed_usd_per_month"]
    marginal = first["marginal_usd_per_conversation"]
    capacity = first.get("capacity_conversations_per_month") or 1e7
    volumes = np.logspace(1, math.log10(max(capacity, 100.0)), 200)
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    ax.plot(
        volumes, fixed + marginal * volumes, color="black", linewidth=2.5, label="self-hosted, one machine"
    )
    palette = plt.get_cmap("tab20")
    for i, (row_id, row) in enumerate(rows.items()):
        (line,) = ax.plot(
            volumes, row["usd_per_conversation"] * volumes, linewidth=1, label=row_id, color=palette(i % 20)
        )
        point = row["break_even"].get("conversations_per_month")
        if point:
            ax.scatter([point], [fixed + marginal * point], color=line.get_color(), zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("conversations per month (up to one machine's capacity)")
    ax.set_ylabel("US$ per month")
    ax.set_title(f"Break-even volume vs APIs ({api.get('reference_model')}, dots = break-even)")
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def _recsys_plot(summary: Mapping[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    models = (summary.get("recommender") or {}).get("models") or {}
    if not models:
        return None
    names = list(models)
    values = [models[n]["NDCG@10"] for n in names]
    cis = [models[n].get("ci95") or [v, v] for n, v in zip(names, values, strict=True)]
    colors = ["tab:gray" if models[n]["role"] == "off-the-shelf" else "tab:purple" for n in names]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.bar(
        names,
        values,
        yerr=[
            [max(v - c[0], 0) for v, c in zip(values, cis, strict=True)],
            [max(c[1] - v, 0) for v, c in zip(values, cis, strict=True)],
        ],
        capsize=4,
        color=colors,
    )
    ax.set_ylabel("NDCG@10 (95% bootstrap CI)")
    ax.set_title("Recommenders (grey: off-the-shelf, purple: in-house)")
    return _png(fig)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if value != 0 and abs(value) < 0.01:
            return f"{value:.3g}"
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(data: str | None, alt: str) -> str:
    if not data:
        return f"<p class='note'>No data to plot for {html.escape(alt)}.</p>"
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def render_html(summary: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page (plots embedded as base64 PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    meta = summary.get("meta") or {}
    models = summary.get("models") or {}
    metric_names = sorted({m for v in models.values() for m in v})
    cis = summary.get("model_ci95") or {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>concierge proof report</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}.note{color:#666}"
        "img{max-width:100%}</style></head><body>",
        "<h1>concierge proof report</h1>",
        f"<p class='note'>Generated {_fmt(meta.get('generated_at'))} on {_fmt((meta.get('machine') or {}).get('platform'))}"
        f" ({_fmt((meta.get('machine') or {}).get('cpus'))} CPUs) in {_fmt(meta.get('seconds'))} s. Baseline "
        f"<b>{_fmt(summary.get('baseline'))}</b>, candidate <b>{_fmt(summary.get('candidate'))}</b>.</p>",
        "<h2>Held-out evaluations</h2>",
        _table(
            ["model", *metric_names],
            [
                [
                    name,
                    *[f"{_fmt(models[name].get(m))} {_fmt(cis.get(name, {}).get(m))}" for m in metric_names],
                ]
                for name in models
            ],
        ),
        "<p class='note'>Each cell: score, then its 95% bootstrap interval over tasks.</p>",
        _img(_metrics_plot(summary), "metrics per model"),
        "<h2>Relative improvement</h2>",
        _table(
            ["metric", "baseline", "candidate", "relative", "95% CI", "absolute", "n", "note"],
            [
                [
                    m,
                    r.get("baseline_value"),
                    r.get("candidate_value"),
                    None if r.get("value") is None else f"{100 * r['value']:+.1f}%",
                    r.get("ci95"),
                    (r.get("absolute") or {}).get("value"),
                    r.get("n"),
                    r.get("reason") or r.get("label") or "",
                ]
                for m, r in (summary.get("relative_improvement") or {}).items()
            ],
        ),
        _img(_relative_plot(summary), "relative improvement"),
        "<h2>Cost</h2>",
        _table(
            [
                "model",
                "kind",
                "tokens/s",
                "$ / 1M output tokens",
                "$ / conversation",
                "$ / resolved conversation",
                "note",
            ],
            [
                [
                    name,
                    e.get("kind"),
                    e.get("tokens_per_second"),
                    e.get("usd_per_1m_output_tokens"),
                    e.get("usd_per_conversation"),
                    e.get("usd_per_resolved_conversation"),
                    e.get("reason") or "",
                ]
                for name, e in (summary.get("cost") or {}).items()
            ],
        ),
    ]
    api = summary.get("api_prices") or {}
    cfg_cost = ((meta.get("config") or {}).get("cost")) or {}
    parts.append(
        f"<p class='note'>Hardware: ${_fmt(cfg_cost.get('hourly_usd'))}/hour at {_fmt(cfg_cost.get('utilisation'))} "
        f"utilisation. API prices from {_fmt(api.get('source_file'))}, as of {_fmt(api.get('as_of'))}: "
        f"{_fmt(api.get('warning'))}. {_fmt((api.get('token_basis') or {}).get('note'))}.</p>"
    )
    parts.append(
        _table(
            [
                "API",
                "provider",
                "$ / 1M in",
                "$ / 1M out",
                "as of",
                "$ / conversation",
                "break-even conv./month",
                "note",
            ],
            [
                [
                    row_id,
                    row.get("provider"),
                    row.get("input"),
                    row.get("output"),
                    row.get("as_of"),
                    row.get("usd_per_conversation"),
                    (row.get("break_even") or {}).get("conversations_per_month"),
                    (row.get("break_even") or {}).get("reason") or "",
                ]
                for row_id, row in (api.get("rows") or {}).items()
            ],
        )
    )
    parts.append(_img(_cost_plot(summary), "cost per conversation"))
    parts.append(_img(_break_even_plot(summary), "break-even"))
    rec = summary.get("recommender") or {}
    parts.append("<h2>Recommender (not a chat model)</h2>")
    if rec.get("models"):
        parts.append(f"<p>{_fmt(rec.get('label'))}</p>")
        parts.append(
            _table(
                ["recommender", "role", "NDCG@10", "95% CI", "validation NDCG@10", "train s"],
                [
                    [
                        n,
                        e.get("role"),
                        e.get("NDCG@10"),
                        e.get("ci95"),
                        e.get("valid_NDCG@10"),
                        e.get("train_seconds"),
                    ]
                    for n, e in rec["models"].items()
                ],
            )
        )
        parts.append(_img(_recsys_plot(summary), "recommenders"))
    else:
        parts.append(f"<p class='note'>Skipped: {_fmt(rec.get('skipped'))}</p>")
    skipped = summary.get("skipped") or {}
    if skipped:
        parts.append("<h2>Skipped</h2>")
        parts.append(_table(["evaluation", "reason"], skipped.items()))
    parts.append("<h2>Run</h2>")
    parts.append(_table(["step", "seconds"], (meta.get("step_seconds") or {}).items()))
    parts.append(
        "<details><summary>Configuration</summary><pre>"
        + html.escape(json.dumps(meta.get("config"), indent=1, ensure_ascii=False))
        + "</pre></details></body></html>"
    )
    return "\n".join(parts)


def write_html(summary: Mapping[str, Any], path: str | Path) -> Path:
    """Write :func:`render_html` of ``summary`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(summary), encoding="utf-8")
    return path


def write_json(summary: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path
