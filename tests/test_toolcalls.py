"""What we train on is what vLLM parses: tool calls rendered by the chat template come back exactly, through
our JSON-aware reader and vLLM's own parser classes (vLLM 0.32's hermes parser drops some, shown here); and the
three places that read tool calls written as text (the importers, the agent, the vLLM plugin) read every tricky
text the same way, but function markup outside `<tool_call>`, which only the importers of text-format trajectories
read as calls. Streamed, the plugin sends the calls the finished reply holds."""

import json
import random

import pytest
from transformers import AutoTokenizer

from swehero import toolcalls

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
    content, parsed = toolcalls.parse(text)
    assert content == "Let me edit."
    assert [(c["name"], c["arguments"]) for c in parsed] == calls
    result = JsonAwareHermesToolParser(tokenizer).extract_tool_calls(text, None)
    assert result.tools_called and result.content == "Let me edit."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in result.tool_calls] == calls


def test_vllm_hermes_drops_a_call_with_a_literal_end_tag(tokenizer):
    text = render(tokenizer, [("str_replace_editor", CASES["literal_end_tag"])])
    assert not vllm_hermes.Hermes2ProToolParser(tokenizer).extract_tool_calls(text, None).tools_called
    assert JsonAwareHermesToolParser(tokenizer).extract_tool_calls(text, None).tools_called


def stream(tokenizer, text: str, step: int = 3) -> tuple[str, list[tuple[str, str]]]:
    """(content, [(name, arguments text)]) as the plugin streams `text` arriving `step` characters at a time."""
    parser = JsonAwareHermesToolParser(tokenizer)
    content, calls, previous = "", {}, ""
    for end in range(step, len(text) + step, step):
        current = text[:end]
        delta = parser.extract_tool_calls_streaming(previous, current, current[len(previous):], [], [], [], None)
        previous = current
        content += (delta.content or "") if delta else ""
        for call in (delta.tool_calls if delta else []):
            function = call.function if isinstance(call.function, dict) else call.function.model_dump()
            name, arguments = calls.get(call.index, ("", ""))
            calls[call.index] = (name + (function.get("name") or ""), arguments + (function.get("arguments") or ""))
    return content, [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("case", ["code", "literal_end_tag", "non_ascii"])
def test_streaming_reassembles_the_same_call(tokenizer, case):
    _, [(name, arguments)] = stream(tokenizer, render(tokenizer, [("str_replace_editor", CASES[case])]))
    assert name == "str_replace_editor" and json.loads(arguments) == CASES[case]


@pytest.mark.parametrize("text, error", [
    ('<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>', "not valid JSON"),
    ('<tool_call>\n{"name": "f", "arguments": {}} trailing\n</tool_call>', "text after a tool call"),
    ('<tool_call>\n["not", "a", "call"]\n</tool_call>', "not valid JSON"),
])
def test_malformed_calls_are_reported(text, error):
    with pytest.raises(toolcalls.MalformedToolCall, match=error):
        toolcalls.parse(text)


def test_a_typed_markup_parameter_may_be_null():
    """`null` is a value of any type there, read as it was before the checks of numbers and nesting came in."""
    text = ("<tool_call>\n<function=str_replace_editor>\n<parameter=command>\nview\n</parameter>\n"
            "<parameter=view_range>\nnull\n</parameter>\n</function>\n</tool_call>")
    assert toolcalls.parse(text)[1] == [{"name": "str_replace_editor",
                                         "arguments": {"command": "view", "view_range": None}}]


def test_plain_text_and_unclosed_final_call():
    assert toolcalls.parse("just text") == ("just text", [])
    content, calls = toolcalls.parse('thinking\n<tool_call>\n{"name": "finish", "arguments": {"message": "done"}}')
    assert content == "thinking" and calls == [{"name": "finish", "arguments": {"message": "done"}}]
    # A double-encoded arguments string is accepted as the object it holds.
    _, calls = toolcalls.parse('<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1}"}\n</tool_call>')
    assert calls == [{"name": "f", "arguments": {"a": 1}}]


MARKUP = {
    "literal_end_tag": ("<tool_call>\n<function=str_replace_editor>\n<parameter=command>\nstr_replace\n</parameter>\n"
                        "<parameter=old_str>\nEND = '</tool_call>'\n</parameter>\n</function>\n</tool_call>"),
    "non_ascii_typed": ("Lecture d'abord — 先看\n<tool_call>\n<function=str_replace_editor>\n<parameter=command>\nview"
                        "\n</parameter>\n<parameter=path>\n/w/ä.py\n</parameter>\n<parameter=view_range>\n[1, 20]\n"
                        "</parameter>\n</function>\n</tool_call>"),
    "two_calls": ("<tool_call>\n<function=think>\n<parameter=thought>\na\n\n</parameter>\n</function>\n</tool_call>\n"
                  "<tool_call>\n<function=finish>\n<parameter=message>\ndone\n</parameter>\n</function>\n</tool_call>"),
}


def _three_readers(tokenizer, text: str) -> dict:
    """(content, [(name, arguments)]) as the importers, the agent and the vLLM plugin read `text`."""
    from swehero.agent.openai_policy import parse_text_tool_calls as agent_reader
    from swehero.data.importers import parse_text_tool_calls as importer_reader

    def calls(openai_calls):
        return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in openai_calls]

    content, imported = importer_reader(text, "c")
    agent_content, agent_calls = agent_reader(text)
    served = JsonAwareHermesToolParser(tokenizer).extract_tool_calls(text, None)
    return {"importer": (content, calls(imported)), "agent": (agent_content, calls(agent_calls)),
            "plugin": ((served.content or "") if served.tools_called else text,
                       [(c.function.name, json.loads(c.function.arguments)) for c in served.tool_calls])}


