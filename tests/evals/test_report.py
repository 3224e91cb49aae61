"""The proof report: bootstrap intervals, cost formulas by hand, the dated price table, config errors,
a report over a tiny random model from a small evaluation (JSON shape, HTML with plots), and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from concierge.evals.report import (
    PRICES_PATH,
    CommandsConfig,
    CostConfig,
    Endpoint,
    RecsysConfig,
    ReportConfig,
    ReportConfigError,
    ShopConfig,
    SupportConfig,
    api_usd,
    bootstrap_ci,
    break_even,
    load_prices,
    paired_bootstrap,
    pass_k_per_task,
    run_report,
    self_hosted_cost,
    usd_per_1m_output_tokens,
    write_html,
)
from concierge.shop.demo_store import DEMO_REQUESTS

SHOP_REQUESTS = DEMO_REQUESTS
RETAIL_TASK = {
    "id": "exchange-keyboard",
    "user_scenario": {
        "instructions": {
            "reason_for_call": "You received your order #W2378156 and wish to exchange the keyboard.",
            "known_info": "You are Yusuf Rossi in zip code 19122.",
            "unknown_info": "You do not remember your email address.",
            "task_instructions": "You are detail-oriented.",
        }
    },
    "evaluation_criteria": {
        "actions": [
            {
                "action_id": "a0",
                "name": "exchange_delivered_order_items",
                "arguments": {
                    "order_id": "#W2378156",
                    "item_ids": ["1151293680"],
                    "new_item_ids": ["7706410293"],
                    "payment_method_id": "credit_card_9513926",
                },
            }
        ],
        "communicate_info": [],
    },
}


# --------------------------------------------------------------------------------------------------
# Statistics


def test_paired_bootstrap_contains_the_point_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    base = (rng.random(60) < 0.3).astype(float)
    cand = np.maximum(base, (rng.random(60) < 0.25).astype(float))  # the candidate wins a few more tasks
    result = paired_bootstrap(base, cand, resamples=2000, seed=0)
    assert result["value"] == pytest.approx(cand.mean() / base.mean() - 1, abs=1e-4)
    lo, hi = result["ci95"]
    assert lo <= result["value"] <= hi
    assert lo > 0  # the candidate is never worse on any task, so every resample improves or ties
    assert result["absolute"]["value"] == pytest.approx(cand.mean() - base.mean(), abs=1e-4)
    assert result["n"] == 60 and result["resamples"] == 2000
    assert paired_bootstrap(base, cand, resamples=2000, seed=0) == result  # fixed seed


def test_zero_baseline_gives_null_with_a_reason_not_inf() -> None:
    result = paired_bootstrap([0, 0, 0, 0], [1, 0, 1, 0])
    assert result["value"] is None and result["ci95"] is None
    assert "baseline scores 0" in result["reason"]
    assert result["absolute"]["value"] == 0.5
    json.dumps(result, allow_nan=False)  # nothing infinite or NaN leaks into the JSON
    # A baseline that is zero in some resamples only: those resamples are counted, not divided by.
    partial = paired_bootstrap([1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], resamples=500)
    assert partial["value"] == pytest.approx(2.0)
    assert partial["undefined_resamples"] > 0


def test_micro_f1_statistic_matches_command_accuracy() -> None:
    from concierge.train.evaluate import _rates

    rows = [[2, 1, 0], [0, 0, 3], [1, 2, 1]]
    expected = _rates({"n": 3, "intent": 0, "tp": 3, "fp": 3, "fn": 4})["slot_f1"]
    result = paired_bootstrap(rows, rows, "micro_f1", resamples=200)
    assert result["baseline_value"] == pytest.approx(expected, abs=1e-4)
    assert result["value"] == 0.0
    ci = bootstrap_ci(rows, "micro_f1", resamples=200)
    assert ci is not None and ci[0] <= expected <= ci[1]


def test_pass_k_per_task_is_taus_term() -> None:
    assert pass_k_per_task([2, 1, 0], 2, 1) == [1.0, 0.5, 0.0]
    assert pass_k_per_task([3], 4, 2) == [0.5]


# --------------------------------------------------------------------------------------------------
# Cost, by hand


def test_self_hosted_cost_formulas_by_hand() -> None:
    # 36,000 tokens generated in 600 engine seconds = 60 tokens/s; $0.90/h at 50 % utilisation.
    cost = self_hosted_cost(
        completion_tokens=36_000,
        prompt_tokens=90_000,
        engine_seconds=600.0,
        conversations=40,
        resolved=12,
        hourly_usd=0.90,
        utilisation=0.5,
    )
    per_million = 0.90 / 0.5 / (60 * 3600) * 1e6  # = 8.3333...
    assert cost["tokens_per_second"] == 60.0
    assert cost["usd_per_1m_output_tokens"] == pytest.approx(per_million, rel=1e-6)
    assert usd_per_1m_output_tokens(0.90, 0.5, 60.0) == pytest.approx(8.333333, rel=1e-6)
    # 36,000 tokens / 12 resolved = 3,000 tokens per resolved conversation.
    assert cost["usd_per_resolved_conversation"] == pytest.approx(3000 * per_million / 1e6, rel=1e-6)
    # ... which is the engine time of a resolved conversation at the machine's effective price.
    assert cost["usd_per_resolved_conversation"] == pytest.approx(600 / 12 * 0.90 / 0.5 / 3600, rel=1e-6)
    assert cost["usd_per_conversation"] == pytest.approx(900 * per_million / 1e6, rel=1e-6)
    nothing = self_hosted_cost(
        completion_tokens=500,
        prompt_tokens=0,
        engine_seconds=10.0,
        conversations=3,
        resolved=0,
        hourly_usd=1.0,
        utilisation=1.0,
    )
    assert nothing["usd_per_resolved_conversation"] is None and "resolved" in nothing["reason"]
    assert nothing["usd_per_1m_output_tokens"] is not None


def test_api_cost_and_break_even_by_hand() -> None:
    row = {"input": 2.0, "output": 8.0}
    assert api_usd(10_000, 500, row) == pytest.approx((10_000 * 2 + 500 * 8) / 1e6)
    # $0.90/h x 730 h = $657 a month; the API costs $0.05 a conversation: 13,140 conversations.
    result = break_even(
        api_usd_per_conversation=0.05, engine_seconds_per_conversation=15.0, hourly_usd=0.90, utilisation=0.5
    )
    assert result["fixed_usd_per_month"] == pytest.approx(657.0)
    assert result["conversations_per_month"] == pytest.approx(13_140.0)
    assert result["capacity_conversations_per_month"] == pytest.approx(0.5 * 730 * 3600 / 15)
    # A marginal (power) cost per conversation lowers the saving: 657 / (0.05 - 0.01).
    with_power = break_even(
        api_usd_per_conversation=0.05,
        engine_seconds_per_conversation=36.0,
        hourly_usd=0.90,
        utilisation=0.5,
        marginal_usd_per_hour=1.0,
    )
    assert with_power["conversations_per_month"] == pytest.approx(657 / 0.04)


def test_break_even_is_null_when_the_api_is_cheaper() -> None:
    # Self-hosted: 15 s of a $0.90/h machine at 50 % = $0.0075 a conversation; the API asks $0.001.
    cheap = break_even(
        api_usd_per_conversation=0.001, engine_seconds_per_conversation=15.0, hourly_usd=0.90, utilisation=0.5
    )
    assert cheap["conversations_per_month"] is None and "never" in cheap["reason"]
    free_power = break_even(
        api_usd_per_conversation=0.001,
        engine_seconds_per_conversation=15.0,
        hourly_usd=0.90,
        utilisation=0.5,
        marginal_usd_per_hour=3600.0,  # $15 of power per conversation: dearer than the API
    )
    assert free_power["conversations_per_month"] is None and "never" in free_power["reason"]


def test_price_table_is_dated_and_sourced() -> None:
    text = PRICES_PATH.read_text(encoding="utf-8")
    assert "PRICES CHANGE" in text
    prices = load_prices()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", prices["as_of"])
    assert {
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4o",
        "claude-sonnet-4",
        "gemini-2.5-flash",
        "deepseek-chat",
    } <= set(prices["rows"])
    for row_id, row in prices["rows"].items():
        assert row["output"] >= row["input"] > 0, row_id
        assert row["source"].startswith("https://") and row["as_of"], row_id


# --------------------------------------------------------------------------------------------------
# Config


def test_config_from_yaml_resolves_paths_and_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "report.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [
                    "support-agent",
                    "retail-inhouse",
                    {
                        "name": "gpt",
                        "base_url": "https://api.openai.com/v1/",
                        "model": "gpt-4.1-mini",
                        "api_key_env": "OPENAI_API_KEY",
                    },
                ],
                "baseline": "support-agent",
                "support": {"domain": "retail", "data_dir": "data/tau2", "modes": ["guided", "agent"]},
                "cost": {"hourly_usd": 2, "utilisation": 0.25},
                "recsys": False,
            }
        )
    )
    config = ReportConfig.from_yaml(path)
    assert config.model_names == ["support-agent", "retail-inhouse", "gpt"]
    assert config.endpoints == [
        Endpoint("gpt", "https://api.openai.com/v1", "gpt-4.1-mini", api_key_env="OPENAI_API_KEY")
    ]
    assert config.endpoints[0].alias_spec()["served_name"] == "gpt-4.1-mini"
    assert config.support.data_dir == tmp_path / "data" / "tau2"
    assert config.support.modes == ("guided", "agent")
    assert config.cost.hourly_usd == 2.0 and config.recsys.enabled is False
    json.dumps(config.to_dict())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"modles": ["a"]}, "did you mean 'models'"),
        ({"models": []}, "at least one model"),
        ({"models": ["a", "a"]}, "listed twice"),
        ({"models": ["a", "b"], "baseline": "c"}, "not one of the models"),
        ({"support": {"modes": ["chat"]}}, "support.modes"),
        ({"cost": {"utilisation": 1.5}}, "utilisation"),
        ({"cost": {"hourly_usd": "cheap"}}, "expected a number"),
        ({"models": [{"name": "x", "base_url": "ftp://h", "model": "m"}]}, "http://"),
        ({"recsys": {"baseline": "sasrec"}}, "recsys.baseline"),
    ],
)
def test_config_errors_are_one_clear_line(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ReportConfigError, match=re.escape(message)) as info:
        ReportConfig.from_dict(data)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# A report from a small evaluation, over a tiny random model


def _tiny_deployment(tmp_path: Path, gguf: Path) -> Path:
    settings = {"gguf": str(gguf), "n_ctx": 2048, "n_parallel": 1, "threads": 1}
    path = tmp_path / "deployment.yaml"
    path.write_text(
        yaml.safe_dump(
            {"models": {"tiny-base": settings, "tiny-inhouse": {**settings, "in_house": True}}},
        )
    )
    return path


@pytest.fixture
def tiny_hub(tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from concierge.models.deployment import load_deployment
    from concierge.models.hub import ModelHub

    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    hub = ModelHub(load_deployment(_tiny_deployment(tmp_path, tiny_gguf), include_registry=False))
    yield hub
    hub.close()


def _command_examples(tmp_path: Path) -> Path:
    from concierge.support.guided import load_flows
    from concierge.support.tasks import task_from_tau2, task_from_v1
    from concierge.train.datasets import guided_examples, write_dataset

    v1_task = task_from_v1(
        {
            "user_id": "omar_anderson_3203",
            "instruction": "Your name is Omar Anderson and your zip code is 19031. "
            "Return #W6067464 via credit_card_4190576: Electric Kettle;",
            "actions": [
                {
                    "name": "return_delivered_order_items",
                    "kwargs": {
                        "order_id": "#W6067464",
                        "item_ids": ["1"],
                        "payment_method_id": "credit_card_4190576",
                    },
                }
            ],
            "outputs": [],
        },
        0,
        "train",
    )
    records = guided_examples([task_from_tau2(RETAIL_TASK), v1_task], load_flows("retail"))
    assert len(records) >= 3  # opening, identify, confirm ...
    path = tmp_path / "commands.jsonl"
    write_dataset(path, records)
    return path


def _ratings(tmp_path: Path) -> Path:
    """40 users walking a ring of 30 items in order: the next item follows the last one."""
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(40):
        for t in range(8):
            lines.append(f"{user},{(user + t) % 30},4.0,{1000 + t}")
    folder = tmp_path / "ratings"
    folder.mkdir()
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_report_from_a_small_evaluation(tmp_path: Path, tiny_hub: Any) -> None:
    config = ReportConfig(
        models=["tiny-base", "tiny-inhouse"],
        support=SupportConfig(
            domain="homestay", modes=("guided", "agent"), trials=2, limit=2, max_turns=4, max_steps=2
        ),
        commands=CommandsConfig(examples=_command_examples(tmp_path), domain="retail"),
        shop=ShopConfig(requests=SHOP_REQUESTS, limit=2, n_products=300, n_shoppers=20),
        recsys=RecsysConfig(data=_ratings(tmp_path), in_house=("itemknn-seq",)),
        cost=CostConfig(hourly_usd=0.9, utilisation=0.5),
        resamples=200,
    )
    ticks: list[tuple[int, int, str, int, int]] = []
    summary = run_report(config, tiny_hub, progress=lambda *a: ticks.append(a))

    # The shape.
    assert summary["baseline"] == "tiny-base" and summary["candidate"] == "tiny-inhouse"
    expected_metrics = {
        "support.guided.pass^1",
        "support.guided.pass^2",
        "support.agent.pass^1",
        "support.agent.pass^2",
        "commands.intent_accuracy",
        "commands.slot_f1",
        "shop.constraint_satisfaction",
    }
    for name in ("tiny-base", "tiny-inhouse"):
        assert set(summary["models"][name]) == expected_metrics
        assert all(0.0 <= v <= 1.0 for v in summary["models"][name].values())
    assert set(summary["relative_improvement"]) == expected_metrics | {"recommender.NDCG@10"}
    for metric, result in summary["relative_improvement"].items():
        assert set(result) >= {"value", "ci95"}, metric
        if result["value"] is None:
            assert result["reason"]
        elif result["ci95"] is not None:
            assert len(result["ci95"]) == 2
    for name in ("tiny-base", "tiny-inhouse"):
        cost = summary["cost"][name]
        assert set(cost) >= {"usd_per_1m_output_tokens", "usd_per_resolved_conversation"}
        assert cost["kind"] == "self-hosted" and cost["conversations"] == 4  # 2 tasks x 2 trials, guided
        # The figure comes from the measured tokens and engine seconds of the report's own runs.
        assert cost["tokens_per_second"] == pytest.approx(
            cost["completion_tokens"] / cost["engine_seconds"], rel=0.02
        )
        assert cost["usd_per_1m_output_tokens"] == pytest.approx(
            usd_per_1m_output_tokens(0.9, 0.5, cost["completion_tokens"] / cost["engine_seconds"]), rel=0.02
        )
    # Per-task vectors back every figure: same tasks, same order, for both models.
    guided = summary["per_task"]["support.guided.pass^1"]
    from concierge.support.domains.homestay import TASKS_PATH

    assert guided["ids"] == [t["id"] for t in json.loads(TASKS_PATH.read_text())[:2]]
    assert set(guided["by_model"]) == {"tiny-base", "tiny-inhouse"}
    # The recommender is its own, labelled section.
    rec = summary["recommender"]
    assert "Not a property of the chat models" in rec["label"]
    assert set(rec["models"]) == {"pop", "als", "itemknn-seq"} and rec["candidate"] == "itemknn-seq"
    assert rec["models"]["itemknn-seq"]["NDCG@10"] > rec["models"]["pop"]["NDCG@10"]
    # Prices and break-even against the in-house model's measured conversations.
    api = summary["api_prices"]
    assert api["reference_model"] == "tiny-inhouse" and api["as_of"]
    assert all("break_even" in row for row in api["rows"].values())
    assert summary["meta"]["generated_at"] and summary["meta"]["config"]["models"] == [
        "tiny-base",
        "tiny-inhouse",
    ]
    json.dumps(summary, allow_nan=False)
    # Progress: every step reported, the last one finished.
    assert ticks[-1][0] == ticks[-1][1] - 1 and ticks[-1][3] == ticks[-1][4]

    out = write_html(summary, tmp_path / "report.html")
    page = out.read_text(encoding="utf-8")
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)) >= 4
    assert "Recommender (not a chat model)" in page and api["as_of"] in page


def test_sections_without_inputs_are_skipped_with_reasons(tmp_path: Path, tiny_hub: Any) -> None:
    config = ReportConfig(
        models=["tiny-base", "tiny-inhouse"],
        support=SupportConfig(domain="homestay", limit=1, max_turns=2),
        commands=CommandsConfig(),  # homestay has no order ids: no examples can be built from its tasks
        shop=ShopConfig(requests=None),
        recsys=RecsysConfig(data=tmp_path / "missing"),
        resamples=100,
    )
    summary = run_report(config, tiny_hub)
    assert set(summary["skipped"]) == {"commands", "shop", "recommender"}
    assert "commands.examples" in summary["skipped"]["commands"]
    assert "shop.requests" in summary["skipped"]["shop"]
    assert "ratings.csv" in summary["skipped"]["recommender"]
    assert set(summary["models"]["tiny-base"]) == {"support.guided.pass^1"}


def test_report_on_tau2_retail_tasks(tmp_path: Path, tiny_hub: Any, shared_data: Path) -> None:
    tau2 = shared_data / "tau2"
    if not (tau2 / "retail" / "tasks_train.json").is_file():
        pytest.skip(f"no τ² retail tasks under {tau2}")
    config = ReportConfig(
        models=["tiny-base", "tiny-inhouse"],
        support=SupportConfig(domain="retail", data_dir=tau2, limit=2, max_turns=4),
        commands=CommandsConfig(limit=3),
        shop=ShopConfig(enabled=False),
        recsys=RecsysConfig(enabled=False),
        resamples=100,
    )
    summary = run_report(config, tiny_hub)
    assert summary["details"]["tiny-base"]["support.guided"]["n_tasks"] == 2
    assert "built from the 2 support tasks" in summary["details"]["tiny-base"]["commands"]["examples_source"]
    assert "commands.intent_accuracy" in summary["relative_improvement"]


# --------------------------------------------------------------------------------------------------
# CLI


def _app() -> typer.Typer:
    from concierge.commands.report import report

    app = typer.Typer()
    app.command()(report)
    return app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "0"], "--limit must be at least 1"),
        (["--trials", "0"], "--trials must be at least 1"),
        (["--skip", "bogus"], "--skip takes"),
        (["--config", "missing.yaml"], "report config not found"),
        (["--utilisation", "2"], "utilisation"),
        (["--modes", "chat"], "support.modes"),
        (["--domain", "homestay", "--skip", "shop,commands,recommender", "--models", "nope"], "'nope'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.delenv("CONCIERGE_CONFIG", raising=False)
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        _app(), ["--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"), *args]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_cli_bad_config_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "report.yaml"
    config.write_text("models: [a]\ncost: {hourly: 2}\n")
    result = CliRunner().invoke(
        _app(),
        ["--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"), "--config", str(config)],
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "cost.hourly" in result.stderr and "hourly_usd" in result.stderr


def test_cli_writes_json_and_html(tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCIERGE_CONFIG", str(_tiny_deployment(tmp_path, tiny_gguf)))
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    json_out, html_out = tmp_path / "out" / "report.json", tmp_path / "out" / "report.html"
    result = CliRunner().invoke(
        _app(),
        [
            "--json",
            str(json_out),
            "--html",
            str(html_out),
            "--models",
            "tiny-base,tiny-inhouse",
            "--domain",
            "homestay",
            "--limit",
            "2",
            "--skip",
            "recommender,commands",
            "--hourly-usd",
            "1.5",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(json_out.read_text())
    assert set(summary) >= {"models", "relative_improvement", "cost"}
    assert set(summary["models"]["tiny-inhouse"]) == {"support.guided.pass^1", "shop.constraint_satisfaction"}
    assert summary["meta"]["config"]["cost"]["hourly_usd"] == 1.5
    assert "data:image/png;base64," in html_out.read_text()
    assert "support.guided.pass^1" in result.stdout and "wrote" in result.stdout
