"""Model folders (`swehero.model.folder`): one reader of model configs, the weights of a Hugging Face folder, and the
one rule for the side files an exported folder needs to serve."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from model_jobs import make_hf, with_tokenizer  # noqa: E402

from swehero.errors import InputError, MissingInput, Unavailable  # noqa: E402
from swehero.model import qwen2, stage  # noqa: E402
from swehero.model.folder import (  # noqa: E402
    check_hf_weights, known_config, read_config, remove_weights, side_files, weight_files, write_folder_files,
)
from swehero.model.parallel import model_split_problems  # noqa: E402

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


@pytest.fixture(scope="module")
def untied_hf(tmp_path_factory) -> Path:
    """A 2-layer untied Qwen2 folder as transformers saves it (one model.safetensors), with a tokenizer."""
    return with_tokenizer(make_hf(tmp_path_factory.mktemp("untied") / "hf", num_hidden_layers=2))


def _changed_copy(source: Path, to: Path, drop: str = "", add: dict | None = None, config: dict | None = None) -> Path:
    shutil.copytree(source, to)
    weights = load_file(str(to / "model.safetensors"))
    weights.pop(drop, None)
    save_file({**weights, **(add or {})}, str(to / "model.safetensors"), metadata={"format": "pt"})
    if config:
        (to / "config.json").write_text(json.dumps({**read_config(to), **config}))
    return to


def _sharded_copy(source: Path, to: Path) -> Path:
    """`source` as a sharded download: one file per tensor group and an index."""
    shutil.copytree(source, to)
    weights = load_file(str(to / "model.safetensors"))
    (to / "model.safetensors").unlink()
    names = sorted(weights)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in halves.items():
        save_file({n: weights[n] for n in part}, str(to / file))
    index = {"weight_map": {n: file for file, part in halves.items() for n in part}}
    (to / "model.safetensors.index.json").write_text(json.dumps(index))
    return to


def _bad_folders(untied: Path, tmp: Path) -> list[tuple[Path, type, str]]:
    """(folder, error, message) for each way a downloaded folder can be unusable."""
    no_bias = _changed_copy(untied, tmp / "no-bias", drop="model.layers.1.self_attn.q_proj.bias")
    no_head = _changed_copy(untied, tmp / "no-head", drop="lm_head.weight")
    awq = _changed_copy(untied, tmp / "awq", config={"quantization_config": {"quant_method": "awq", "bits": 4}})
    truncated = shutil.copytree(untied, tmp / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    partial, dangling = _sharded_copy(untied, tmp / "partial"), _sharded_copy(untied, tmp / "dangling")
    (partial / "model-00002-of-00002.safetensors").unlink()  # an interrupted download
    blob = tmp / "blobs" / "gone"  # a Hugging Face cache whose blob was removed
    (dangling / "model-00001-of-00002.safetensors").unlink()
    (dangling / "model-00001-of-00002.safetensors").symlink_to(blob)
    wider = _changed_copy(untied, tmp / "wider", config={"intermediate_size": read_config(untied)["intermediate_size"]
                                                         + 8})  # another model's config over these weights
    misplaced = _sharded_copy(untied, tmp / "misplaced")
    index = json.loads((misplaced / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = next(f for f in index["weight_map"].values()
                                                    if f != index["weight_map"]["model.norm.weight"])
    (misplaced / "model.safetensors.index.json").write_text(json.dumps(index))
    return [
        (no_bias, MissingInput, f"{no_bias}: 1 tensor(s) its config.json needs are not in its weights: "
                                "model.layers.1.self_attn.q_proj.bias"),
        (no_head, MissingInput, f"{no_head}: 1 tensor(s) its config.json needs are not in its weights: "
                                "lm_head.weight (tie_word_embeddings is false"),
        (awq, InputError, f"{awq}/config.json: quantization_config (awq): quantized weights are not converted"),
        (truncated, InputError, f"{truncated}/model.safetensors: unreadable safetensors file"),
        (partial, MissingInput, f"{partial}/model-00002-of-00002.safetensors: listed in "
                                "model.safetensors.index.json but missing"),
        (dangling, MissingInput, f"{dangling}/model-00001-of-00002.safetensors: listed in "
                                 "model.safetensors.index.json but missing"),
        (wider, InputError, f"{wider}/config.json: its sizes do not fit the weights (6 tensor(s): "
                            "model.layers.0.mlp.down_proj.weight is ["),
        (misplaced, InputError, f"{misplaced}/model.safetensors.index.json: 1 tensor(s) are not in the file it names "
                                "for them: model.norm.weight; download the model again"),
    ]


@pytest.mark.timeout(600)  # the code before this check started ranks for most of these
def test_a_folder_convert_cannot_read_fails_in_one_line_before_any_rank_starts(untied_hf, tmp_path):
    for folder, error, message in _bad_folders(untied_hf, tmp_path):
        with pytest.raises(error) as caught:
            stage.convert(stage.Settings(source=str(folder)), tmp_path / "out")
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value), (folder, caught.value)
    assert not (tmp_path / "out").exists()


def test_the_hf_tensors_a_config_needs(untied_hf, tmp_path, capsys):
    config = read_config(untied_hf)
    check_hf_weights(untied_hf, config)  # the folder transformers saved is complete, and nothing is left out
    assert capsys.readouterr().err == ""
    # A tied model takes its LM head from the embeddings: without lm_head.weight it is complete.
    tied = _changed_copy(untied_hf, tmp_path / "tied", drop="lm_head.weight", config={"tie_word_embeddings": True})
    check_hf_weights(tied, read_config(tied))
    # Tensors the config does not use are left out with one warning, RoPE's computed frequencies without one.
    extra = {f"model.layers.2.{name}": np.zeros(2, np.float32)
             for name in ("mlp.up_proj.weight", "input_layernorm.weight")}
    extra["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.zeros(2, np.float32)
    bigger = _changed_copy(untied_hf, tmp_path / "bigger", add=extra)
    check_hf_weights(bigger, config)
    assert capsys.readouterr().err == (f"warning: {bigger}: 2 tensor(s) its config.json does not use are left out: "
                                       "model.layers.2.input_layernorm.weight, model.layers.2.mlp.up_proj.weight\n")


def test_a_split_the_model_does_not_divide_fails_naming_the_config_field(untied_hf, tmp_path):
    # The tiny folder: 4 heads, 2 KV heads, 2 layers.
    for tp, pp, problem in ((3, 1, "tensor 3 does not divide num_attention_heads 4; tensor 3 neither divides nor is "
                                   "a multiple of num_key_value_heads 2; tensor 3 does not divide intermediate_size "
                                   "512"),
                            (1, 3, "pipeline 3 does not divide num_hidden_layers 2")):
        with pytest.raises(InputError, match=f"^{untied_hf}: cannot split the model over tp {tp} x pp {pp}: "
                                             f"{problem}$"):
            stage.convert(stage.Settings(source=str(untied_hf), tp=tp, pp=pp), tmp_path / "out")
    qwen_1_5b = {"num_attention_heads": 12, "num_key_value_heads": 2, "num_hidden_layers": 28,
                 "intermediate_size": 8960}
    assert model_split_problems(qwen_1_5b, tensor=4, pipeline=4) == []  # 2 KV heads over 4 ranks: 2 ranks each
    assert model_split_problems(qwen_1_5b, tensor=8, pipeline=3) == [
        "tensor 8 does not divide num_attention_heads 12", "pipeline 3 does not divide num_hidden_layers 28"]


def test_an_export_needs_a_tokenizer_to_take(untied_hf, tmp_path):
    checkpoint = tmp_path / "ckpt"  # what the check reads of a Megatron checkpoint
    checkpoint.mkdir()
    shutil.copy(untied_hf / "config.json", checkpoint / "hf_config.json")
    (checkpoint / ".metadata").write_bytes(b"")
    settings = stage.Settings(source=str(checkpoint), direction="mcore-to-hf", like=str(checkpoint))
    with pytest.raises(MissingInput, match=f"^{checkpoint}: no tokenizer \\(tokenizer.json, .*\\) for the export"):
        stage.convert(settings, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_export_replaces_the_weights_a_folder_held_and_keeps_the_rest(tmp_path):
    weights = ["model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
               "pytorch_model.bin", "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json"]
    kept = ["config.json", "tokenizer.json", "training_args.bin", "README.md"]
    for name in weights + kept:
        (tmp_path / name).write_text("x")
    remove_weights(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_an_export_into_an_earlier_exports_folder_keeps_none_of_its_side_files(tiny_model_dir, qwen_tokenizer_dir,
                                                                                  tmp_path):
    """The tiny model's tokenizer.json and chat_template.jinja, left by a first export, were read in place of the
    second `like`'s vocab.json + merges.txt and tokenizer_config.json's template, by transformers and vLLM."""
    first = tmp_path / "first"
    shutil.copytree(tiny_model_dir, first)
    (first / "additional_chat_templates").mkdir()
    (first / "additional_chat_templates" / "plain.jinja").write_text("{{ messages[0]['content'] }}")
    out = tmp_path / "out"
    out.mkdir()
    write_folder_files(out, {"model_type": "qwen2"}, first)
    assert {"tokenizer.json", "chat_template.jinja", "additional_chat_templates"} <= {p.name for p in out.iterdir()}
    write_folder_files(out, {"model_type": "qwen2"}, qwen_tokenizer_dir)
    assert {p.name for p in out.iterdir()} == {p.name for p in qwen_tokenizer_dir.iterdir()} | {"config.json"}
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in qwen_tokenizer_dir.iterdir())


def test_an_export_over_the_folder_the_model_came_from_keeps_its_side_files(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (tmp_path / "link").symlink_to(folder)  # the same folder under another name
    config = {**read_config(folder), "rope_scaling": YARN_128K}
    for like in (folder, tmp_path / "link"):
        write_folder_files(folder, config, like)  # shutil.SameFileError, after the export had written the weights
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir())
        assert all((folder / p.name).read_bytes() == p.read_bytes() for p in side_files(tiny_model_dir))
        assert read_config(folder) == config


def _damaged_copy(source: Path, to: Path, file: str, change) -> Path:
    shutil.copytree(source, to)
    path = to / file
    path.write_text(change(path.read_text() if path.exists() else ""))
    return to


def _config_edit(**fields):
    """A change to config.json's text: each field set to its value, or removed where the value is None."""
    def edit(text: str) -> str:
        config = {**json.loads(text), **fields}
        return json.dumps({k: v for k, v in config.items() if v is not None})
    return edit


