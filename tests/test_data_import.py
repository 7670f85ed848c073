import json
from pathlib import Path

import pytest

from swehero.data.importers import import_files, parse_text_tool_calls
from swehero.data.render import ChatRenderer
from swehero.data.trajectory import template_messages
from swehero.errors import InputError
from swehero.toolspec import TOOL_NAMES, openhands_tools

FIXTURES = Path(__file__).parent / "data_fixtures"


def _import(tmp_path, fmt, name, **kw):
    out = tmp_path / f"{fmt}.jsonl"
    counts = import_files([str(FIXTURES / name)], fmt, out, stage="zero", max_reject_fraction=kw.pop("max_rej", 0.6))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    rejects = out.with_name(out.stem + ".rejects.jsonl")
    return counts, records, [json.loads(x) for x in rejects.read_text().splitlines()] if rejects.exists() else []


def _calls(record):
    return [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for m in record["messages"]
        for c in m.get("tool_calls", [])
    ]


def test_nvidia_attaches_openhands_tools_and_links_tool_results_by_order(tmp_path):
    counts, (rec, rec2), _ = _import(tmp_path, "nvidia", "nvidia.jsonl")
    assert counts["written"] == 2 and rec["tools"] == openhands_tools() and rec["resolved"] is None
    assert [t["function"]["name"] for t in rec["tools"]] == list(TOOL_NAMES)
    assert rec["messages"][1]["content"].startswith("<uploaded_files>")  # content parts joined
    tool_ids = [m["tool_call_id"] for m in rec["messages"] if m["role"] == "tool"]
    assert tool_ids == ["toolu_1", "toolu_2", "toolu_3"]
    assert _calls(rec2)[0] == (
        "execute_bash",
        {"command": "grep -rn 'UsernameValidator' /workspace/django", "timeout": 30},
    )


@pytest.mark.slow
def test_parquet_input_through_datasets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(x) for x in (FIXTURES / "nvidia.jsonl").read_text().splitlines()]
    for r in rows:  # Parquet needs one schema for the nested column; the release stores messages this way too
        r["trajectory"] = json.dumps(r["trajectory"])
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "nv.parquet")
    out = tmp_path / "out.jsonl"
    counts = import_files([str(tmp_path / "nv.parquet")], "nvidia", out)
    assert counts["written"] == 2
    assert json.loads(out.read_text().splitlines()[0])["id"] == "astropy__astropy-12907_0"


def test_nebius_keeps_its_tools_and_resolved_and_rejects_bad_arguments(tmp_path):
    counts, records, rejects = _import(tmp_path, "nebius", "nebius.jsonl")
    assert counts["written"] == 1 and records[0]["resolved"] is True
    assert records[0]["tools"][0]["function"]["description"] == "Run a bash command."
    assert rejects[0]["reason"] == "invalid_tool_arguments" and rejects[0]["where"].endswith("nebius.jsonl:2")