@pytest.mark.parametrize("case", CASES)
def test_rendered_calls_read_alike_by_importers_agent_and_plugin(tokenizer, case):
    calls = [("str_replace_editor", CASES[case]), ("think", {"thought": "next"})]
    read = _three_readers(tokenizer, render(tokenizer, calls, content="Let me edit."))
    assert read["importer"] == read["agent"] == read["plugin"] == ("Let me edit.", calls)


@pytest.mark.parametrize("case", MARKUP)
def test_function_markup_reads_alike_by_importers_agent_and_plugin(tokenizer, case):
    read = _three_readers(tokenizer, MARKUP[case])
    assert read["importer"] == read["agent"] == read["plugin"], read
    expected = {"literal_end_tag": [("str_replace_editor", {"command": "str_replace", "old_str": "END = '</tool_call>'"})],
                "non_ascii_typed": [("str_replace_editor", {"command": "view", "path": "/w/ä.py", "view_range": [1, 20]})],
                "two_calls": [("think", {"thought": "a\n"}), ("finish", {"message": "done"})]}[case]
    assert read["agent"][1] == expected


@pytest.mark.parametrize("body", [
    '{"name": "think", "arguments": {"thought": 1}',
    # what Python's decoder refuses besides bad JSON, which a model repeating itself writes: a number of 4,300+
    # digits, nesting 1,000 deep (the plugin's error was vLLM's HTTP 400, the agent's a failed episode); nesting
    # past MAX_NESTING, which Python 3.13 decodes; a float beyond a double's range or NaN, which would be written
    # back as Infinity and NaN, no JSON to a client
    '{"name": "execute_bash", "arguments": {"command": "ls", "timeout": ' + "1" * 5000 + "}}",
    '{"name": "str_replace_editor", "arguments": {"command": "view", "path": "/w", "view_range": '
    + "[" * 3000 + "]" * 3000 + "}}",
    '{"name": "str_replace_editor", "arguments": {"command": "view", "path": "/w", "view_range": '
    + "[" * 150 + "]" * 150 + "}}",
    '<function=str_replace_editor>\n<parameter=command>\nview\n</parameter>\n<parameter=view_range>\n'
    + "[" * 150 + "]" * 150 + "\n</parameter>\n</function>",
    '{"name": "execute_bash", "arguments": {"command": "ls", "timeout": 1' + "0" * 400 + '.0}}',
    '<function=execute_bash>\n<parameter=command>\nls\n</parameter>\n<parameter=timeout>\nNaN\n</parameter>\n'
    "</function>"])
