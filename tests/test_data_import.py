import json
import shutil
from pathlib import Path

import pytest

from swehero.data.importers import import_files, parse_text_tool_calls, text_of
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
def test_parquet_input(tmp_path):
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


def test_tools_stored_as_parquet_structs_come_back_as_the_teacher_saw_them(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # nebius's release keeps `tools` as a column of structs: one Arrow schema for all tools, so each tool is read
    # back with every other tool's parameters set to null, unless the importer drops them.
    (row,) = [json.loads(x) for x in (FIXTURES / "nebius.jsonl").read_text().splitlines()[:1]]
    row["tools"] = openhands_tools()
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "nebius.parquet")
    read_back = pq.read_table(tmp_path / "nebius.parquet").to_pylist()[0]["tools"]
    assert read_back[1]["function"]["parameters"]["properties"]["command"] is None  # `think` has no `command`
    out = tmp_path / "out.jsonl"
    assert import_files([str(tmp_path / "nebius.parquet")], "nebius", out)["written"] == 1
    assert json.loads(out.read_text())["tools"] == openhands_tools()


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


# OpenHands' text format (its fn_call_converter), written out here as OpenHands writes it, to check that importing
# gives back the function-calling conversation it was made from.
_GYM_TOOLS = [
    {"type": "function", "function": {
        "name": "execute_bash", "description": "Execute a bash command in the terminal.\n* One command at a time.\n",
        "parameters": {"type": "object", "properties": {"command": {"type": "string", "description": "The command."}},
                       "required": ["command"]}}},
    {"type": "function", "function": {
        "name": "str_replace_editor", "description": "Custom editing tool for viewing and editing files.",
        "parameters": {"type": "object", "properties": {
            "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"]},
            "path": {"type": "string"}, "new_str": {"type": "string"}, "old_str": {"type": "string"},
            "view_range": {"type": "array", "items": {"type": "integer"}}}, "required": ["command", "path"]}}},
    {"type": "function", "function": {"name": "finish", "description": "Finish the interaction."}},
]
_GYM_CONVERSATION = [
    {"role": "system", "content": "You are OpenHands agent, a helpful AI assistant.\n<IMPORTANT>\n* Explore first.\n"
                                  "</IMPORTANT>"},
    {"role": "user", "content": "<uploaded_files>\n/workspace/getmoto__moto__4.0\n</uploaded_files>\nI've uploaded a "
                                "python code repository. Consider the following PR description:\n\n<pr_description>\n"
                                "SSM get_parameters_by_path ignores the filter.\n</pr_description>\n"},
    {"role": "assistant", "content": "Let me find the code.", "call": ("execute_bash", {"command": "grep -rn "
                                     "'def get_parameters_by_path' /workspace/getmoto__moto__4.0"})},
    {"role": "tool", "name": "execute_bash", "content": "moto/ssm/models.py:1723:    def get_parameters_by_path(\n"
                                                        "[Command finished with exit code 0]"},
    {"role": "assistant", "content": "", "call": ("str_replace_editor", {
        "command": "str_replace", "path": "/workspace/getmoto__moto__4.0/moto/ssm/models.py",
        "old_str": "        if filters:\n            pass", "new_str": "        if filters:\n            apply(filters)"})},
    {"role": "tool", "name": "str_replace_editor", "content": "The file has been edited. \n  1723\tif filters:"},
    {"role": "assistant", "content": "Done.", "call": ("finish", {})},
]
_EXAMPLE = ("Here's a running example of how to perform a task with the provided tools.\n\n"
            "--------------------- START OF EXAMPLE ---------------------\n\nUSER: List the files.\n\n"
            "ASSISTANT: Sure!\n<function=execute_bash>\n<parameter=command>\nls\n</parameter>\n</function>\n\n"
            "USER: EXECUTION RESULT of [execute_bash]:\napp.py\n\n"
            "--------------------- END OF EXAMPLE ---------------------\n\n"
            "Do NOT assume the environment is the same as in the example above.\n\n"
            "--------------------- NEW TASK DESCRIPTION ---------------------\n")