def test_swe_gym_inline_function_markup_becomes_tool_calls(tmp_path):
    _, (rec,), _ = _import(tmp_path, "swe-gym", "swe_gym.json")
    assert _calls(rec) == [
        ("execute_bash", {"command": "grep -rn 'def get_parameters_by_path' /workspace/getmoto__moto__4.0"}),
        (
            "str_replace_editor",
            {"command": "view", "path": "/workspace/getmoto__moto__4.0/moto/ssm/models.py", "view_range": [1720, 1740]},
        ),
        ("finish", {}),
    ]
    roles = [m["role"] for m in rec["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert rec["messages"][2]["content"] == "Let me find the code."


def test_swe_smith_json_string_messages(tmp_path):
    _, (rec,), _ = _import(tmp_path, "swe-smith", "swe_smith.jsonl")
    assert rec["id"].endswith("8qa84d2e") and rec["resolved"] is True and rec["tools"] == []
    assert _calls(rec) == [("bash", {"command": "ls /testbed"}), ("submit", {})]
    assert rec["messages"][3] == {"role": "tool", "tool_call_id": "toolu_01", "content": "pydantic\ntests"}


def test_sharegpt_function_call_turns_and_unknown_role_reject(tmp_path):
    _, (rec,), rejects = _import(tmp_path, "sharegpt", "sharegpt.jsonl")
    assert _calls(rec) == [("execute_bash", {"command": "ls"}), ("execute_bash", {"command": "cat a.py"})]
    assert [m["role"] for m in rec["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert rejects == [
        {"where": rejects[0]["where"], "reason": "unknown_role", "detail": "turn 1 from 'narrator'", "id": "sg-2"}
    ]
    assert rejects[0]["where"].endswith("sharegpt.jsonl:2")


def test_swe_agent_traj(tmp_path):
    _, (rec,), _ = _import(tmp_path, "swe-agent", "marshmallow-code__marshmallow-1867.traj")
    assert rec["instance_id"] == "marshmallow-code__marshmallow-1867"
    assert rec["patch"].startswith("diff --git") and _calls(rec) == [("bash", {"command": "ls"}), ("submit", {})]
    assert [m["tool_call_id"] for m in rec["messages"] if m["role"] == "tool"] == ["call_a", "call_b"]


def test_too_many_rejects_fail_with_summary_and_leave_no_output(tmp_path):
    with pytest.raises(InputError, match="unknown_role: 1"):
        import_files([str(FIXTURES / "sharegpt.jsonl")], "sharegpt", tmp_path / "o.jsonl", max_reject_fraction=0.1)
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.partial").exists()


def test_text_tool_call_parsing():
    content, calls = parse_text_tool_calls(
        'Hi\n<tool_call>\n{"name": "think", "arguments": {"thought": "é"}}\n</tool_call>', "c"
    )
    assert content == "Hi" and json.loads(calls[0]["function"]["arguments"]) == {"thought": "é"}
    assert parse_text_tool_calls("no calls here", "c") == ("no calls here", [])


@pytest.mark.parametrize(
    "fmt,name",
    [
        ("nvidia", "nvidia.jsonl"),
        ("nebius", "nebius.jsonl"),
        ("swe-gym", "swe_gym.json"),
        ("swe-smith", "swe_smith.jsonl"),
        ("sharegpt", "sharegpt.jsonl"),
        ("swe-agent", "marshmallow-code__marshmallow-1867.traj"),
    ],
)
def test_imported_records_render_exactly(tmp_path, qwen_tokenizer, fmt, name):
    renderer = ChatRenderer(qwen_tokenizer)
    for rec in _import(tmp_path, fmt, name)[1]:
        out = renderer.render(rec)
        ref = qwen_tokenizer.apply_chat_template(template_messages(rec["messages"]), tools=rec["tools"], tokenize=True)
        assert out.input_ids.tolist() == ref["input_ids"] and out.loss_mask.sum() > 0


def test_selection_is_seeded_per_task_and_independent_of_input_order():
    from swehero.data.select import Selection, select

    records = [(f"task-{t}", f"task-{t}_{r}") for t in range(50) for r in range(4)]
    one = Selection(per_instance=1, seed=7)
    kept = {records[i] for i in select(records, one)}
    assert sorted(t for t, _ in kept) == sorted(f"task-{t}" for t in range(50))  # every task once
    reordered = records[::-1]
    assert {reordered[i] for i in select(reordered, one)} == kept  # the same choice in any order
    assert {records[i] for i in select(records, Selection(per_instance=1, seed=8))} != kept  # the seed matters
    two_then_limit = select(records, Selection(per_instance=2, limit=60, seed=7))
    assert len(two_then_limit) == 60 and two_then_limit == sorted(two_then_limit)  # kept in input order
    per_task = {}
    for i in two_then_limit:
        per_task[records[i][0]] = per_task.get(records[i][0], 0) + 1
    assert max(per_task.values()) <= 2
