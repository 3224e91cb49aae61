"""scripts/proof_agent_modes.py: the pair figures, worked out by hand on a small evaluation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from helpers.paths import ROOT

spec = importlib.util.spec_from_file_location("proof_agent_modes", ROOT / "scripts" / "proof_agent_modes.py")
proof = importlib.util.module_from_spec(spec)
spec.loader.exec_module(proof)


def _result(
    model: str, wins: list[int], seconds: float, tokens: tuple[int, int], writes: dict[str, Any]
) -> dict:
    rows = [
        {
            "task_id": str(i),
            "success": w,
            "model_seconds": seconds,
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "tool_calls": 3,
            "refused": i % 2,
        }
        for i, w in enumerate(wins)
    ]
    return {
        "model": model,
        "mode": "agent",
        "pass^1": sum(wins) / len(wins),
        "floor": 0.25,
        "pass_labels": {"pass^1": "pass^1 (DB)"},
        "tokens_per_conversation": sum(tokens),
        "tasks": rows,
        "metrics": {
            "write_precision": writes["p"],
            "conversations_with_write": writes["n"],
            "harmful_write_rate": writes["h"],
        },
    }


def test_pair_figures_by_hand(tmp_path: Path) -> None:
    base = _result("shelf", [1, 0, 0, 0, 0, 0, 0, 0], 36.0, (1000, 100), {"p": 0.5, "n": 2, "h": 0.125})
    cand = _result("inhouse", [1, 1, 1, 0, 0, 0, 0, 0], 18.0, (2000, 200), {"p": 1.0, "n": 3, "h": 0.0})
    api = {"id": "gpt-4o", "input": 2.5, "output": 10.0, "as_of": "2025-08-01"}
    s = proof.summarise(base, cand, hourly_usd=0.10, utilisation=0.5, api=api, api_rate=0.5)
    assert s["ratio"]["value"] == pytest.approx(2.0)  # 3 resolved against 1 on the same 8 tasks
    lo, hi = s["ratio"]["ci95"]
    assert lo <= 2.0 <= hi
    # Self-hosted: 8 conversations x 18 s of engine over 3 resolved = 48 s; $0.10/h at 50 % -> $0.2/h.
    assert s["candidate"]["usd_per_resolved_conversation"] == pytest.approx(48 * 0.2 / 3600, rel=1e-3)
    assert s["baseline"]["usd_per_resolved_conversation"] == pytest.approx(8 * 36 * 0.2 / 3600, rel=1e-3)
    # API at the in-house token volume: (2000 x 2.5 + 200 x 10) / 1e6 = $0.007 a conversation, over
    # its published resolution rate 0.5 -> $0.014 a resolved one.
    assert s["api"]["usd_per_resolved_conversation"] == pytest.approx(0.014)
    assert (s["candidate"]["tool_calls"], s["candidate"]["refused_calls"]) == (24, 4)
    assert s["candidate"]["write_precision"] == 1.0 and s["baseline"]["harmful_write_rate"] == 0.125


def test_report_step_writes_table_json_and_plot(tmp_path: Path) -> None:
    nothing = _result("shelf", [0, 0, 0, 0], 10.0, (100, 10), {"p": None, "n": 0, "h": 0.0})
    some = _result("inhouse", [0, 1, 0, 0], 10.0, (100, 10), {"p": 1.0, "n": 1, "h": 0.0})
    for name, result in (("shelf", nothing), ("inhouse", some)):
        (tmp_path / f"retail-dev__agent-constrained__{name}.json").write_text(json.dumps(result))
    data = tmp_path / "data" / "tau2" / "retail"
    data.mkdir(parents=True)
    (data / "db.json").write_text("{}")
    argv = [
        "report",
        "--split",
        "retail-dev",
        "--out-dir",
        str(tmp_path),
        "--data-dir",
        str(tmp_path / "data"),
        "--pair",
        "agent-constrained:shelf:inhouse",
    ]
    assert proof.main(argv) == 0
    report = json.loads((tmp_path / "retail-dev_report.json").read_text())
    assert (
        "undefined (off-the-shelf resolves 0)" in report["table"] and "n/a (none resolved)" in report["table"]
    )
    assert (tmp_path / "retail-dev_report.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="no run for"):
        proof.main([*argv[:-1], "agent-constrained:shelf:missing"])
