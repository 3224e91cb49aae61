"""The report as HTML (plots embedded as PNG) and as JSON."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


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
