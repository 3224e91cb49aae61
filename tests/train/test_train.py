"""In-house models: datasets, LoRA fine-tuning, GGUF adapter export, serving and registration.

The torch tests train a tiny random *llama-architecture* GGUF built here (transformers loads it,
un-permuting q/k as for any llama GGUF), so the export's q/k row permutation is checked against
llama.cpp, not just written.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from concierge.support.guided import load_flows
from concierge.support.guided.command import command_messages
from concierge.support.tasks import task_from_tau2, task_from_v1
from concierge.train import datasets as ds
from helpers.hubs import ScriptedHub
from helpers.paths import ROOT

pytestmark = pytest.mark.train

V1_TASKS = [
    {
        "user_id": "ana_diaz_1234",
        "instruction": "Your name is Ana Diaz and your zip code is 12345. You are calm, polite. "
        "Cancel order #W1111111 because no longer needed. Return #W2222222 via paypal_1: Water Bottle; Desk Lamp; ",
        "actions": [
            {
                "name": "cancel_pending_order",
                "kwargs": {"order_id": "#W1111111", "reason": "no longer needed"},
            },
            {
                "name": "return_delivered_order_items",
                "kwargs": {
                    "order_id": "#W2222222",
                    "item_ids": ["1234567890"],
                    "payment_method_id": "paypal_1",
                },
            },
        ],
        "outputs": [],
    },
    {
        "user_id": "bo_li_99",
        "instruction": "Your name is Bo Li and your email is bo.li99@example.com. You are busy. For #W3333333, "
        "change address to {'order_id': '#W3333333', 'address1': '1 Elm Street', 'address2': 'Suite 2', "
        "'city': 'Austin', 'country': 'USA', 'state': 'TX', 'zip': '78701'} (same as #W4444444). "
        "For #W3333333, change payment to gift_card_7.",
        "actions": [
            {
                "name": "modify_pending_order_address",
                "kwargs": {"order_id": "#W3333333", "address1": "1 Elm Street"},
            },
            {
                "name": "modify_pending_order_payment",
                "kwargs": {"order_id": "#W3333333", "payment_method_id": "gift_card_7"},
            },
        ],
        "outputs": [],
    },
]


@pytest.fixture(scope="module")
def flows() -> Any:
    return load_flows("retail")


def _v1_tasks(copies: int = 1) -> list[Any]:
    return [task_from_v1(raw, i, "train") for i, raw in enumerate(V1_TASKS * copies)]


# --------------------------------------------------------------------------- datasets


def test_guided_examples_from_v1_tasks(flows: Any) -> None:
    records = ds.guided_examples(_v1_tasks(6), flows, seed=3)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        ds.validate_record(r)
        by_task.setdefault(r["task_id"], []).append(r)
        # The target is the command as JSON, keys in the schema's order (llama.cpp's grammar fixes it).
        assert r["messages"][-1]["content"] == ds.command_json(r["command"], flows)
        assert list(r["command"]["slots"]) == [k for k in flows.slots if k in r["command"]["slots"]]
        assert r["messages"][:-1] == command_messages(flows, r["transcript"])
    for task_id, rows in by_task.items():
        index = int(task_id.split("-")[1]) % 2
        requests = [r for r in rows if r["command"]["intent"] not in ("none", "identify")]
        wanted = (
            ["cancel_order", "return_items"] if index == 0 else ["modify_order_address", "modify_payment"]
        )
        assert [r["command"]["intent"] for r in requests] == wanted
        assert [r["command"]["slots"]["order_id"] for r in requests] == (
            ["#W1111111", "#W2222222"] if index == 0 else ["#W3333333", "#W3333333"]
        )
        # Every slot value is in the customer's latest message (nothing the model could not see).
        for r in rows:
            last = r["transcript"][-1]["content"].lower()
            for name, value in r["command"]["slots"].items():
                values = value if isinstance(value, list) else [value]
                assert all(str(v).lower().lstrip("#") in last or name == "reason" for v in values), (
                    name,
                    last,
                )
    turns = {r["turn"] for r in records}
    assert {"opening", "followup"} <= turns and turns & {"identify", "confirm", "reason", "order_id"}
    identity = [r for r in records if r["turn"] == "identify"]
    assert identity and all(r["command"]["intent"] == "none" for r in identity)
    address = [r for r in records if r["command"]["intent"] == "modify_order_address"]
    assert address and all(
        r["command"]["slots"]["address"] == "1 Elm Street, Suite 2, Austin, TX 78701" for r in address
    )


def test_guided_examples_from_free_text_task(flows: Any) -> None:
    raw = {
        "id": "t1",
        "user_scenario": {
            "instructions": {
                "reason_for_call": "You want to return the blue kettle from order #W5555555 because it leaks.",
                "known_info": "You are Cy Ode in zip code 54321.",
                "unknown_info": "",
                "task_instructions": "Be brief.",
            }
        },
        "evaluation_criteria": {
            "actions": [
                {
                    "action_id": "a",
                    "name": "find_user_id_by_name_zip",
                    "arguments": {"first_name": "Cy", "last_name": "Ode", "zip": "54321"},
                },
                {
                    "action_id": "b",
                    "name": "return_delivered_order_items",
                    "arguments": {"order_id": "#W5555555", "item_ids": ["1"], "payment_method_id": "x"},
                },
            ]
        },
    }
    no_writes = {**raw, "id": "t2", "evaluation_criteria": {"actions": []}}
    records = ds.guided_examples([task_from_tau2(raw), task_from_tau2(no_writes)], flows)
    opening = [r for r in records if r["turn"] == "opening"]
    assert [r["task_id"] for r in opening] == ["t1"]  # no gold request -> no opening example
    assert opening[0]["command"] == {
        "intent": "return_items",
        "slots": {"first_name": "Cy", "last_name": "Ode", "zip": "54321", "order_id": "#W5555555"},
    }


def test_write_read_hash_and_sidecar(tmp_path: Path, flows: Any) -> None:
    records = ds.guided_examples(_v1_tasks(), flows)
    info = ds.write_dataset(tmp_path / "d.jsonl", records, source={"tasks": "inline"})
    meta = json.loads(ds.meta_path(info.path).read_text())
    assert meta["count"] == len(records) == info.count and meta["sha256"] == info.sha256
    assert meta["source"] == {"tasks": "inline"} and sum(meta["counts"].values()) == len(records)
    assert ds.read_dataset(info.path) == records
    # The hash is over canonical lines: the same examples written differently hash the same ...
    pretty = "\n".join(json.dumps(r, indent=None, sort_keys=False) for r in records) + "\n\n"
    (tmp_path / "pretty.jsonl").write_text(pretty)
    assert ds.dataset_hash(tmp_path / "pretty.jsonl") == info.sha256
    # ... and one changed character changes it.
    changed = [dict(r) for r in records]
    changed[0] = {**changed[0], "id": changed[0]["id"] + "x"}
    assert ds.content_hash(changed) != info.sha256
    assert ds.guided_examples(_v1_tasks(), flows) == records  # same seed, same examples


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: "not json at all", "not JSON"),
        (lambda r: {k: v for k, v in r.items() if k != "command"}, "'command' is a required property"),
        (lambda r: {**r, "turn": "smalltalk"}, "field turn"),
        (lambda r: {**r, "messages": r["messages"][:-1]}, "last message must be the assistant's"),
        (lambda r: {**r, "kind": "mystery"}, "kind must be one of"),
    ],
)
def test_schema_errors_name_the_line(tmp_path: Path, flows: Any, mutate: Any, expected: str) -> None:
    good = ds.guided_examples(_v1_tasks(), flows)[:2]
    bad = mutate(dict(good[1]))
    lines = [json.dumps(good[0]), bad if isinstance(bad, str) else json.dumps(bad)]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ds.DatasetError) as err:
        ds.read_dataset(path)
    message = str(err.value)
    assert f"{path}:2:" in message and expected in message and "\n" not in message


def test_alignment_check_names_what_is_missing(flows: Any) -> None:
    broken = SimpleNamespace(
        domain="retail",
        intents={k: v for k, v in flows.intents.items() if k != "cancel_order"},
        slots=flows.slots,
    )
    with pytest.raises(ds.DatasetError, match="cancel_order"):
        ds.check_alignment(broken)


def test_agent_trajectories_from_gold_actions() -> None:
    from concierge.support.domains import load_domain
    from concierge.support.domains.homestay import TASKS_PATH
    from concierge.support.tasks import load_tasks

    tasks = load_tasks(TASKS_PATH)[:3]
    records = ds.agent_examples(tasks, lambda: load_domain("homestay"))
    assert len(records) == 3
    for record, task in zip(records, tasks, strict=True):
        ds.validate_record(record)
        calls = [m["tool_calls"][0]["function"] for m in record["messages"] if m.get("tool_calls")]
        assert [c["name"] for c in calls] == [a.name for a in task.actions]
        assert [json.loads(c["arguments"]) for c in calls] == [a.arguments for a in task.actions]
        results = [m for m in record["messages"] if m["role"] == "tool"]
        assert len(results) == len(calls) and all(m["content"] for m in results)
        assert {t["function"]["name"] for t in record["tools"]} >= {c["name"] for c in calls}


def teacher(answers: list[Any]) -> ScriptedHub:
    """Answers from a script: a message dict per call (an exception instance is raised); no usage."""
    return ScriptedHub(*answers, usage=None)


def test_distill_labels_prompts_with_the_teacher() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_order", "arguments": '{"order_id": "1"}'},
    }
    hub = teacher(
        [
            {"content": "Paris."},
            RuntimeError("upstream down"),
            {"content": "", "tool_calls": [call]},
            {"content": ""},
        ]
    )
    tools = [{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}]
    prompts = [
        [{"role": "user", "content": "Capital of France?"}],
        [{"role": "user", "content": "fails"}],
        {"messages": [{"role": "user", "content": "Where is order 1?"}], "tools": tools},
        [{"role": "user", "content": "empty answer"}],
    ]
    records = ds.distill("teacher-big", hub, prompts, defaults={"max_tokens": 64})
    assert [r["messages"][0]["content"] for r in records] == ["Capital of France?", "Where is order 1?"]
    for r in records:
        ds.validate_record(r)
        assert r["teacher"] == "teacher-big"
    assert records[0]["messages"][-1] == {"role": "assistant", "content": "Paris."}
    assert (
        records[1]["messages"][-1]["tool_calls"][0]["function"]["name"] == "get_order"
        and records[1]["tools"] == tools
    )
    assert all(
        a == "teacher-big" and r["temperature"] == 0 and r["max_tokens"] == 64 for a, r in ((c.alias, c.request) for c in hub.calls)
    )
    with pytest.raises(RuntimeError):
        ds.distill("teacher-big", teacher([RuntimeError("x")]), [prompts[0]], on_error="raise")


def test_command_accuracy_scores_intent_and_slots(flows: Any) -> None:
    from concierge.train.evaluate import command_accuracy, slot_pairs

    records = [r for r in ds.guided_examples(_v1_tasks(), flows, seed=1) if r["command"]["slots"]][:3]
    gold = [r["command"] for r in records]
    wrong_slots = {"intent": gold[1]["intent"], "slots": {"order_id": "#W9999999"}}
    hub = teacher(
        [
            {"content": json.dumps(gold[0])},
            {"content": json.dumps(wrong_slots)},
            {"content": "{not json"},
        ]
    )
    result = command_accuracy(hub, "m", records, flows)
    assert result["examples"] == 3 and result["intent_accuracy"] == round(2 / 3, 4)
    tp = len(slot_pairs(gold[0]["slots"]))
    fn = len(slot_pairs(gold[1]["slots"])) + len(slot_pairs(gold[2]["slots"]))
    precision, recall = tp / (tp + 1), tp / (tp + fn)
    assert result["slot_f1"] == round(2 * precision * recall / (precision + recall), 4)
    assert result["json_valid"] == round(2 / 3, 4)
    request = hub.calls[0].request
    assert request["response_format"]["json_schema"]["schema"]["properties"]["intent"]["enum"][-1] == "none"
    assert slot_pairs({"order_id": "w1234567", "item_ids": ["1", "2"]}) == {
        ("order_id", "#w1234567"),
        ("item_ids", "1"),
        ("item_ids", "2"),
    }


def test_publish_registers_a_relative_adapter(tmp_path: Path) -> None:
    from concierge.models.deployment import load_registry
    from concierge.train.registry import RegistryError, publish, register

    registry = tmp_path / "inhouse" / "registry.yaml"
    registry.parent.mkdir()
    registry.write_text("# committed adapters\n# second comment line\naliases: {}\n")
    adapter = tmp_path / "work" / "adapter.gguf"
    adapter.parent.mkdir()
    adapter.write_bytes(b"GGUF-not-really")
    card = {
        "alias": "shop-inhouse",
        "base": {"spec": "embedded:smollm2", "embedded": "smollm2"},
        "data_hash": "abc",
        "hyperparameters": {"rank": 8},
        "seed": 7,
        "metrics": {"inhouse:compact": {"intent_accuracy": 0.9}},
    }
    publish("shop-inhouse", adapter, card, registry=registry)
    text = registry.read_text()
    assert text.startswith("# committed adapters\n# second comment line\n")
    spec = load_registry(registry)["shop-inhouse"]
    assert spec.in_house and spec.embedded == "smollm2" and spec.model == "smollm2-135m-instruct"
    assert (
        spec.lora[0].path == registry.parent / "shop-inhouse" / "adapter.gguf" and spec.lora[0].path.is_file()
    )
    assert spec.provenance["data_hash"] == "abc" and spec.provenance["seed"] == 7
    assert spec.provenance["card"] == "shop-inhouse/model_card.json"
    saved = json.loads((registry.parent / "shop-inhouse" / "model_card.json").read_text())
    assert saved["adapter"]["file"] == "adapter.gguf" and len(saved["adapter"]["sha256"]) == 64
    home = register("shop-inhouse", adapter, card, registry=tmp_path / "home" / "models.json")
    assert load_registry(home)["shop-inhouse"].lora[0].path == adapter.resolve()
    with pytest.raises(RegistryError, match="Hugging Face folder"):
        register("x", adapter, {**card, "base": {"spec": "/models/hf"}}, registry=tmp_path / "h.json")


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from concierge.commands.train import app

    runner = CliRunner()
    missing = runner.invoke(
        app,
        [
            "dataset",
            "--kind",
            "guided",
            "--tasks",
            str(tmp_path / "no.json"),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
    )
    assert missing.exit_code == 2 and "task file not found" in missing.output
    kind = runner.invoke(
        app, ["dataset", "--kind", "poems", "--tasks", str(tmp_path), "--out", str(tmp_path / "o.jsonl")]
    )
    assert kind.exit_code == 2 and "unknown dataset kind" in kind.output
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps(V1_TASKS))
    ok = runner.invoke(
        app, ["dataset", "--kind", "guided", "--tasks", str(tasks), "--out", str(tmp_path / "o.jsonl")]
    )
    assert ok.exit_code == 0, ok.output
    assert ds.read_dataset(tmp_path / "o.jsonl") and "sha256" in ok.output


@pytest.mark.shared_data
def test_real_v1_retail_tasks_build(shared_data: Path, flows: Any) -> None:
    from concierge.support.tasks import load_tasks

    path = shared_data / "tau_v1" / "retail" / "tasks_train.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    tasks = load_tasks(path)
    records = ds.guided_examples(tasks, flows)
    assert sum(r["turn"] == "opening" for r in records) == len(tasks)
    intents = {r["command"]["intent"] for r in records}
    assert intents >= {
        "cancel_order",
        "change_items",
        "return_items",
        "modify_order_address",
        "modify_payment",
        "none",
    }
    for r in records:
        ds.validate_record(r)
    assert ds.content_hash(ds.guided_examples(tasks, flows)) == ds.content_hash(records)


# --------------------------------------------------------------------------- torch: train, export, serve


def build_tiny_llama_gguf(
    path: Path, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2
) -> Path:
    """A random llama-architecture GGUF (F32) with the tiny byte-level tokenizer and ChatML template."""
    import gguf

    from concierge.models.tiny_gguf import QWEN25_CHAT_TEMPLATE, SPECIAL_TOKENS, tiny_vocab

    tokens, types, merges = tiny_vocab()
    rng = np.random.default_rng(0)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    kv = n_embd // n_head * n_head_kv
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(2048)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(2 * n_embd)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    ids = {text: tokens.index(text) for text, _ in SPECIAL_TOKENS}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids["<|endoftext|>"])
    writer.add_eos_token_id(ids["<|im_end|>"])
    writer.add_pad_token_id(ids["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(QWEN25_CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", weight(len(tokens), n_embd))
    for i in range(n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"{blk}.attn_k.weight", weight(kv, n_embd))
        writer.add_tensor(f"{blk}.attn_v.weight", weight(kv, n_embd))
        writer.add_tensor(f"{blk}.attn_output.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(2 * n_embd, n_embd))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(2 * n_embd, n_embd))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(n_embd, 2 * n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="training needs the train extra (torch)")
    pytest.importorskip("peft", reason="training needs the train extra (peft)")
    pytest.importorskip("gguf", reason="the gguf package builds the tiny model")
    return build_tiny_llama_gguf(tmp_path_factory.mktemp("tiny-llama") / "tiny-llama.gguf")


def _chat_records(n: int = 6) -> list[dict[str, Any]]:
    return [
        {
            "kind": "distilled",
            "id": f"d{i}",
            "teacher": "t",
            "messages": [
                {"role": "user", "content": f"order {i}?"},
                {"role": "assistant", "content": f'{{"n": {i}}}'},
            ],
        }
        for i in range(n)
    ]


def _lora_state(model: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def test_train_checkpoint_resume_and_reload(tiny_llama: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel

    from concierge.train.lora import TrainConfig, TrainError, load_base, train_lora

    config = TrainConfig(steps=2, batch_size=2, rank=4, alpha=8, save_every=1, threads=1, lr=1e-2)
    first = train_lora(_chat_records(), str(tiny_llama), tmp_path / "run", config, progress=False)
    assert first.steps == 2 and first.start_step == 0 and len(first.losses) == 2
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-000001",
        "step-000002",
    ]
    assert (first.adapter_dir / "adapter_model.safetensors").is_file()
    trained = _lora_state(first.model)
    assert any(float(v.abs().sum()) > 0 for k, v in trained.items() if "lora_B" in k)  # B moved off zero

    # The saved adapter reloads onto a fresh base with the same weights.
    base, _, _ = load_base(str(tiny_llama))
    reloaded = PeftModel.from_pretrained(base, str(first.adapter_dir))
    for key, value in _lora_state(reloaded).items():
        assert torch.allclose(value, trained[key])

    with pytest.raises(TrainError, match="--resume"):
        train_lora(_chat_records(), str(tiny_llama), tmp_path / "run", config, progress=False)
    with pytest.raises(TrainError, match="nothing to resume"):
        train_lora(_chat_records(), str(tiny_llama), tmp_path / "new", config, resume=True, progress=False)
    with pytest.raises(TrainError, match="different lr"):
        train_lora(
            _chat_records(),
            str(tiny_llama),
            tmp_path / "run",
            TrainConfig(**{**config.__dict__, "steps": 3, "lr": 1e-3}),
            resume=True,
            progress=False,
        )

    # Resuming continues at step 2 and ends where an uninterrupted 3-step run ends.
    longer = TrainConfig(**{**config.__dict__, "steps": 3})
    resumed = train_lora(
        _chat_records(), str(tiny_llama), tmp_path / "run", longer, resume=True, progress=False
    )
    assert resumed.start_step == 2 and len(resumed.losses) == 3 and resumed.losses[:2] == first.losses
    straight = train_lora(_chat_records(), str(tiny_llama), tmp_path / "straight", longer, progress=False)
    assert straight.losses == pytest.approx(resumed.losses, rel=1e-5)
    final = _lora_state(straight.model)
    for key, value in _lora_state(resumed.model).items():
        assert torch.allclose(value, final[key], atol=1e-6)


def test_a_step_example_learns_only_its_last_turn(tiny_llama: Path) -> None:
    """``loss_on: last`` (agent_steps records): the earlier assistant turns are context, not targets."""
    from concierge.train.lora import encode_example, load_base

    _, tokenizer, _ = load_base(str(tiny_llama))
    record = {
        "messages": [
            {"role": "system", "content": "act"},
            {"role": "user", "content": "cancel #W1"},
            {"role": "assistant", "content": "FIRST-STEP"},
            {"role": "user", "content": "TOOL RESULT x: ok"},
            {"role": "assistant", "content": "SECOND-STEP"},
        ]
    }

    def learned(rec: dict[str, Any]) -> str:
        ids, labels = encode_example(tokenizer, rec)
        assert len(ids) == len(labels)
        return tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])

    both = learned(record)
    assert "FIRST-STEP" in both and "SECOND-STEP" in both and "cancel" not in both
    last = learned({**record, "loss_on": "last"})
    assert "SECOND-STEP" in last and "FIRST-STEP" not in last
    # The prompt tokens are the same either way: only the labels differ.
    assert encode_example(tokenizer, record)[0] == encode_example(tokenizer, {**record, "loss_on": "last"})[0]


def test_export_matches_llama_cpp_including_qk_permutation(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf
    import torch
    from peft import LoraConfig, get_peft_model

    from concierge.train import export as ex
    from concierge.train.lora import load_base

    model, tokenizer, info = load_base(str(tiny_llama))
    torch.manual_seed(0)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0
        ),
    )
    with torch.no_grad():  # a large random update, so a wrong layout cannot go unnoticed
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    (adapter_dir / "concierge_base.json").write_text(json.dumps(info))
    exported = ex.export_gguf_lora(adapter_dir, tmp_path / "a.gguf", dtype="f32")

    reader = gguf.GGUFReader(str(exported.path))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    assert reader.fields["general.architecture"].contents() == "llama"
    shapes = {t.name: [int(x) for x in t.shape] for t in reader.tensors}  # ggml order: [ne0, ne1]
    assert len(shapes) == 2 * 4 * 2
    assert shapes["blk.0.attn_q.weight.lora_a"] == [64, 4] and shapes["blk.0.attn_q.weight.lora_b"] == [4, 64]
    assert shapes["blk.1.attn_k.weight.lora_a"] == [64, 4] and shapes["blk.1.attn_k.weight.lora_b"] == [4, 32]

    prompts = [
        [{"role": "user", "content": "Hello, where is my order?"}],
        [{"role": "user", "content": "{}"}],
    ]
    check = ex.check_export(
        peft_model, tokenizer, tiny_llama, exported.path, prompts, max_tokens=12, threads=1
    )
    assert check["adapter_vs_torch"]["tokens"] == 24 and check["adapter_vs_torch"]["top1_agree"] == 1.0
    assert check["base_vs_torch_base"]["top1_agree"] == 1.0

    monkeypatch.setattr(ex, "PERMUTED_ARCHS", set())  # what a converter that forgets the permutation writes
    unpermuted = ex.export_gguf_lora(adapter_dir, tmp_path / "unpermuted.gguf", dtype="f32")
    wrong = ex.check_export(
        peft_model, tokenizer, tiny_llama, unpermuted.path, prompts, max_tokens=12, threads=1
    )
    assert wrong["adapter_vs_torch"]["top1_agree"] < 0.9

    with pytest.raises(ex.ExportError, match="not a PEFT adapter folder"):
        ex.export_gguf_lora(tmp_path, tmp_path / "x.gguf")


def test_permute_rows_inverts_transformers_unpermute() -> None:
    pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from concierge.train.export import permute_rows

    rng = np.random.default_rng(0)
    for n_head, n_kv in ((9, 9), (9, 3), (4, 2)):
        w = rng.standard_normal((n_kv * 2 * 8, 5))
        # transformers un-permutes llama GGUF q/k rows on load; the export must undo exactly that.
        undone = LlamaTensorProcessor()._reverse_permute_weights(permute_rows(w, n_head, n_kv), n_head, n_kv)
        assert np.array_equal(undone, w)


def test_pipeline_serves_and_registers(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concierge.models.deployment import parse_deployment, registry_path
    from concierge.models.hub import ModelHub
    from concierge.train.lora import TrainConfig
    from concierge.train.pipeline import train_and_export

    monkeypatch.setenv("CONCIERGE_HOME", str(tmp_path / "home"))
    data = ds.write_dataset(tmp_path / "data.jsonl", _chat_records(), source={"tasks": "inline"}).path
    config = TrainConfig(steps=2, batch_size=2, rank=4, alpha=8, save_every=5, threads=1)
    card = train_and_export(
        data,
        str(tiny_llama),
        tmp_path / "run",
        config,
        alias="tiny-inhouse",
        progress=False,
        log=lambda _: None,
    )
    assert card["data_hash"] == ds.dataset_hash(data) and card["steps"] == 2 and card["seed"] == 0
    assert card["hyperparameters"]["rank"] == 4 and card["loss_curve"][-1][0] == 2
    assert card["export_check"]["adapter_vs_torch"]["top1_agree"] == 1.0
    assert (
        json.loads((tmp_path / "run" / "model_card.json").read_text())["adapter"]["sha256"]
        == card["adapter"]["sha256"]
    )
    assert card["registered"] == [str(registry_path())]

    # The registered alias is served by llama.cpp with the adapter, through the hub.
    registered = json.loads(registry_path().read_text())["aliases"]["tiny-inhouse"]
    assert registered["in_house"] and registered["provenance"]["data_hash"] == card["data_hash"]
    deployment = parse_deployment(
        {"models": {"tiny-inhouse": {**registered, "n_ctx": 512, "n_parallel": 1, "threads": 1}}}
    )
    with ModelHub(deployment) as hub:
        assert hub.card("tiny-inhouse").in_house
        response = hub.chat(
            "tiny-inhouse",
            {"messages": [{"role": "user", "content": "order 1?"}], "max_tokens": 4, "temperature": 0},
        )
        assert response["usage"]["completion_tokens"] > 0 and response["model"] == "tiny-inhouse"
        assert hub.engine("tiny-inhouse").info.extra["lora"] == [
            (str(tmp_path / "run" / "adapter.gguf"), 1.0)
        ]


def test_shop_examples_from_written_requests(tmp_path: Path) -> None:
    requests_file = ROOT / "src" / "concierge" / "shop" / "demo_requests.yaml"
    if not requests_file.is_file():
        pytest.skip("the demo shopper requests file is not present")
    info = ds.build_dataset("shop", requests_file, tmp_path / "shop.jsonl", limit=4)
    records = ds.read_dataset(info.path)
    assert [r["turns"][0] for r in records][:2] == [
        "blue sneakers under $80",
        "women's leather boots between 100 and 200 dollars",
    ]
    first, second = records[0]["query"], records[1]["query"]
    assert first["price_max"] == 80 and first["attributes"] == [{"name": "color", "value": "blue"}]
    assert (
        first["category"] is None
    )  # two categories (women's and men's sneakers): the model leaves it to the rules
    assert second["category"] == "Women > Shoes > Boots" and (second["price_min"], second["price_max"]) == (
        100,
        200,
    )
    assert json.loads(records[0]["messages"][-1]["content"]) == first
    assert (
        records[0]["messages"][0]["role"] == "system"
        and "Categories:" in records[0]["messages"][0]["content"]
    )
