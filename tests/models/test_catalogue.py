"""The model catalogue data, its loader, and `concierge models list/show/check`."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from concierge.commands.models import app
from concierge.models.catalogue import (
    CATALOGUE_PATH,
    CatalogueError,
    close_matches,
    filter_entries,
    get_entry,
    load_catalogue,
    parse_catalogue,
)
from concierge.models.formats import FAMILY_FORMATS

runner = CliRunner(env={"COLUMNS": "200"})  # rich reads the width from COLUMNS

REQUIRED_IDS = [
    "qwen3-0.6b",
    "qwen3-4b",
    "qwen3-8b",
    "qwen3-32b",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "qwen3.5-397b-a17b",
    "qwen3.5-27b",
    "qwen2.5-0.5b-instruct",
    "qwen2.5-7b-instruct",
    "qwen2.5-72b-instruct",
    "deepseek-r1-distill-qwen-1.5b",
    "deepseek-r1-distill-qwen-7b",
    "deepseek-r1-distill-llama-8b",
    "deepseek-v3",
    "deepseek-v3.1",
    "kimi-k2",
    "glm-4.5",
    "glm-4.5-air",
    "glm-5",
    "minimax-m1",
    "minimax-m2",
    "gpt-oss-20b",
    "gpt-oss-120b",
    "llama-3.1-8b-instruct",
    "llama-3.1-70b-instruct",
    "llama-3.2-1b-instruct",
    "llama-3.2-3b-instruct",
    "gemma-3-1b-it",
    "gemma-3-4b-it",
    "gemma-3-27b-it",
    "smollm2-135m-instruct",
    "smollm2-360m-instruct",
    "smollm2-1.7b-instruct",
    "all-minilm-l6-v2",
    "multilingual-e5-small",
]


def test_every_entry_validates_and_required_models_are_present():
    catalogue = load_catalogue()
    assert set(REQUIRED_IDS) <= set(catalogue)
    for entry in catalogue.values():
        assert entry.parameters_active_b <= entry.parameters_total_b
        assert entry.context_length >= 256
        assert entry.min_memory_gb > 0 and entry.quantisation
        assert entry.hf_id.count("/") == 1
        if entry.kind == "embeddings":
            assert entry.embedding_dim and entry.recommended_engine == "onnx"
        else:
            assert entry.chat_format.reasoning and entry.chat_format.tool_calls
        if entry.gguf is not None:
            assert entry.gguf.file.endswith(".gguf")
        if entry.recommended_engine == "llama.cpp" and entry.kind == "chat":
            assert entry.gguf is not None, entry.id  # a llama.cpp recommendation must say which file


def test_moe_and_origin_facts():
    catalogue = load_catalogue()
    assert catalogue["qwen3-30b-a3b"].is_moe and not catalogue["qwen3-4b"].is_moe
    assert (
        catalogue["deepseek-v3"].parameters_total_b == 671
        and catalogue["deepseek-v3"].parameters_active_b == 37
    )
    assert catalogue["kimi-k2"].parameters_total_b == 1000
    assert {e.origin.country for e in filter_entries(family="qwen3")} == {"CN"}
    assert catalogue["gpt-oss-20b"].origin.country == "US"
    assert catalogue["deepseek-r1-distill-qwen-7b"].chat_format.reasoning == "think-prefilled"


def test_family_formats_cover_catalogue_families():
    chat_families = {e.family for e in load_catalogue().values() if e.kind == "chat"}
    assert chat_families <= set(FAMILY_FORMATS)


def test_loader_rejects_bad_entries(tmp_path):
    good = yaml.safe_load(CATALOGUE_PATH.read_text())["models"][1]
    for change, message in [
        ({"parameters_active_b": 99}, "exceeds"),
        ({"recommended_engine": "ollama"}, "recommended_engine"),
        ({"origin": {"lab": "X", "country": "China"}}, "two-letter"),
        ({"chat_format": {"reasoning": "maybe", "tool_calls": "hermes"}}, "unknown reasoning mode"),
        ({"colour": "red"}, "unknown field"),
        ({"context_length": 1.5}, "integer"),
    ]:
        with pytest.raises(CatalogueError, match=message):
            parse_catalogue({"models": [{**good, **change}]})
    with pytest.raises(CatalogueError, match="duplicate"):
        parse_catalogue({"models": [good, good]})
    with pytest.raises(CatalogueError, match="missing licence"):
        parse_catalogue({"models": [{k: v for k, v in good.items() if k != "licence"}]})


def test_get_entry_and_close_matches():
    assert get_entry("Qwen3-4B").id == "qwen3-4b"
    assert "qwen3-4b" in close_matches("qwen3-4")
    with pytest.raises(KeyError, match="did you mean"):
        get_entry("deepsek-v3")


def test_cli_list_and_filters():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert "qwen3-30b-a3b" in result.output and "gpt-oss-20b" in result.output
    cn = runner.invoke(app, ["list", "--origin", "cn"])
    assert cn.exit_code == 0 and "kimi-k2" in cn.output and "llama-3.1-8b-instruct" not in cn.output
    fam = runner.invoke(app, ["list", "--family", "gemma3"])
    assert fam.exit_code == 0 and "gemma-3-27b-it" in fam.output and "qwen3-4b" not in fam.output
    bad = runner.invoke(app, ["list", "--family", "nope"])
    assert bad.exit_code == 2 and "families:" in bad.stderr and "Traceback" not in bad.output


def test_cli_show():
    result = runner.invoke(app, ["show", "qwen3-4b"])
    assert result.exit_code == 0, result.output
    for text in ("Qwen/Qwen3-4B", "Q4_K_M", "hermes", "think-tags", "Apache-2.0", "hf download"):
        assert text in result.output
    unknown = runner.invoke(app, ["show", "qwen3-4"])
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().count("\n") == 0  # one line
    assert "did you mean" in unknown.stderr and "qwen3-4b" in unknown.stderr


def test_cli_check_default_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    ok = runner.invoke(app, ["check"])
    assert ok.exit_code == 0, ok.output
    assert "support-agent" in ok.output
    missing = tmp_path / "deploy.yaml"
    missing.write_text("models:\n  agent: {model: qwen3-4b, gguf: models/Qwen3-4B-Q4_K_M.gguf}\n")
    result = runner.invoke(app, ["check", str(missing)])
    assert result.exit_code == 2
    assert str(tmp_path / "models" / "Qwen3-4B-Q4_K_M.gguf") in result.stderr
    assert "hf download Qwen/Qwen3-4B-GGUF Qwen3-4B-Q4_K_M.gguf" in result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("models:\n  agent: {model: qwen3-4b}\n")
    result = runner.invoke(app, ["check", str(broken)])
    assert result.exit_code == 2 and "exactly one source" in result.stderr