@pytest.mark.parametrize("file, change, message", [
    ("model.safetensors.index.json", lambda _: '{"weight_map": ', "not a safetensors shard index (not JSON: "),
    ("model.safetensors.index.json", lambda _: '{"metadata": {}}', "weight_map: missing or not an object"),
    ("config.json", _config_edit(num_hidden_layers=None), "num_hidden_layers: must be a whole number > 0, got nothing"),
    ("config.json", _config_edit(hidden_size="64"), "hidden_size: must be a whole number > 0, got '64'"),
    ("config.json", _config_edit(rms_norm_eps=None), "rms_norm_eps: must be a number > 0, got nothing"),
    ("config.json", _config_edit(rope_scaling={"type": "yarn"}),
     "rope_scaling.factor: must be a number > 1, got nothing"),
    ("config.json",
     _config_edit(rope_scaling={"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": "x"}),
     "rope_scaling.original_max_position_embeddings: must be a whole number > 0, got 'x'"),
    ("config.json", _config_edit(torch_dtype="auto"),
     "torch_dtype: must be one of float32, bfloat16, float16 (the dtype the weights are stored in), got 'auto'"),
    ("config.json", _config_edit(hidden_act="gelu"), "hidden_act: must be silu (Qwen2's SwiGLU), got 'gelu'"),
], ids=["truncated index", "index without weight_map", "no num_hidden_layers", "text size", "no rms_norm_eps",
        "yarn without factor", "text original", "torch_dtype auto", "gelu"])
