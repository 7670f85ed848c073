import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from swehero.cli import main
from swehero.recipe.config import Recipe
from swehero.tiny.kit import QWEN25_ADDED_TOKENS, TinyModelConfig, make_tiny

TOOLS = [
    {"type": "function", "function": {
        "name": "str_replace_editor", "description": "View, create and edit files.",
        "parameters": {"type": "object", "required": ["command", "path"], "properties": {
            "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"]},
            "path": {"type": "string"}, "view_range": {"type": "array", "items": {"type": "integer"}}}}}},
    {"type": "function", "function": {
        "name": "execute_bash", "description": "Run a bash command.",
        "parameters": {"type": "object", "required": ["command"], "properties": {"command": {"type": "string"}}}}},
]
CONVERSATION = [
    {"role": "system", "content": "You are a helpful agent."},
    {"role": "user", "content": "Fix the bug in utils.py — naïve parsing ✓"},
    {"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"type": "function", "function": {"name": "str_replace_editor",
                                          "arguments": {"command": "view", "path": "/testbed/utils.py", "view_range": [1, -1]}}},
        {"type": "function", "function": {"name": "execute_bash", "arguments": {"command": "grep -rn parse ."}}}]},
    {"role": "tool", "content": "1\tdef parse(x):"},
    {"role": "tool", "content": "utils.py:1:def parse(x):"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "execute_bash", "arguments": {"command": "cat utils.py"}}}]},
    {"role": "tool", "content": "def parse(x):\n    return int(x)"},
    {"role": "assistant", "content": "The fix is done."},
]


def test_tokenizer_has_qwen_added_tokens_in_order(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    first = tok.convert_tokens_to_ids(QWEN25_ADDED_TOKENS[0][0])
    assert first == TinyModelConfig().vocab_size
    for offset, (token, _) in enumerate(QWEN25_ADDED_TOKENS):
        assert tok.convert_tokens_to_ids(token) == first + offset
        assert tok.encode(token, add_special_tokens=False) == [first + offset]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = "def f(x):\n    return x  # ünïcode ✓\n"
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("generation_prompt", [False, True])
def test_chat_template_renders_tool_calls_exactly_as_qwen25(tiny_model_dir, qwen_tokenizer_dir, generation_prompt):
    ours = AutoTokenizer.from_pretrained(tiny_model_dir)
    qwen = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    for messages in (CONVERSATION, CONVERSATION[:4], CONVERSATION[1:3]):
        kwargs = dict(tools=TOOLS, tokenize=False, add_generation_prompt=generation_prompt)
        rendered = ours.apply_chat_template(messages, **kwargs)
        assert rendered == qwen.apply_chat_template(messages, **kwargs)
        assert "<tool_call>\n{\"name\": \"execute_bash\"" in rendered or len(messages) < 4
    # Without tools the template falls back to Qwen's default system prompt; that must match too.
    no_system = CONVERSATION[1:2]
    assert ours.apply_chat_template(no_system, tokenize=False) == qwen.apply_chat_template(no_system, tokenize=False)


def test_model_loads_and_generates(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    assert config["vocab_size"] % 128 == 0 and config["vocab_size"] >= len(tok)
    assert model.model.layers[0].self_attn.q_proj.bias.abs().sum() > 0  # random, non-zero biases
    prompt = tok.apply_chat_template(CONVERSATION[:2], add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8 or tok.eos_token_id in out[0].tolist()


def test_deterministic_for_a_seed(tmp_path):
    small = TinyModelConfig(num_layers=1)
    a = make_tiny(tmp_path / "a", small, seed=3)
    b = make_tiny(tmp_path / "b", small, seed=3)
    c = make_tiny(tmp_path / "c", small, seed=4)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    wa, wb, wc = (load_file(d / "model.safetensors") for d in (a, b, c))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["model.embed_tokens.weight"], wc["model.embed_tokens.weight"])


def test_tied_embeddings_and_cli(tmp_path):
    result = CliRunner().invoke(main, ["tiny", "make", str(tmp_path / "t"), "--tie-word-embeddings",
                                       "--num-layers", "1", "--hidden-size", "128", "--num-kv-heads", "1"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["num_attention_heads"] == 2
    assert "lm_head.weight" not in load_file(tmp_path / "t" / "model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "t")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # Without --seed the command makes the kit a recipe's `tiny` stage makes with the recipe's default seed.
    stage_kit = make_tiny(tmp_path / "stage", TinyModelConfig(tie_word_embeddings=True, num_layers=1, hidden_size=128,
                                                              num_kv_heads=1), seed=Recipe.seed)
    assert torch.equal(load_file(stage_kit / "model.safetensors")["model.embed_tokens.weight"],
                       model.model.embed_tokens.weight.data)


def test_bad_shape_is_rejected_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="multiple of head_dim 64"):
        make_tiny(tmp_path / "x", TinyModelConfig(hidden_size=100), seed=0)
    for option, message in (("--hidden-size=100", "model.hidden_size: must be a multiple of head_dim 64, got 100"),
                            ("--num-kv-heads=3", "model.num_kv_heads: must divide the 4 attention heads, got 3"),
                            ("--num-layers=0", "model.num_layers: must be >= 1, got 0")):
        result = CliRunner().invoke(main, ["tiny", "make", str(tmp_path / "x"), option])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "x").exists()  # the tokenizer was written before the shape was checked
