import numpy as np
import pytest
from data_samples import USER, samples

from swehero.data.render import ChatRenderer, fit_length
from swehero.data.trajectory import template_messages, validate

USER_TEXT = USER["content"]


LLAMA_STYLE_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if tools %}<|start_header_id|>system<|end_header_id|>\n\nTools: {{ tools | tojson }}"
    "{%- if messages[0].role == 'system' %}\n{{ messages[0].content }}{%- endif %}<|eot_id|>"
    "{%- elif messages[0].role == 'system' %}<|start_header_id|>system<|end_header_id|>\n\n{{ messages[0].content }}<|eot_id|>"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}<|start_header_id|>assistant<|end_header_id|>\n\n{{ m.content }}"
    '{%- for c in m.tool_calls or [] %}{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}{%- endfor %}'
    "<|eot_id|>"
    "{%- elif m.role != 'system' %}<|start_header_id|>{{ 'ipython' if m.role == 'tool' else m.role }}<|end_header_id|>\n\n"
    "{{ m.content }}<|eot_id|>"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@pytest.fixture(scope="session")
def llama_style_tokenizer():
    """A throwaway byte-level BPE (500 merges, trained here) with a Llama-3-style template: a second tokenizer and a
    second template shape (no newline after the end-of-turn token, BOS from the template, tools in the system)."""
    from data_samples import samples
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [m["content"] for s in samples() for m in s["messages"]] * 5
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=500, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<pad>"
    )
    fast.chat_template = LLAMA_STYLE_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def renderer(qwen_tokenizer):
    return ChatRenderer(qwen_tokenizer)


@pytest.mark.parametrize("sample", samples(), ids=lambda s: s["id"])
def test_ids_equal_apply_chat_template_and_spans_equal_prefix_definition(renderer, qwen_tokenizer, sample):
    rec = validate(sample)
    out = renderer.render(rec)
    ref = qwen_tokenizer.apply_chat_template(template_messages(rec["messages"]), tools=rec["tools"], tokenize=True)
    assert out.input_ids.tolist() == ref["input_ids"]
    assert renderer.spans(rec["messages"], rec["tools"]) == renderer.prefix_spans(rec["messages"], rec["tools"])


@pytest.mark.parametrize("sample", samples(), ids=lambda s: s["id"])
def test_mask_covers_exactly_the_assistant_output(renderer, qwen_tokenizer, sample):
    rec = validate(sample)
    out = renderer.render(rec)
    im_start, im_end = qwen_tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assistants = [m for m in rec["messages"] if m["role"] == "assistant"]
    # every assistant turn's closing <|im_end|> is trained, no other <|im_end|> and no <|im_start|> is
    ends = np.flatnonzero(out.input_ids == im_end)
    assert out.loss_mask[ends].sum() == len(assistants)
    assert out.loss_mask[out.input_ids == im_start].sum() == 0
    # the trained tokens decode to the assistant turns' content and tool-call blocks, in order
    trained = qwen_tokenizer.decode(out.input_ids[out.loss_mask == 1].tolist())
    pos = 0
    for m in assistants:
        for piece in [m["content"].strip()] + [c["function"]["name"] for c in m.get("tool_calls") or []]:
            pos = trained.index(piece, pos)
    untrained = qwen_tokenizer.decode(out.input_ids[out.loss_mask == 0].tolist())
    for m in rec["messages"]:
        if m["role"] in ("user", "tool", "system"):
            assert m["content"] not in trained and m["content"] in untrained
    assert "assistant" not in trained.replace("assistant turn", "")


def test_last_policy_trains_only_final_turn(qwen_tokenizer):
    rec = validate(samples()[0])
    full = ChatRenderer(qwen_tokenizer, mask="all").render(rec)
    last = ChatRenderer(qwen_tokenizer, mask="last").render(rec)
    assert 0 < last.loss_mask.sum() < full.loss_mask.sum()
    first_trained = np.flatnonzero(last.loss_mask)[0]
    assert first_trained > full.turn_ends[-2]
    assert np.array_equal(last.loss_mask[first_trained:], full.loss_mask[first_trained:])