def test_a_damaged_index_or_config_fails_in_one_line_naming_the_file_and_field(untied_hf, tmp_path, file, change,
                                                                               message):
    """Each was a traceback (JSONDecodeError, KeyError, or AttributeError: module 'torch' has no attribute 'auto' in
    every rank)."""
    folder = _damaged_copy(untied_hf, tmp_path / "bad", file, change)
    with pytest.raises(InputError) as caught:
        stage.convert(stage.Settings(source=str(folder)), tmp_path / "out")
    assert str(caught.value).startswith(f"{folder / file}: {message}"), caught.value
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()


def test_a_rope_scaling_override_must_be_yarn_with_a_factor_that_extends_the_context():
    config = known_config("Qwen/Qwen2.5-Coder-7B-Instruct")
    for scaling, message in (({"type": "yarn"}, "rope_scaling.factor: must be a number > 1, got nothing"),
                             ({"type": "yarn", "factor": -2}, "rope_scaling.factor: must be a number > 1, got -2"),
                             ({"factor": 4}, "rope_scaling.type: must be yarn .*, got nothing")):
        with pytest.raises(InputError, match=f"^{message}$"):
            qwen2.with_rope_scaling(config, scaling)
    assert qwen2.with_rope_scaling(config, {"rope_type": "yarn", "factor": 2})["max_position_embeddings"] == 65536


@pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is not None, reason="Transformer Engine is here")
def test_spec_te_without_transformer_engine_fails_in_one_line_before_any_rank_starts(untied_hf, tmp_path):
    """It was a NameError (TESpecProvider) from inside Megatron's layer specs, in every rank."""
    with pytest.raises(Unavailable, match="^convert: spec te needs Transformer Engine, which is not installed here"):
        stage.convert(stage.Settings(source=str(untied_hf), spec="te"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
