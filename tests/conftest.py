import pytest
from tests_paths import QWEN as QWEN_TOKENIZER


@pytest.fixture(scope="session")
def qwen_tokenizer():
    if not (QWEN_TOKENIZER / "tokenizer_config.json").exists():
        pytest.skip(f"Qwen2.5 tokenizer fixture not found at {QWEN_TOKENIZER}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))


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