def test_fit_length_truncates_at_turn_boundary_or_drops(renderer):
    out = renderer.render(validate(samples()[0]))
    cut_at = out.turn_ends[1]
    cut = fit_length(out, cut_at + 3, "truncate")
    assert len(cut.input_ids) == cut_at and cut.turn_ends == out.turn_ends[:2]
    assert np.array_equal(cut.loss_mask, out.loss_mask[:cut_at])
    assert fit_length(out, cut_at + 3, "drop") is None
    assert fit_length(out, out.turn_ends[0] - 1, "truncate") is None
    assert fit_length(out, len(out.input_ids), "drop") is out


def test_validate_normalises_null_content_and_rejects_bad_records():
    from swehero.data.trajectory import Reject

    rec = samples()[0]
    rec["messages"][2]["content"] = None  # OpenAI: content null next to tool calls
    assert validate(rec)["messages"][2]["content"] == ""
    for mutate, reason in [
        (lambda r: r.pop("tools"), "missing_field"),
        (lambda r: r["messages"][1].update(role="robot"), "unknown_role"),
        (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments="[1, 2]"), "invalid_tool_arguments"),
        (lambda r: r["messages"][-1].update(content="", tool_calls=[]), "empty_assistant_turn"),
        (lambda r: r.update(messages=[m for m in r["messages"] if m["role"] != "assistant"]), "no_assistant_turn"),
        (lambda r: r.update(stage="three"), "bad_field"),
        # tool calls on a user message: the template decoded them, and prepare stopped with a JSONDecodeError
        (lambda r: r["messages"][1].update(tool_calls=[{"function": {"name": "execute_bash", "arguments": "ls"}}]),
         "bad_message"),
    ]:
        bad = samples()[0]
        mutate(bad)
        with pytest.raises(Reject) as e:
            validate(bad)
        assert e.value.reason == reason


@pytest.mark.parametrize("escape", [False, True], ids=["literal", "escaped"])
def test_an_assistant_turn_writing_a_special_token_is_rejected_however_its_arguments_spell_it(renderer, escape):
    """The check searched the stored message, where `arguments` is a JSON string: `\\u003c|im_end|>` in it passed,
    and the template, which renders the arguments decoded, wrote the token <|im_end|> mid-call, trained."""
    import json

    from swehero.data.trajectory import Reject

    arguments = json.dumps({"command": "grep -n '<|im_end|>' template.jinja"})
    record = samples()[0]
    record["messages"][2]["tool_calls"][0]["function"]["arguments"] = \
        arguments.replace("<", "\\u003c") if escape else arguments
    im_end = renderer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    rendered = renderer.render(validate(record))
    first = slice(rendered.turn_ends[0])
    turn = rendered.input_ids[first][rendered.loss_mask[first] == 1]
    assert (turn == im_end).sum() == 2  # the turn's closing marker, and the one its call writes: trained
    with pytest.raises(Reject, match=r"^special_token_in_turn: message 2 writes <\|im_end\|>$"):
        renderer.trainable(validate(record))
    record["messages"][3]["content"] = arguments  # a tool result may hold it, as when the model runs
    record["messages"][2]["tool_calls"][0]["function"]["arguments"] = json.dumps({"command": "ls"})
    assert renderer.trainable(validate(record)) == validate(record)


@pytest.mark.parametrize("sample", samples(), ids=lambda s: s["id"])
def test_second_tokenizer_and_template(llama_style_tokenizer, sample):
    tok = llama_style_tokenizer
    rec = validate(sample)
    renderer = ChatRenderer(tok)
    out = renderer.render(rec)
    ref = tok.apply_chat_template(template_messages(rec["messages"]), tools=rec["tools"], tokenize=True)
    assert out.input_ids.tolist() == ref["input_ids"]
    assert renderer.spans(rec["messages"], rec["tools"]) == renderer.prefix_spans(rec["messages"], rec["tools"])
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    n_assistant = sum(m["role"] == "assistant" for m in rec["messages"])
    assert out.loss_mask[out.input_ids == eot].sum() == n_assistant
    trained = tok.decode(out.input_ids[out.loss_mask == 1].tolist())
    assert "<|start_header_id|>" not in trained and "ipython" not in trained and USER_TEXT not in trained