def _described(tools: list[dict], prose_parameters: bool) -> str:
    """Tools described in a system message as OpenHands' text format does (`convert_tools_to_description`): the
    parameters as JSON (SWE-Gym's version) or, in later versions and SWE-agent's copy, a line per parameter."""
    described = ""
    for i, tool in enumerate(tools, 1):
        fn = tool["function"]
        described += f"{chr(10) if i > 1 else ''}---- BEGIN FUNCTION #{i}: {fn['name']} ----\n"
        described += f"Description: {fn['description']}\n"
        if "parameters" in fn and prose_parameters:
            described += "Parameters:\n"
            for j, (name, prop) in enumerate(fn["parameters"]["properties"].items(), 1):
                status = "required" if name in fn["parameters"].get("required", []) else "optional"
                about = prop.get("description", "No description provided") + (
                    "\nAllowed values: [" + ", ".join(f"`{v}`" for v in prop["enum"]) + "]" if "enum" in prop else "")
                described += f"  ({j}) {name} ({prop.get('type', 'string')}, {status}): {about}\n"
        elif "parameters" in fn:
            described += f"Parameters: {json.dumps(fn['parameters'], indent=2)}\n"
        else:
            described += "No parameters are required for this function.\n"
        described += f"---- END FUNCTION #{i} ----\n"
    return (f"\nYou have access to the following functions:\n\n{described}\nIf you choose to call a function ONLY "
            "reply in the following format with NO suffix:\n\n<function=example_function_name>\n...\n")


def _openhands_text_format(prose_parameters: bool, example: bool) -> list[dict]:
    """`_GYM_CONVERSATION` as OpenHands sends it to a model without function calling."""
    suffix = _described(_GYM_TOOLS, prose_parameters)
    out = []
    for m in _GYM_CONVERSATION:
        if m["role"] == "system":
            out.append({"role": "system", "content": m["content"] + suffix})
        elif m["role"] == "user":
            content = m["content"]
            if example:
                content = (_EXAMPLE + content + "\n--------------------- END OF NEW TASK DESCRIPTION "
                           "---------------------\n\nPLEASE follow the format strictly! PLEASE EMIT ONE AND ONLY ONE "
                           "FUNCTION CALL PER MESSAGE.\n")
            out.append({"role": "user", "content": content})
        elif m["role"] == "assistant":
            name, args = m["call"]
            call = f"<function={name}>\n"
            for k, v in args.items():
                nl = "\n" if isinstance(v, str) and "\n" in v else ""
                call += f"<parameter={k}>{nl}{v}{nl}</parameter>\n"
            out.append({"role": "assistant", "content": (m["content"] + "\n\n" + call + "</function>").lstrip()})
        else:
            out.append({"role": "user", "content": f"EXECUTION RESULT of [{m['name']}]:\n" + m["content"]})
    return out


@pytest.mark.parametrize("prose_parameters,example", [(False, False), (True, True)],
                         ids=["swe-gym-version", "later-version-with-example"])
def test_swe_gym_openhands_text_format_gives_back_the_function_calling_conversation(
        tmp_path, qwen_tokenizer, prose_parameters, example):
    rows = [{"instance_id": "getmoto__moto-5752", "messages": _openhands_text_format(prose_parameters, example)}]
    (tmp_path / "gym.json").write_text(json.dumps(rows))
    out = tmp_path / "gym.jsonl"
    import_files([str(tmp_path / "gym.json")], "swe-gym", out)
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(m["role"], m["content"]) for m in rec["messages"]] == [(m["role"], m["content"]) for m in
                                                                    _GYM_CONVERSATION]
    assert _calls(rec) == [m["call"] for m in _GYM_CONVERSATION if m["role"] == "assistant"]
    tool_results = [m for m in rec["messages"] if m["role"] == "tool"]
    assert [m["name"] for m in tool_results] == ["execute_bash", "str_replace_editor"]
    calls = [c["id"] for m in rec["messages"] for c in m.get("tool_calls", [])]
    assert [m["tool_call_id"] for m in tool_results] == calls[:2]
    # The tools the teacher saw when its system message wrote them as JSON; the OpenHands set when as prose.
    assert rec["tools"] == (openhands_tools() if prose_parameters else _GYM_TOOLS)
    text = ChatRenderer(qwen_tokenizer).text(template_messages(rec["messages"]), rec["tools"])
    for leftover in ("EXECUTION RESULT of", "You have access to the following functions", "<function=",
                     "START OF EXAMPLE", "PLEASE follow the format"):
        assert leftover not in text


