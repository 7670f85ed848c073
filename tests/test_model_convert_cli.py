"""`swehero convert` and the `convert` stage end to end on a tiny bf16 checkpoint (CPU, gloo ranks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from model_jobs import make_hf  # noqa: E402

from swehero.model.cli import convert  # noqa: E402
from swehero.recipe.stage import StageContext  # noqa: E402

pytestmark = pytest.mark.slow  # Megatron in spawned processes


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / "model.safetensors.index.json"
    files = set(json.loads(index.read_text())["weight_map"].values()) if index.exists() else {"model.safetensors"}
    return {k: v for f in files for k, v in load_file(folder / f).items()}


def _checkpoint_keys(ckpt: Path) -> set[str]:
    from torch.distributed.checkpoint import FileSystemReader

    return set(FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata)


def test_cli_round_trip_bf16_across_layouts(tmp_path):
    from transformers import Qwen2ForCausalLM

    hf_dir = make_hf(tmp_path / "hf", seed=7, dtype=torch.bfloat16)
    runner = CliRunner()
    result = runner.invoke(convert, ["hf-to-mcore", str(hf_dir), str(tmp_path / "ckpt"), "--tp", "2"])
    assert result.exit_code == 0, result.output
    # Stored under the TE spec's names, so the GPU (TE) model loads what the CPU (local spec) conversion wrote.
    keys = _checkpoint_keys(tmp_path / "ckpt")
    assert "decoder.layers.self_attention.linear_qkv.layer_norm_weight" in keys
    assert "decoder.layers.mlp.linear_fc1.layer_norm_weight" in keys
    assert not any("input_layernorm" in k or "pre_mlp_layernorm" in k for k in keys), keys
    result = runner.invoke(convert, ["mcore-to-hf", str(tmp_path / "ckpt"), str(tmp_path / "back"),
                                     "--like", str(hf_dir), "--pp", "2"])
    assert result.exit_code == 0, result.output
    original, back = _weights(hf_dir), _weights(tmp_path / "back")
    assert back.keys() == original.keys()
    assert all(back[k].dtype == torch.bfloat16 and torch.equal(back[k], v) for k, v in original.items())
    tokens = torch.randint(0, 300, (1, 20))
    logits = [Qwen2ForCausalLM.from_pretrained(d)(tokens).logits for d in (hf_dir, tmp_path / "back")]
    assert torch.equal(*logits)


def test_convert_stage(tmp_path):
    from swehero.model import stage

    hf_dir = make_hf(tmp_path / "hf", seed=8)
    ctx = StageContext(name="to-mcore", dir=tmp_path / "run", seed=0, model=None, upstream={}, resume=False)
    ctx.dir.mkdir()
    out = stage.run(stage.Settings(source=str(hf_dir)), ctx)
    ctx_back = StageContext(name="to-hf", dir=tmp_path / "run2", seed=0, model=None, upstream={}, resume=False)
    ctx_back.dir.mkdir()
    back = stage.run(stage.Settings(source=out["checkpoint"], direction="mcore-to-hf", like=str(hf_dir)), ctx_back)
    original, exported = _weights(hf_dir), _weights(Path(back["hf"]))
    assert all(torch.equal(exported[k], v) for k, v in original.items()) and exported.keys() == original.keys()
    assert (Path(back["hf"]) / "config.json").exists()


def test_a_folder_without_a_model_fails_before_any_rank_starts(tmp_path):
    from swehero.cli import main

    config_only, llama = tmp_path / "config-only", tmp_path / "llama"
    for folder, config in ((config_only, {}), (llama, {"model_type": "llama"})):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
    cases = [(tmp_path, f"{tmp_path}: no config.json (Hugging Face folder) or hf_config.json"),
             (config_only, f"{config_only}: no model.safetensors.index.json or model.safetensors"),
             (llama, f"{llama}: expected a qwen2 config, got model_type='llama'")]
    for source, message in cases:
        result = CliRunner().invoke(main, ["convert", "hf-to-mcore", str(source), str(tmp_path / "out")])
        assert result.exit_code == 1 and f"Error: {message}" in result.output, result.output
    # Back to Hugging Face: a Hugging Face folder (or a train stage's folder) is no Megatron checkpoint.
    result = CliRunner().invoke(main, ["convert", "mcore-to-hf", str(config_only), str(tmp_path / "out"),
                                       "--like", str(config_only)])
    message = f"Error: {config_only}: no hf_config.json, so not a Megatron checkpoint of swehero's"
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "out").exists()