def test_a_malformed_call_is_refused_by_importers_plugin_and_agent_alike(tokenizer, body):
    from swehero.agent.openai_policy import parse_text_tool_calls as agent_reader
    from swehero.data.importers import parse_text_tool_calls as importer_reader
    from swehero.data.trajectory import Reject

    text = f"ok <tool_call>\n{body}\n</tool_call>"
    with pytest.raises(Reject, match="not (a )?valid"):
        importer_reader(text, "c")
    plugin = JsonAwareHermesToolParser(tokenizer).extract_tool_calls(text, None)
    assert not plugin.tools_called and plugin.content == text
    assert agent_reader(text) == (text, [])  # a reply without a call, as the plugin returns it
    assert all(not toolcalls.streamed(text[:n]).calls for n in (len(text) // 2, len(text)))  # nor while streaming




@pytest.mark.parametrize("body", ['{"name": "execute_bash", "parameters": {"command": "ls"}}', '{"name": "finish"}'])
def test_a_call_without_arguments_is_no_call_to_vllm_the_plugin_the_agent_and_the_importers(tokenizer, body):
    """The agent answered a call written with `parameters` as one with no arguments ("missing command"), where
    OpenHands behind vLLM sees no call; and stored it back as `"arguments": {}`, a text the model never wrote."""
    from swehero.agent.openai_policy import parse_text_tool_calls as agent_reader
    from swehero.data.importers import parse_text_tool_calls as importer_reader
    from swehero.data.trajectory import Reject

    text = f"Let me look.\n<tool_call>\n{body}\n</tool_call>"
    assert not vllm_hermes.Hermes2ProToolParser(tokenizer).extract_tool_calls(text, None).tools_called
    assert not JsonAwareHermesToolParser(tokenizer).extract_tool_calls(text, None).tools_called
    assert agent_reader(text) == (text, [])
    with pytest.raises(Reject):
        importer_reader(text, "c")


REPLIES = [(content, n) for content in ["Let me edit.", "", "Two lines\n\nthen a blank one", "  spaced  ", "ends\n"]
           for n in (0, 1, 2) if content or n]  # an empty reply is not stored


@pytest.mark.parametrize("content, n_calls", REPLIES)
def test_a_served_reply_renders_back_to_the_text_the_model_wrote(tokenizer, content, n_calls):
    """A reply the model wrote as the template writes turns, read by the plugin (as vLLM serves it) and stored by
    the agent, renders back to that very text: in later steps the model reads its own turn as in training."""
    from swehero.agent.openai_policy import assistant_message

    calls = [("str_replace_editor", CASES["literal_end_tag"]), ("think", {"thought": "next"})][:n_calls]
    text = render(tokenizer, calls, content)
    served = JsonAwareHermesToolParser(tokenizer).extract_tool_calls(text, None)
    tool_calls = [{"id": f"c{i}", "type": "function", "function": c.function.model_dump()}
                  for i, c in enumerate(served.tool_calls)] if served.tools_called else None
    stored = assistant_message(served.content, tool_calls)
    stored_calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in stored.get("tool_calls", [])]
    assert render(tokenizer, stored_calls, stored["content"]) == text


def test_vllm_hermes_keeps_the_newline_the_template_writes_before_a_call(tokenizer):
    """Stored as vLLM's parser returns it, the content renders with two newlines before the call."""
    text = render(tokenizer, [("think", {"thought": "next"})], "Let me edit.")
    assert vllm_hermes.Hermes2ProToolParser(tokenizer).extract_tool_calls(text, None).content == "Let me edit.\n"


PROSE_WITH_TAGS = [
    "The parser splits `<tool_call>` blocks with a regex. Let me look.",
    "A block opens with <tool_call>{ and closes with </tool_call>.",
    "<tool_call>",
    "x <tool_call>{} y",
    'It wrote <tool_call>\n{"name": 1}\n</tool_call> and stopped.',
    "`<tool_call><function=x>` is Qwen3-Coder's form.",
]


@pytest.mark.parametrize("content", PROSE_WITH_TAGS)
def test_a_tool_call_tag_named_before_a_call_is_content(tokenizer, content):
    """Text before a call may name `<tool_call>`: a tag that opens no call is prose when another tag follows."""
    calls = [("execute_bash", {"command": "grep -rn '<tool_call>' vllm/"}), ("think", {"thought": "next"})]
    read = _three_readers(tokenizer, render(tokenizer, calls, content))
    assert read["importer"] == read["agent"] == read["plugin"] == (content, calls)


def test_a_tag_named_before_a_broken_last_call_leaves_the_reply_malformed():
    text = 'The <tool_call> tag.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>'
    with pytest.raises(toolcalls.MalformedToolCall, match="not valid JSON"):
        toolcalls.parse(text)


def test_random_template_renders_come_back_exactly(tokenizer):
    """Contents and arguments drawn from the characters and tags that trip readers up, rendered by the template,
    read back by the plugin exactly."""
    rng = random.Random(1)
    pieces = ["a", " ", "\n", '"', "\\", "<", ">", "{", "}", ":", "é", "😀", "null", toolcalls.START, toolcalls.END,
              "<function=x>", "</function>", "\n</tool_call>\n", "}\n</tool_call>"]

    def text():
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))

    parser = JsonAwareHermesToolParser(tokenizer)
    for _ in range(300):
        calls = [(rng.choice(["execute_bash", "think", "finish"]), {text(): text() for _ in range(rng.randint(0, 2))})
                 for _ in range(rng.randint(1, 2))]
        content = rng.choice(["", "Let me look.", text()])
        rendered = render(tokenizer, calls, content)
        served = parser.extract_tool_calls(rendered, None)
        read = (served.content or "", [(c.function.name, json.loads(c.function.arguments)) for c in served.tool_calls])
        assert read == (content, calls), rendered