def test_the_task_end_of_openhands_before_0_18_is_cut_too(tmp_path):
    """OpenHands 0.15-0.17 wrote the suffix after the task without a newline before it (it lstripped it)."""
    messages = _openhands_text_format(False, True)
    task = _GYM_CONVERSATION[1]["content"].rstrip("\n") + " It is fine if it is very long."
    messages[1]["content"] = messages[1]["content"].replace(
        _GYM_CONVERSATION[1]["content"] + "\n--------------------- END", task + "--------------------- END")
    assert task + "--------------------- END" in messages[1]["content"]
    (tmp_path / "gym.json").write_text(json.dumps([{"instance_id": "getmoto__moto-5752", "messages": messages}]))
    import_files([str(tmp_path / "gym.json")], "swe-gym", tmp_path / "gym.jsonl")
    assert json.loads((tmp_path / "gym.jsonl").read_text())["messages"][1]["content"] == task


def test_swe_gym_rows_with_a_tools_column_keep_it(tmp_path):
    rows = [{"instance_id": "getmoto__moto-5752", "messages": _openhands_text_format(True, False),
             "tools": [t["function"] for t in _GYM_TOOLS]}]
    (tmp_path / "gym.json").write_text(json.dumps(rows))
    import_files([str(tmp_path / "gym.json")], "swe-gym", tmp_path / "gym.jsonl")
    assert json.loads((tmp_path / "gym.jsonl").read_text())["tools"] == _GYM_TOOLS