@pytest.mark.parametrize("which", ["qwen_tokenizer", "llama_style_tokenizer"])
def test_byte_position_path_equals_offsets_path(request, which):
    tok = request.getfixturevalue(which)
    fast, slow = ChatRenderer(tok), ChatRenderer(tok)
    slow._byte_lengths = None  # force the offsets path
    assert fast._byte_lengths is not None
    recs = [validate(s) for s in samples()]
    odd = validate(samples()[1])
    odd["messages"][-1]["content"] = "cafe\u0301 — not NFC, e\u0301"  # a normaliser changes it: falls back
    for a, b in zip(fast.render_batch(recs + [odd]), slow.render_batch(recs + [odd])):
        assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.loss_mask, b.loss_mask)
        assert a.turn_ends == b.turn_ends


@pytest.mark.parametrize("which", ["qwen_tokenizer", "llama_style_tokenizer"])
def test_a_message_quoting_a_rendered_turn_is_not_trained(request, which):
    # A user message and a tool result that hold a later assistant turn exactly as the template renders it (a
    # chat log, a test fixture): the mask must land on the turns, not on the quotes.
    renderer = ChatRenderer(request.getfixturevalue(which))
    call = {"id": "c1", "type": "function", "function": {"name": "execute_bash", "arguments": '{"command": "cat log"}'}}
    turns = [{"role": "assistant", "content": "", "tool_calls": [call]}, {"role": "assistant", "content": "Done."}]
    quote = [renderer._turn_piece(template_messages([t])) for t in turns]
    rec = validate({"id": "q", "instance_id": "q", "tools": [], "messages": [
        {"role": "user", "content": f"A log:\n{quote[0]}{quote[1]}end"}, turns[0],
        {"role": "tool", "tool_call_id": "c1", "content": quote[1]}, turns[1]]})
    assert renderer.spans(rec["messages"], rec["tools"]) == renderer.prefix_spans(rec["messages"], rec["tools"])


def test_show_a_negative_or_missing_index_is_one_line(tmp_path):
    import json

    from click.testing import CliRunner
    from tests_paths import qwen

    from swehero.cli import main

    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in samples()))
    for index, problem in (("-1", "--index -1: must be 0 or more"), ("3", f"{src} has no trajectory 3")):
        result = CliRunner().invoke(main, ["data", "show", "--tokenizer", str(qwen()), str(src), "--index", index])
        assert result.exit_code == 1 and result.output == f"Error: {problem}\n", result.output


def test_render_fails_when_too_many_rows_are_rejected_and_writes_nothing(tmp_path):
    """As `import` and `prepare`: input that is not canonical trajectories (here: rendered output) is one line naming
    the rejects file, not an empty output and exit 0."""
    import json

    from click.testing import CliRunner
    from tests_paths import qwen

    from swehero.cli import main

    src = tmp_path / "rendered.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "input_ids": [1], "loss_mask": [0]}) + "\n" for i in range(3)))
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(main, ["data", "render", "--tokenizer", str(qwen()), str(src), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output == (f"Error: 3 of 3 rows rejected (100.0% > --max-reject-fraction 1.0%); reasons: "
                             f"missing_field: 3; details in {tmp_path / 'r.rejects.jsonl'}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.rejects.jsonl", "rendered.jsonl"]
    # each reject names its row's id, as `import` and `prepare` name it
    assert [json.loads(x)["id"] for x in (tmp_path / "r.rejects.jsonl").read_text().splitlines()] == ["r0", "r1", "r2"]


def test_a_row_that_is_a_json_string_is_no_object_whatever_it_holds(tmp_path):
    """`"x"`, or a trajectory encoded twice, read by `render`, `show` and `filter` (which parse as they read): it was
    decoded a second time, `"x"` reported as malformed JSON and the twice-encoded trajectory accepted."""
    import json
    import pickle

    from swehero.data.sources import parse_row, read_rows
    from swehero.data.trajectory import Reject

    rows = tmp_path / "rows.jsonl"
    rows.write_text('"x"\n' + json.dumps(json.dumps(samples()[0])) + "\n" + json.dumps(samples()[0]) + "\n")
    for parse in (True, False):
        read = [row for _, row in read_rows(rows, parse=parse)]
        for row in read[:2]:
            with pytest.raises(Reject, match="not_an_object: str"):
                parse_row(pickle.loads(pickle.dumps(row)))  # as prepare's workers get them
        assert parse_row(pickle.loads(pickle.dumps(read[2])))["id"] == samples()[0]["id"]