BARE_MARKUP = {
    "named": "I looked at how the template writes `<function=NAME>` blocks; nothing to change.",
    "example": ("Done: OpenHands' text format, e.g.\n<function=finish>\n<parameter=message>\nok\n</parameter>\n"
                "</function>\nis now read."),
    "call": "Running it.\n<function=execute_bash>\n<parameter=command>ls -la</parameter>\n</function>",
}


@pytest.mark.parametrize("case", BARE_MARKUP)
def test_function_markup_outside_a_block_is_prose_to_the_agent_and_plugin(tokenizer, case):
    """As vLLM's hermes parser reads it: a served reply's calls are `<tool_call>` blocks."""
    read = _three_readers(tokenizer, BARE_MARKUP[case])
    assert read["agent"] == read["plugin"] == (BARE_MARKUP[case], [])
    result = vllm_hermes.Hermes2ProToolParser(tokenizer).extract_tool_calls(BARE_MARKUP[case], None)
    assert (result.tools_called, result.content) == (False, BARE_MARKUP[case])


def test_bare_function_markup_is_a_call_only_when_closed(tokenizer):
    """Text-format trajectories (SWE-Gym, SWE-smith) write each call as bare markup closed by `</function>`."""
    from swehero.data.importers import parse_text_tool_calls as importer_reader

    assert importer_reader(BARE_MARKUP["named"], "c") == (BARE_MARKUP["named"], [])
    assert importer_reader(BARE_MARKUP["named"], "c", markup_only=True) == (BARE_MARKUP["named"], [])
    assert _three_readers(tokenizer, BARE_MARKUP["call"])["importer"] == (
        "Running it.", [("execute_bash", {"command": "ls -la"})])


LONE_SURROGATE = '<tool_call>\n{"name": "execute_bash", "arguments": {"command": "printf \'\\ud83d\'"}}\n</tool_call>'


def test_a_lone_surrogate_escape_in_arguments_is_no_call(tokenizer):
    """Half an emoji (`\\ud83d` without its pair) was served as a call: the template then writes the character
    itself, which UTF-8 cannot encode, and every later prompt of the episode failed to tokenize (HTTP 400). It is a
    malformed call, the reply's text its content (as the escape, which is ASCII), whole and streamed."""
    served = JsonAwareHermesToolParser(tokenizer).extract_tool_calls(LONE_SURROGATE, None)
    assert not served.tools_called and served.content == LONE_SURROGATE
    assert stream(tokenizer, LONE_SURROGATE)[1] == []
    with pytest.raises(toolcalls.MalformedToolCall):
        toolcalls.parse(LONE_SURROGATE)
    tokenizer.apply_chat_template([{"role": "assistant", "content": served.content}], tokenize=True)