def test_sharegpt_system_column_bare_tools_and_openhands_markup(tmp_path):
    tools = [{"name": "execute_bash", "description": "Run a bash command.",
              "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}]
    row = {"id": "adp-1", "system": "You are OpenHands agent.", "tools": json.dumps(tools), "conversations": [
        {"from": "human", "value": "How many files are in /etc?"},
        {"from": "function_call", "value": "I will count them.\n\n<function=execute_bash>\n<parameter=command>\n"
                                           "ls -1 /etc | wc -l\n</parameter>\n</function>"},
        {"from": "observation", "value": "EXECUTION RESULT of [execute_bash]:\n220"},
        {"from": "gpt", "value": "There are 220."}]}
    (tmp_path / "adp.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "adp.out.jsonl"
    import_files([str(tmp_path / "adp.jsonl")], "sharegpt", out)
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(m["role"], m["content"]) for m in rec["messages"]] == [
        ("system", "You are OpenHands agent."), ("user", "How many files are in /etc?"),
        ("assistant", "I will count them."), ("tool", "220"), ("assistant", "There are 220.")]
    assert _calls(rec) == [("execute_bash", {"command": "ls -1 /etc | wc -l"})]
    assert rec["tools"] == [{"type": "function", "function": tools[0]}]  # as vLLM renders tools


def test_swe_smith_json_string_messages(tmp_path):
    _, (rec,), _ = _import(tmp_path, "swe-smith", "swe_smith.jsonl")
    assert rec["id"].endswith("8qa84d2e") and rec["resolved"] is True and rec["tools"] == []
    assert _calls(rec) == [("bash", {"command": "ls /testbed"}), ("submit", {})]
    assert rec["messages"][3] == {"role": "tool", "tool_call_id": "toolu_01", "content": "pydantic\ntests"}


_SWE_AGENT_TOOLS = [  # SWE-smith's text split: SWE-agent's tools, described in its system message as OpenHands does
    {"type": "function", "function": {"name": "bash", "description": "Execute a bash command in the terminal.\n",
                                      "parameters": {"type": "object", "properties": {"command": {
                                          "type": "string", "description": "The bash command to execute.\nCan be "
                                                                           "`ctrl+c` to interrupt."}},
                                                     "required": ["command"]}}},
    {"type": "function", "function": {"name": "submit", "description": "Finish the interaction."}},
    {"type": "function", "function": {"name": "str_replace_editor", "description": "Custom editing tool.",
                                      "parameters": {"type": "object", "properties": {
                                          "command": {"type": "string", "description": "The commands to run.",
                                                      "enum": ["view", "create", "str_replace"]},
                                          "view_range": {"type": "array", "description": "Lines to show."}},
                                                     "required": ["command"]}}},
]


def test_swe_agent_tools_described_in_prose_become_the_records_tools(tmp_path, qwen_tokenizer):
    messages = [{"role": "system", "content": "You are a helpful assistant." + _described(_SWE_AGENT_TOOLS, True)},
                {"role": "user", "content": "<pr_description>\nvalidate_call loses defaults\n</pr_description>"},
                {"role": "assistant", "content": "Let me look.\n\n<function=str_replace_editor>\n<parameter=command>"
                                                 "view</parameter>\n<parameter=view_range>[1, 5]</parameter>\n"
                                                 "</function>"},
                {"role": "user", "content": "OBSERVATION:\n1 import x"},
                {"role": "assistant", "content": "<function=submit>\n</function>"}]
    row = {"instance_id": "pydantic__pydantic.acb0f10f.combine_file__0a1b2c", "messages": json.dumps(messages)}
    (tmp_path / "smith.jsonl").write_text(json.dumps(row) + "\n")
    import_files([str(tmp_path / "smith.jsonl")], "swe-smith", tmp_path / "out.jsonl")
    rec = json.loads((tmp_path / "out.jsonl").read_text())
    assert rec["tools"] == _SWE_AGENT_TOOLS  # read back from the prose: these tools' schemas lose nothing in it
    assert rec["messages"][0]["content"] == "You are a helpful assistant."
    assert _calls(rec) == [("str_replace_editor", {"command": "view", "view_range": [1, 5]}), ("submit", {})]
    text = ChatRenderer(qwen_tokenizer).text(template_messages(rec["messages"]), rec["tools"])
    assert "<function=" not in text and "You have access to the following functions" not in text


def test_a_call_written_as_text_is_answered_by_the_next_user_message(tmp_path):
    # SWE-smith's text split (SWE-agent without function calling): the observation comes back as a user message.
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "<pr_description>\nvalidate_call loses defaults\n</pr_description>"},
                {"role": "assistant", "content": "Let me explore.\n\n<function=bash>\n<parameter=command>ls /testbed"
                                                 "</parameter>\n</function>"},
                {"role": "user", "content": "OBSERVATION:\npydantic\ntests"},
                {"role": "assistant", "content": "Now I know the layout."},
                {"role": "user", "content": "Please continue."},
                {"role": "assistant", "content": "<function=submit>\n</function>"}]
    row = {"instance_id": "pydantic__pydantic.acb0f10f.combine_file__0a1b2c", "traj_id": "t1",
           "messages": json.dumps(messages)}
    (tmp_path / "smith.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "smith.out.jsonl"
    import_files([str(tmp_path / "smith.jsonl")], "swe-smith", out)
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant", "tool", "assistant", "user",
                                                   "assistant"]
    assert rec["messages"][3] == {"role": "tool", "tool_call_id": rec["messages"][2]["tool_calls"][0]["id"],
                                  "content": "OBSERVATION:\npydantic\ntests"}
    assert _calls(rec) == [("bash", {"command": "ls /testbed"}), ("submit", {})]


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
    # a run folder named with a time (or a `#`): the id is still the file's stem (it was the folder's name cut at `:`)
    # As SWE-agent writes a batch run: a folder per instance, and the run's preds.json and config beside them (read
    # as a trajectory, preds.json was a reject over the reject limit)
    run = tmp_path / "run_2024-05-01T12:00:00#2"
    (run / "marshmallow-code__marshmallow-1867").mkdir(parents=True)
    shutil.copy(FIXTURES / "marshmallow-code__marshmallow-1867.traj", run / "marshmallow-code__marshmallow-1867")
    (run / "preds.json").write_text(json.dumps({"marshmallow-code__marshmallow-1867": {"model_patch": ""}}))
    (run / "run_batch.config.json").write_text("{}")
    import_files([str(run)], "swe-agent", tmp_path / "run.jsonl", max_reject_fraction=0)
    assert _records_and_rejects(tmp_path / "run.jsonl")[0][0]["instance_id"] == "marshmallow-code__marshmallow-1867"
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


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _records_and_rejects(out):
    rejects = out.with_name(out.stem + ".rejects.jsonl")
    return ([json.loads(line) for line in out.read_text().splitlines()],
            [json.loads(line) for line in rejects.read_text().splitlines()] if rejects.exists() else [])


