"""Cost: the dated API price table, self-hosted cost from measured conversations, break-even volume,
the hub observer that meters model calls, and the report's cost section."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from concierge.evals.report.config import HOURS_PER_MONTH, PRICES_PATH, ReportConfig, ReportConfigError

if TYPE_CHECKING:
    from concierge.models.engine import Hub
    from concierge.models.hub import CallRecord


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


class Meter:
    """Hub observer: completion tokens and engine seconds per (phase, alias), for tokens/s."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.totals: dict[tuple[str, str], dict[str, float]] = {}

    def __call__(self, record: CallRecord) -> None:
        if record.endpoint != "chat":
            return
        row = self.totals.setdefault(
            (self.phase, record.alias),
            {"calls": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0},
        )
        row["calls"] += 1
        row["errors"] += int(bool(record.error))
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


def _support_usage(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    rows = list(rows)
    return {
        "conversations": len(rows),
        "resolved": sum(1 for row in rows if row.get("success")),
        "prompt_tokens": sum(int(row.get("prompt_tokens", 0)) for row in rows),
        "completion_tokens": sum(int(row.get("completion_tokens", 0)) for row in rows),
        "engine_seconds": sum(float(row.get("model_seconds", 0.0)) for row in rows),
    }


def cost_section(
    config: ReportConfig,
    hub: Hub,
    names: list[str],
    candidate: str | None,
    support_rows: dict[tuple[str, str], list[dict[str, Any]]],
    mode: str,
    prices: dict[str, Any],
    meter: Meter,
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