def test_non_ascii_arguments_are_served_as_the_template_writes_them(tokenizer):
    calls = [("think", CASES["non_ascii"])]
    served = JsonAwareHermesToolParser(tokenizer).extract_tool_calls(render(tokenizer, calls), None)
    assert served.tool_calls[0].function.arguments == json.dumps(CASES["non_ascii"], ensure_ascii=False)


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


STREAMED = {
    "prose_tag_then_call": 'The <tool_call> tag is special.\n<tool_call>\n{"name": "f", "arguments": {"a": "b"}}\n'
                           "</tool_call>",
    "arguments_a_list": '<tool_call>\n{"name": "f", "arguments": ["ls"]}\n</tool_call>',
    "arguments_double_encoded": '<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1}"}\n</tool_call>',
    "arguments_nan": '<tool_call>\n{"name": "f", "arguments": {"a": NaN}}\n</tool_call>',
    "no_arguments": '<tool_call>\n{"name": "finish"}\n</tool_call>',
    "broken_json": '<tool_call>\n{"name": "f", "arguments": {"a": ls}}\n</tool_call>',
    "markup_in_block": MARKUP["two_calls"],
    "two_calls": ('Look.\n<tool_call>\n{"name": "f", "arguments": {"a": "</tool_call>"}}\n</tool_call>'
                  '\n<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'),
}


@pytest.mark.parametrize("step", [1, 4])
@pytest.mark.parametrize("case", STREAMED)
def test_streaming_reads_as_the_finished_reply(tokenizer, case, step):
    """Streamed, the same calls with the same arguments text (always JSON), and the same content, newline before
    the first call aside (streamed content is vLLM's own); nothing of a body that cannot become a call."""
    text = STREAMED[case]
    served = JsonAwareHermesToolParser(tokenizer).extract_tool_calls(text, None)
    content, calls = stream(tokenizer, text, step)
    assert calls == [(c.function.name, c.function.arguments) for c in served.tool_calls]
    assert all(isinstance(_strict_json(arguments), dict) for _, arguments in calls)
    expected = served.content + "\n" if served.content and served.tools_called else served.content or ""
    assert content == expected


def test_a_call_left_unclosed_before_the_next_is_a_call_whole_or_streamed(tokenizer):
    """A second `<tool_call>` before the first's `</tool_call>`: the finished reply read the first as prose (its
    text the message's content) and ran the second alone, while streaming had sent the first alone. The first's
    body is whole: both readings give both calls."""
    text = ('<tool_call>\n{"name": "execute_bash", "arguments": {"command": "ls"}}\n<tool_call>\n'
            '{"name": "str_replace_editor", "arguments": {"command": "view", "path": "/workspace/repo/setup.py"}}\n'
            "</tool_call>")
    both = [("execute_bash", '{"command": "ls"}'),
            ("str_replace_editor", '{"command": "view", "path": "/workspace/repo/setup.py"}')]
    for step in (1, 4):
        assert stream(tokenizer, text, step) == ("", both)
    served = JsonAwareHermesToolParser(tokenizer).extract_tool_calls(text, None)
    assert [(c.function.name, c.function.arguments) for c in served.tool_calls] == both and not served.content
    assert toolcalls.parse(text)[0] == ""


def test_streaming_sends_no_call_after_a_broken_one(tokenizer):
    """A reply whose second call is broken is malformed; streamed, the first call was sent before the second began,
    and nothing of the second is."""
    first = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
    assert stream(tokenizer, first + STREAMED["broken_json"]) == ("", [("f", '{"a": 1}')])
    served = JsonAwareHermesToolParser(tokenizer).extract_tool_calls(first + STREAMED["broken_json"], None)
    assert not served.tools_called