def test_content_parts_from_parquet_join_text_with_newlines_and_reject_other_parts(tmp_path):
    # One Arrow schema for all parts: the text parts come back with `image_url: null`, the image part with
    # `text: null`. vLLM joins text parts with "\n" before a string-content template renders them.
    text = [{"type": "text", "text": "line A"}, {"type": "text", "text": "line B"}]
    image = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "x.png"}}]
    rows = [{"instance_id": "a__b-1", "trajectory_id": f"t{n}", "trajectory": [
        {"role": "user", "content": parts}, {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}]}
        for n, parts in ((1, text), (2, image))]
    out = tmp_path / "out.jsonl"
    counts = import_files([str(_parquet(tmp_path / "parts.parquet", rows))], "nvidia", out, max_reject_fraction=1)
    assert counts["rejected"] == {"bad_message": 1}
    (rec,), (reject,) = _records_and_rejects(out)
    assert rec["messages"][0]["content"] == "line A\nline B"
    assert reject == {"where": f"{tmp_path / 'parts.parquet'}:2", "reason": "bad_message",
                      "detail": "message 0 content part 1 is 'image_url', not text", "id": "t2"}


def test_a_row_no_check_foresaw_fails_naming_its_file_and_row(tmp_path):
    (tmp_path / "sg.jsonl").write_text(json.dumps({"conversations": ["not a turn"]}) + "\n")
    with pytest.raises(InputError, match=r"sg\.jsonl:1: cannot import this row as sharegpt: AttributeError"):
        import_files([str(tmp_path / "sg.jsonl")], "sharegpt", tmp_path / "o.jsonl", max_reject_fraction=1)
    assert not (tmp_path / "o.jsonl").exists()


def _two_calls(arguments):
    call = lambda i, name, args: {"id": i, "type": "function", "function": {"name": name, "arguments": args}}
    return [{"role": "user", "content": "t"},
            {"role": "assistant", "content": "", "tool_calls": [call("c1", "execute_bash", arguments[0]),
                                                                call("c2", "str_replace_editor", arguments[1])]},
            {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2"},
            {"role": "assistant", "content": "done"}]


def test_arguments_stored_as_objects_lose_the_nulls_arrow_fills_in(tmp_path):
    objects = ({"command": "ls"}, {"command": "view", "path": "/w"})
    rows = [{"instance_id": "a__b-3", "trajectory_id": "t3", "trajectory": _two_calls(objects)}]
    out = tmp_path / "out.jsonl"
    import_files([str(_parquet(tmp_path / "args.parquet", rows))], "nvidia", out)
    (rec,), _ = _records_and_rejects(out)
    assert _calls(rec) == [("execute_bash", {"command": "ls"}), ("str_replace_editor", objects[1])]
    # JSONL: an object's nulls may be Arrow's too (a `datasets` export); a JSON string's are the model's.
    strings = ('{"command": "ls", "timeout": null}', {"command": "view", "path": "/w", "view_range": None})
    (tmp_path / "args.jsonl").write_text(json.dumps({"instance_id": "a__b-3", "trajectory": _two_calls(strings)}))
    import_files([str(tmp_path / "args.jsonl")], "nvidia", out)
    (rec,), _ = _records_and_rejects(out)
    assert _calls(rec) == [("execute_bash", {"command": "ls", "timeout": None}), ("str_replace_editor", objects[1])]


@pytest.mark.parametrize("arguments", ["", None])
def test_empty_or_missing_arguments_are_no_json_object(tmp_path, arguments):
    """Not `{}`: that would train a call without the arguments the model left out, which vLLM could not render."""
    row = {"instance_id": "a__b-3", "trajectory_id": "t", "trajectory": _two_calls((arguments, "{}"))}
    (tmp_path / "in.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    import_files([str(tmp_path / "in.jsonl")], "nvidia", out, max_reject_fraction=1)
    records, (reject,) = _records_and_rejects(out)
    assert not records and reject["reason"] == "invalid_tool_arguments"


@pytest.mark.parametrize("fmt,row,named", [
    ("sharegpt", {"id": "r", "conversations": [
        {"from": "human", "value": "task"}, {"from": "gpt", "value": "<tool_call>\n{\"name\": \"x\", \"arguments\": {}}\n</tool_call>"},
        {"from": "observation", "value": "out"},
        {"from": "gpt", "value": "<tool_call>\n{\"name\": \"x\", \"arguments\": {\n</tool_call>"}]},
     "turn 3: "),
    ("nvidia", {"instance_id": "a__b-3", "trajectory_id": "r", "trajectory": [
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "name": "x", "arguments": "{}"}]}]},
     "message 1: ")])
