"""What we train on is what vLLM parses: tool calls rendered by the chat template come back exactly, through
our JSON-aware parser and vLLM's own parser classes (vLLM 0.32's hermes parser drops some, shown here)."""

import json

import pytest
from transformers import AutoTokenizer

from swehero import hermes

vllm_hermes = pytest.importorskip("vllm.tool_parsers.hermes_tool_parser")
from swehero.serve.vllm_plugin import JsonAwareHermesToolParser  # noqa: E402

CASES = {
    "code": {"command": "create", "path": "/w/a.py", "file_text": "def f(x):\n    return {'a': [1, 2]}\n"},
    "quotes": {"command": "execute", "cmd": "grep -rn \"say \\\"hi\\\"\" . | head -n 5"},
    "newlines": {"thought": "line one\nline two\r\n\ttabbed\n\n"},
    "non_ascii": {"message": "Größe ändern — 修复 ✓ 🙂"},
    "literal_end_tag": {"command": "str_replace", "old_str": "END = '</tool_call>'", "new_str": "END = \"</tool_call>\"\n"},
    "start_tag_inside": {"file_text": "<tool_call>\n{\"name\": \"x\"}\n</tool_call>"},
    "empty": {},
}


def render(tokenizer, calls, content=""):
    """The assistant turn exactly as the chat template writes it (what training sees)."""
    message = {"role": "assistant", "content": content, "tool_calls": [
        {"type": "function", "function": {"name": name, "arguments": args}} for name, args in calls]}
    text = tokenizer.apply_chat_template([{"role": "user", "content": "go"}, message], tokenize=False)
    return text.split("<|im_start|>assistant\n", 1)[1].rsplit("<|im_end|>", 1)[0]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("case", CASES)
def test_round_trip_through_our_parser_and_the_plugin(tokenizer, case):
    calls = [("str_replace_editor", CASES[case]), ("think", {"thought": "next"})]
    text = render(tokenizer, calls, content="Let me edit.")
    content, parsed = hermes.parse(text)
    assert content.strip() == "Let me edit."
    assert [(c["name"], c["arguments"]) for c in parsed] == calls
    result = JsonAwareHermesToolParser(tokenizer).extract_tool_calls(text, None)
    assert result.tools_called
    assert [(c.function.name, json.loads(c.function.arguments)) for c in result.tool_calls] == calls


def test_vllm_hermes_drops_a_call_with_a_literal_end_tag(tokenizer):
    text = render(tokenizer, [("str_replace_editor", CASES["literal_end_tag"])])
    assert not vllm_hermes.Hermes2ProToolParser(tokenizer).extract_tool_calls(text, None).tools_called
    assert JsonAwareHermesToolParser(tokenizer).extract_tool_calls(text, None).tools_called


@pytest.mark.parametrize("case", ["code", "literal_end_tag", "non_ascii"])
def test_streaming_reassembles_the_same_call(tokenizer, case):
    text = render(tokenizer, [("str_replace_editor", CASES[case])])
    parser = JsonAwareHermesToolParser(tokenizer)
    name, arguments, previous = None, "", ""
    for end in range(1, len(text) + 1, 3):
        current = text[:end] if end + 3 <= len(text) else text
        delta = parser.extract_tool_calls_streaming(previous, current, current[len(previous):], [], [], [], None)
        previous = current
        for call in (delta.tool_calls if delta else []):
            function = call.function if isinstance(call.function, dict) else call.function.model_dump()
            name = function.get("name") or name
            arguments += function.get("arguments") or ""
        if current is text:
            break
    assert name == "str_replace_editor" and json.loads(arguments) == CASES[case]


@pytest.mark.parametrize("text, error", [
    ('<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>', "not valid JSON"),
    ('<tool_call>\n{"name": "f", "arguments": {}} trailing\n</tool_call>', "text after a tool call"),
    ('<tool_call>\n["not", "a", "call"]\n</tool_call>', "not valid JSON"),
])
def test_malformed_calls_are_reported(text, error):
    with pytest.raises(hermes.MalformedToolCall, match=error):
        hermes.parse(text)


def test_plain_text_and_unclosed_final_call():
    assert hermes.parse("just text") == ("just text", [])
    content, calls = hermes.parse('thinking\n<tool_call>\n{"name": "finish", "arguments": {"message": "done"}}')
    assert content == "thinking\n" and calls == [{"name": "finish", "arguments": {"message": "done"}}]
    # A double-encoded arguments string is accepted as the object it holds.
    _, calls = hermes.parse('<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1}"}\n</tool_call>')
    assert calls == [{"name": "f", "arguments": {"a": 1}}]
