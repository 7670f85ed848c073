"""`swehero serve check` reads canonical trajectories as the data commands do: any other file is one line naming
the row and what is wrong with it, never a traceback or an empty "0/0" check."""

import json

import pytest
from click.testing import CliRunner
from data_samples import samples

from swehero.cli import main


def _check(path, tokenizer):
    return CliRunner().invoke(main, ["serve", "check", str(path), "--tokenizer", str(tokenizer)])


@pytest.mark.parametrize("content, problem", [
    ('{"id": "r", "input_ids": [1], "loss_mask": [0]}\n', ":1: not a canonical trajectory: missing_field: instance_id"),
    ('{"instance_id": "t", "repo": "o/r", "problem_statement": "p"}\n',  # a task file
     ":1: not a canonical trajectory: missing_field: id"),
    ("not json\n", ":1: not a canonical trajectory: malformed_json: "),
    ("", ": no trajectories to check"),
])
def test_a_file_of_anything_else_is_one_line_naming_the_row(content, problem, tiny_model_dir, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(content)
    result = _check(path, tiny_model_dir)
    assert result.exit_code == 1 and result.output.startswith(f"Error: {path}{problem}"), result.output
    assert result.output.count("\n") == 1


def test_bad_tool_arguments_and_missing_tools_name_the_row(tiny_model_dir, tmp_path):
    bad_args, no_tools = samples()[0], samples()[0]
    bad_args["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{not json"
    del no_tools["tools"]
    path = tmp_path / "t.jsonl"
    for record, problem in ((bad_args, "invalid_tool_arguments: message 2"), (no_tools, "missing_field: tools")):
        path.write_text(json.dumps(samples()[1]) + "\n" + json.dumps(record) + "\n")
        result = _check(path, tiny_model_dir)
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: {path}:2: not a canonical trajectory: {problem}"), result.output


@pytest.mark.slow  # loads vLLM's parsers
def test_a_json_array_of_trajectories_is_checked_as_prepare_reads_it(tiny_model_dir, tmp_path):
    pytest.importorskip("vllm")
    path = tmp_path / "t.json"
    path.write_text(json.dumps(samples()))
    result = _check(path, tiny_model_dir)
    assert "assistant turns parsed back exactly" in result.output, result.output


@pytest.mark.slow  # loads vLLM's parsers
def test_text_naming_the_tool_call_tag_before_a_call_is_read_back_exactly(tiny_model_dir, tmp_path):
    pytest.importorskip("vllm")
    record = samples()[0]
    turn = next(m for m in record["messages"] if m["role"] == "assistant" and m.get("tool_calls"))
    turn["content"] = "The parser splits `<tool_call>` blocks with a regex. Let me look."
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(record) + "\n")
    result = _check(path, tiny_model_dir)
    assert result.exit_code == 0, result.output
    turns = sum(m["role"] == "assistant" for m in record["messages"])
    assert f"swehero_hermes: {turns}/{turns} assistant turns parsed back exactly" in result.output, result.output