def test_a_bad_tool_call_is_named_by_its_message(tmp_path, fmt, row, named):
    """A malformed call written as text, or a structured one without `function`, is located as every other reject
    is (`message i`, ShareGPT's `turn j`): in a trajectory of a hundred turns the detail alone did not say which."""
    (tmp_path / "in.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    import_files([str(tmp_path / "in.jsonl")], fmt, out, max_reject_fraction=1)
    (reject,) = _records_and_rejects(out)[1]
    assert reject["reason"] in ("invalid_tool_arguments", "bad_tool_call") and reject["detail"].startswith(named)


@pytest.mark.parametrize("fmt,id_column", [("nvidia", "trajectory_id"), ("nebius", "trajectory_id"),
                                           ("swe-smith", "traj_id")])
def test_rejects_name_the_rows_own_id(tmp_path, fmt, id_column):
    row = {"instance_id": "a__b-4", id_column: "own-id", "trajectory": [{"role": "user", "content": "t"}],
           "tools": [], "messages": json.dumps([{"role": "user", "content": "t"}])}
    (tmp_path / "in.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    import_files([str(tmp_path / "in.jsonl")], fmt, out, max_reject_fraction=1)
    _, (reject,) = _records_and_rejects(out)
    assert (reject["reason"], reject["id"]) == ("no_assistant_turn", "own-id")


def test_a_legacy_function_call_is_a_tool_call(tmp_path):
    turn = {"role": "assistant", "content": "Let me check.",
            "function_call": {"name": "execute_bash", "arguments": '{"command": "ls"}'}}
    both = {**turn, "tool_calls": [{"id": "c", "type": "function",
                                    "function": {"name": "think", "arguments": '{"thought": "x"}'}}]}
    rows = [{"instance_id": "a__b-5", "trajectory_id": f"t{n}", "trajectory": [
        {"role": "user", "content": "t"}, assistant, {"role": "function", "name": "execute_bash", "content": "r"},
        {"role": "assistant", "content": "done"}]} for n, assistant in ((1, turn), (2, both))]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    import_files([str(tmp_path / "in.jsonl")], "nvidia", out, max_reject_fraction=1)
    (rec,), (reject,) = _records_and_rejects(out)
    assert _calls(rec) == [("execute_bash", {"command": "ls"})] and rec["messages"][1]["content"] == "Let me check."
    assert rec["messages"][2]["tool_call_id"] == rec["messages"][1]["tool_calls"][0]["id"]
    assert (reject["reason"], reject["id"]) == ("bad_message", "t2")


def test_swe_gym_text_may_mention_tool_call_tags(tmp_path):
    said = "I will grep for <tool_call> usage."
    row = {"id": "g1", "instance_id": "g", "messages": [
        {"role": "user", "content": "t"},
        {"role": "assistant", "content": f"{said}\n<function=execute_bash>\n<parameter=command>grep -rn '<tool_call>' "
                                         "src</parameter>\n</function>"},
        {"role": "user", "content": "EXECUTION RESULT of [execute_bash]:\nsrc/a.py"},
        {"role": "assistant", "content": "Done."}]}
    (tmp_path / "gym.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    import_files([str(tmp_path / "gym.jsonl")], "swe-gym", out)
    (rec,), _ = _records_and_rejects(out)
    assert rec["messages"][1]["content"] == said
    assert _calls(rec) == [("execute_bash", {"command": "grep -rn '<tool_call>' src"})]


def test_sharegpt_function_call_list_is_calls_made_at_once(tmp_path):
    """LLaMA-Factory's FunctionFormatter reads a list of `{name, arguments}` as parallel calls; it was trained as the
    assistant's text."""
    calls = [{"name": "execute_bash", "arguments": {"command": "ls"}},
             {"name": "execute_bash", "arguments": {"command": "pwd"}}]
    row = {"id": "sg-3", "conversations": [
        {"from": "human", "value": "Where am I?"}, {"from": "function_call", "value": json.dumps(calls)},
        {"from": "observation", "value": "a.py"}, {"from": "observation", "value": "/w"},
        {"from": "gpt", "value": "In /w."}]}
    (tmp_path / "sg.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    import_files([str(tmp_path / "sg.jsonl")], "sharegpt", out)
    (rec,), _ = _records_and_rejects(out)
    assert _calls(rec) == [("execute_bash", {"command": "ls"}), ("execute_bash", {"command": "pwd"})]
    assert rec["messages"][1]["content"] == ""
    assert [m["tool_call_id"] for m in rec["messages"][2:4]] == [c["id"] for c in rec["messages"][1]["tool_calls"]]


def test_empty_text_parts_are_skipped_as_vllm_skips_them():
    """vLLM's chat_utils keeps a part only `if parse_res:`; an empty one was joined, a blank line vLLM never shows."""
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": ""}, "", {"type": "text", "text": "second"}]
    assert text_of(parts, 0) == "first\nsecond"


@pytest.mark.parametrize("system", [None, "You are a coding agent."])
def test_sharegpt_rejects_name_the_turn_as_conversations_numbers_it(tmp_path, system):
    """With a `system` column, the record's messages count it first: a detail said `message 2` of `conversations[1]`."""
    row = {"id": "sg-4", "system": system, "conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": " "}, {"from": "human", "value": "?"},
        {"from": "gpt", "value": "hello"}]}
    (tmp_path / "sg.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    import_files([str(tmp_path / "sg.jsonl")], "sharegpt", out, max_reject_fraction=1)
    _, (reject,) = _records_and_rejects(out)
    assert (reject["reason"], reject["detail"]) == ("empty_assistant_turn", "turn 1")
    if system:  # the record's message 0
        surrogate = {**row, "system": "\udc80", "conversations": [row["conversations"][0], row["conversations"][3]]}
        (tmp_path / "sg.jsonl").write_text(json.dumps(surrogate) + "\n")
        import_files([str(tmp_path / "sg.jsonl")], "sharegpt", out, max_reject_fraction=1)
        _, (reject,) = _records_and_rejects(out)
        assert reject["detail"] == "the `system` column holds a lone surrogate U+DC80, which UTF-8 cannot encode"


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_parquet_values_json_has_no_type_for_are_read_as_json(tmp_path, qwen_tokenizer):
    """Arrow gives timestamp, decimal and binary columns as Python objects: a `created_at` beside the messages, or
    a time on each message, was a TypeError traceback (not JSON serializable) in import, render and prepare."""
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq
    from data_samples import samples

    from swehero.data.render import render_files

    rows = samples()[:2]
    when = datetime.datetime(2026, 12, 7, 19, 30, tzinfo=datetime.timezone.utc)
    for row in rows:
        row.update(created_at=when, cost=decimal.Decimal("0.125"), raw=b"\xff\x00", note=b"caf\xc3\xa9",
                   metadata={"stage": "zero"})
        for message in row["messages"]:
            message["timestamp"] = when
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "canonical.parquet")
    out = tmp_path / "out.jsonl"
    assert import_files([str(tmp_path / "canonical.parquet")], "canonical", out)["written"] == 2
    first = json.loads(out.read_text().splitlines()[0])
    assert (first["created_at"], first["cost"], first["raw"], first["note"]) == \
        ("2026-12-07T19:30:00+00:00", 0.125, "/wA=", "café")
    assert first["messages"][0]["timestamp"] == "2026-12-07T19:30:00+00:00"
    stats = render_files([str(tmp_path / "canonical.parquet")], qwen_tokenizer, tmp_path / "r.jsonl", "all", 0.0)
    assert stats["written"] == 2, stats
    # a map column's entries come as (key, value) tuples
    labels = pa.table({"labels": pa.array([[("at", when)]], type=pa.map_(pa.string(), pa.timestamp("s", "UTC")))})
    pq.write_table(labels, tmp_path / "map.parquet")
    from swehero.data.sources import parquet_rows

    assert [row for _, row in parquet_rows(tmp_path / "map.parquet")] == [{"labels": [["at", first["created_at"]]]}]
