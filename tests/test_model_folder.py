"""Model folders (`swehero.model.folder`): one reader of model configs, the weights of a Hugging Face folder, and the
one rule for the side files an exported folder needs to serve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from swehero.model import qwen2
from swehero.model.folder import known_config, read_config, side_files, weight_files, write_folder_files

YARN_128K = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}  # the recipes' override
MESSAGES = [{"role": "system", "content": "Fix bugs."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Done."}]


def test_read_config_of_every_kind_of_model_folder(tmp_path):
    hf, ckpt = tmp_path / "hf", tmp_path / "ckpt"
    hf.mkdir(), ckpt.mkdir()
    (hf / "config.json").write_text('{"model_type": "qwen2"}')
    (ckpt / "hf_config.json").write_text('{"model_type": "qwen2", "num_hidden_layers": 2}')
    assert read_config(hf) == read_config(hf / "config.json") == {"model_type": "qwen2"}
    assert read_config(ckpt)["num_hidden_layers"] == 2
    with pytest.raises(FileNotFoundError, match="no config.json .* or hf_config.json"):
        read_config(tmp_path)
    assert known_config(str(hf)) == {"model_type": "qwen2"}
    assert known_config("Qwen/Qwen2.5-Coder-32B-Instruct")["num_hidden_layers"] == 64  # bundled, no download
    assert known_config("nobody/nothing") is None


def test_weight_files_single_or_sharded(tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir(), sharded.mkdir()
    save_file({"a": np.zeros(2, np.float32), "b": np.ones(1, np.float32)}, str(single / "model.safetensors"))
    assert weight_files(single) == {"a": "model.safetensors", "b": "model.safetensors"}
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert weight_files(sharded) == index["weight_map"]
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        weight_files(tmp_path)


def test_an_export_gets_the_side_files_a_server_needs_and_nothing_else(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    like = tmp_path / "like"
    shutil.copytree(tiny_model_dir, like)
    # What else a downloaded or trained folder may hold: none of it belongs beside other weights.
    junk = ["pytorch_model.bin", "pytorch_model.bin.index.json", "model-00001-of-00002.safetensors", "README.md",
            "training_args.bin", "optimizer.pt", "trainer_state.json"]
    for name in junk:
        (like / name).write_text("x")
    (like / "additional_chat_templates").mkdir()
    (like / "additional_chat_templates" / "plain.jinja").write_text("{{ messages[0]['content'] }}")

    out = tmp_path / "out"
    out.mkdir()
    shutil.copy2(tiny_model_dir / "model.safetensors", out)  # the exported weights
    config = {**read_config(like), "rope_scaling": {"type": "yarn", "factor": 4.0,
                                                    "original_max_position_embeddings": 32768}}
    write_folder_files(out, config, like)

    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["model.safetensors", "config.json", "additional_chat_templates",
                            *(p.name for p in side_files(tiny_model_dir))])
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"} <= set(names)
    assert read_config(out) == config  # the config the weights were built with, not the source's
    source, exported = AutoTokenizer.from_pretrained(like), AutoTokenizer.from_pretrained(out)
    assert exported.apply_chat_template(MESSAGES, tokenize=False) == source.apply_chat_template(MESSAGES, tokenize=False)
    assert exported.apply_chat_template(MESSAGES, tokenize=False, chat_template="plain") == "Fix bugs."
    assert GenerationConfig.from_pretrained(out).to_dict() == GenerationConfig.from_pretrained(like).to_dict()
    assert AutoModelForCausalLM.from_pretrained(out).config.rope_scaling["factor"] == 4.0


def test_the_slow_tokenizer_files_travel_too(qwen_tokenizer_dir, tmp_path):
    """A folder with only vocab.json + merges.txt + tokenizer_config.json (like the Qwen2.5 fixture) exports whole."""
    from transformers import AutoTokenizer

    like, out = tmp_path / "like", tmp_path / "out"
    shutil.copytree(qwen_tokenizer_dir, like)
    out.mkdir()
    write_folder_files(out, {"model_type": "qwen2"}, like)
    assert {p.name for p in out.iterdir()} == {p.name for p in qwen_tokenizer_dir.iterdir()} | {"config.json"}
    tools = [{"type": "function", "function": {"name": "finish", "description": "Finish.",
                                               "parameters": {"type": "object", "properties": {}}}}]
    render = [AutoTokenizer.from_pretrained(d).apply_chat_template(MESSAGES, tools=tools, tokenize=False)
              for d in (like, out)]
    assert render[0] == render[1] and "<tools>" in render[0]
    assert Path(out / "config.json").read_text() == '{\n  "model_type": "qwen2"\n}\n'


def published_and_transformers5_configs() -> dict[str, dict]:
    """Qwen2.5-Coder-7B-Instruct's config as published (`rope_theta`, `rope_scaling: null`) and as transformers 5
    saves it (a fine-tune saved by a recent Trainer: the theta inside `rope_parameters`)."""
    from transformers import Qwen2Config

    published = known_config("Qwen/Qwen2.5-Coder-7B-Instruct")
    resaved = Qwen2Config.from_dict(published).to_dict()
    assert "rope_theta" not in resaved and resaved["rope_parameters"]["rope_theta"] == 1e6  # the layout in question
    return {"published": published, "transformers5": resaved}


@pytest.mark.parametrize("layout", ["published", "transformers5"])
def test_a_yarn_override_is_read_by_transformers_as_megatron_applies_it(layout):
    from transformers import Qwen2Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = published_and_transformers5_configs()[layout]
    extended = qwen2.with_rope_scaling(config, YARN_128K)
    assert qwen2.with_rope_scaling(extended, YARN_128K) == extended  # stage 2 applies the same override again
    assert qwen2.with_rope_scaling(config, {"type": "yarn", "factor": 4.0}) == extended  # original from the config
    # The context the scaling reaches: vLLM takes it from here, without multiplying by `factor` for YaRN.
    assert extended["max_position_embeddings"] == 131072
    assert (qwen2.rope_theta(extended), qwen2.yarn(extended)) == (1e6, qwen2.Yarn(4.0, 32768))  # what Megatron builds
    read = Qwen2Config.from_dict(extended)
    params = read.rope_parameters
    assert (params["rope_type"], params["rope_theta"], params["factor"], params["original_max_position_embeddings"]) \
        == ("yarn", 1e6, 4.0, 32768)
    # The frequencies and attention scale transformers computes are the same in both layouts.
    inv_freq, scale = ROPE_INIT_FUNCTIONS["yarn"](read, "cpu")
    reference = Qwen2Config.from_dict(qwen2.with_rope_scaling(published_and_transformers5_configs()["published"],
                                                              YARN_128K))
    ref_freq, ref_scale = ROPE_INIT_FUNCTIONS["yarn"](reference, "cpu")
    assert scale == ref_scale == pytest.approx(0.1 * np.log(4.0) + 1.0)
    assert inv_freq.tolist() == ref_freq.tolist()


@pytest.mark.slow  # imports vLLM (7 s)
@pytest.mark.parametrize("layout", ["published", "transformers5"])
def test_vllm_takes_the_128k_context_and_the_theta_from_an_exported_yarn_config(layout, qwen_tokenizer_dir, tmp_path):
    from vllm.config import ModelConfig

    # What a train stage with the recipes' override exports, as vLLM reads it before loading any weights.
    write_folder_files(tmp_path, qwen2.with_rope_scaling(published_and_transformers5_configs()[layout], YARN_128K),
                       qwen_tokenizer_dir)
    served = ModelConfig(model=str(tmp_path), max_model_len=131072, generation_config="vllm")
    assert served.max_model_len == 131072  # vLLM 0.32 refused this while max_position_embeddings stayed 32768
    params = served.hf_config.rope_parameters
    assert (params["rope_type"], params["rope_theta"], params["factor"]) == ("yarn", 1e6, 4.0)
