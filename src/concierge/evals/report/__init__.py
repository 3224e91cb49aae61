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

Modules: :mod:`.config` (the YAML config), :mod:`.statistics` (bootstrap intervals, pass^k),
:mod:`.cost` (price table, self-hosted cost, break-even), :mod:`.shop_checks` (hard constraints of
written shopper requests), :mod:`.run` (the evaluation steps and the summary), :mod:`.html` (HTML and
JSON output).
"""

from __future__ import annotations

from concierge.evals.report.config import (
    EVALUATIONS,
    HOURS_PER_MONTH,
    MODES,
    PRICES_PATH,
    RECSYS_IN_HOUSE,
    RECSYS_OFF_THE_SHELF,
    RESAMPLES,
    CommandsConfig,
    CostConfig,
    Endpoint,
    Progress,
    RecsysConfig,
    ReportConfig,
    ReportConfigError,
    ShopConfig,
    SupportConfig,
)
from concierge.evals.report.cost import (
    Meter,
    api_usd,
    break_even,
    load_prices,
    self_hosted_cost,
    usd_per_1m_output_tokens,
)
from concierge.evals.report.html import render_html, write_html, write_json
from concierge.evals.report.run import run_report
from concierge.evals.report.shop_checks import check_shop_answer, constraint_problems
from concierge.evals.report.statistics import STATS, bootstrap_ci, paired_bootstrap, pass_k_per_task
from concierge.evals.report.steps import resolve_support_inputs

__all__ = [
    "EVALUATIONS",
    "HOURS_PER_MONTH",
    "MODES",
    "PRICES_PATH",
    "RECSYS_IN_HOUSE",
    "RECSYS_OFF_THE_SHELF",
    "RESAMPLES",
    "STATS",
    "CommandsConfig",
    "CostConfig",
    "Endpoint",
    "Meter",
    "Progress",
    "RecsysConfig",
    "ReportConfig",
    "ReportConfigError",
    "ShopConfig",
    "SupportConfig",
    "api_usd",
    "bootstrap_ci",
    "break_even",
    "check_shop_answer",
    "constraint_problems",
    "load_prices",
    "paired_bootstrap",
    "pass_k_per_task",
    "render_html",
    "resolve_support_inputs",
    "run_report",
    "self_hosted_cost",
    "usd_per_1m_output_tokens",
    "write_html",
    "write_json",
]
