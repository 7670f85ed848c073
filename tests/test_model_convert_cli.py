"""`swehero convert` and the `convert` stage end to end on a tiny bf16 checkpoint (CPU, gloo ranks)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from model_jobs import hf_logits, make_hf, parity_job, with_tokenizer  # noqa: E402

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

    hf_dir = with_tokenizer(make_hf(tmp_path / "hf", seed=7, dtype=torch.bfloat16))
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


@pytest.mark.timeout(900)
def test_fewer_kv_heads_than_tp_ranks_and_an_export_over_an_old_model(tmp_path):
    """Like Qwen2.5-1.5B (12 heads, 2 KV heads) at --tp 4: 4 heads and 2 KV heads at TP=4, where Megatron gives each
    pair of ranks one KV head. Then an export into a folder that held another model's model.safetensors."""
    from swehero.model import cpu_backend

    hf_dir = with_tokenizer(make_hf(tmp_path / "hf", seed=3))
    tokens = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(0))
    ckpt = tmp_path / "ckpt"  # saved at TP=4, reloaded at TP=1; each layout exported under export/
    case = dict(name="kv", hf_dir=hf_dir, layouts=[(4, 1), (1, 1)], tokens=tokens, ref=hf_logits(hf_dir, tokens),
                ckpt=ckpt)
    cpu_backend.launch(parity_job, 4, [case], tmp_path / "results.json")
    diffs = json.loads((tmp_path / "results.json").read_text())
    assert diffs["kv@tp4pp1"] < 1e-5 and diffs["kv@tp1pp1"] < 1e-5, diffs
    original = _weights(hf_dir)
    for layout in ("tp4pp1", "tp1pp1"):
        exported = _weights(tmp_path / "export" / layout)
        assert exported.keys() == original.keys() and all(torch.equal(exported[k], v) for k, v in original.items())

    old = make_hf(tmp_path / "out", seed=4)  # transformers prefers a model.safetensors to an index
    result = CliRunner().invoke(convert, ["mcore-to-hf", str(ckpt), str(old), "--like", str(hf_dir)])
    assert result.exit_code == 0, result.output
    assert not (old / "model.safetensors").exists()
    assert torch.equal(hf_logits(old, tokens), case["ref"])


def test_convert_stage(tmp_path):
    from swehero.model import stage

    hf_dir = with_tokenizer(make_hf(tmp_path / "hf", seed=8))
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
    from swehero.model.folder import known_config

    config_only, llama, garbled = tmp_path / "config-only", tmp_path / "llama", tmp_path / "garbled"
    qwen = known_config("Qwen/Qwen2.5-Coder-7B-Instruct")
    for folder, config in ((config_only, qwen), (llama, {"model_type": "llama"})):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
    garbled.mkdir()
    (garbled / "config.json").write_text("{half")
    cases = [(tmp_path, f"{tmp_path}: no config.json (Hugging Face folder) or hf_config.json"),
             (config_only, f"{config_only}: no model.safetensors.index.json or model.safetensors"),
             (llama, f"{llama / 'config.json'}: expected a qwen2 config, got model_type='llama'"),
             (garbled, f"{garbled / 'config.json'}: not a model config (not JSON: Expecting property name"),
             (llama / "config.json", f"{llama / 'config.json'}: expected a qwen2 config")]
    for source, message in cases:
        result = CliRunner().invoke(main, ["convert", "hf-to-mcore", str(source), str(tmp_path / "out")])
        assert result.exit_code == 1 and f"Error: {message}" in result.output, result.output
    # Back to Hugging Face: a Hugging Face folder (or a train stage's folder) is no Megatron checkpoint.
    result = CliRunner().invoke(main, ["convert", "mcore-to-hf", str(config_only), str(tmp_path / "out"),
                                       "--like", str(config_only)])
    message = f"Error: {config_only}: no hf_config.json, so not a Megatron checkpoint of swehero's"
    assert result.exit_code == 1 and message in result.output, result.output
    result = CliRunner().invoke(main, ["convert", "hf-to-mcore", str(llama), str(tmp_path / "out"), "--tp", "0"])
    assert result.exit_code == 2 and "--tp: tp: must be >= 1, got 0" in result.output, result.output  # not / 0
    assert not (tmp_path / "out").exists()
    # A checkpoint copied with `cp DIR/*` (no .metadata), and an OUT that is a file, ended in a traceback per rank.
    copied = tmp_path / "copied"
    copied.mkdir()
    (copied / "hf_config.json").write_text(json.dumps(qwen))
    result = CliRunner().invoke(main, ["convert", "mcore-to-hf", str(copied), str(tmp_path / "out"),
                                       "--like", str(config_only)])
    assert result.exit_code == 1 and f"Error: {copied}: no .metadata, the index of" in result.output, result.output
    hf_dir, taken = make_hf(tmp_path / "hf", seed=1), tmp_path / "a-file"
    taken.write_text("")
    result = CliRunner().invoke(main, ["convert", "hf-to-mcore", str(hf_dir), str(taken)])
    assert result.exit_code == 1 and result.output == f"Error: {taken}: not a folder (a file is there)\n"


# Loaded by every Python process of the recipe (sitecustomize), spawned ranks too: the CPU stands in for a node
# of two GPUs and gloo for NCCL; each process group asked for is written down.
STAND_IN_GPU_NODE = """
import os
import torch
import torch.distributed as dist
from swehero.model import cpu_backend
cpu_backend.enable()
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 2
nccl = dist.init_process_group
def init_process_group(backend, **kw):
    with open(os.environ["GROUPS_LOG"], "a") as log:
        log.write(f"{backend} {kw['rank']}/{kw['world_size']}\\n")
    nccl("gloo", **kw)
dist.init_process_group = init_process_group
"""


@pytest.mark.timeout(600)
def test_convert_stages_run_in_a_recipe_on_a_gpu_node(tmp_path):
    """On a GPU node a convert stage runs without torchrun, from the recipe's process: one rank in that process (the
    first left Megatron's model parallel groups behind, and the second failed on `assert _DATA_PARALLEL_GROUP is
    None`; both met at the fixed port 29500), several spawned there, one per GPU (it asked for torchrun). The CUDA
    branch runs here with the CPU standing in for the GPUs and gloo for NCCL."""
    import subprocess

    hf_dir = with_tokenizer(make_hf(tmp_path / "hf", seed=3))
    recipe = tmp_path / "three.yaml"
    recipe.write_text(f"""name: three
run_dir: {tmp_path / "run"}
stages:
  - {{name: to_mcore, kind: convert, source: {hf_dir}}}
  - {{name: split, kind: convert, source: {hf_dir}, tp: 2}}
  - {{name: back, kind: convert, direction: mcore-to-hf, source: "${{stages.split.dir}}/checkpoint", like: {hf_dir}}}
""")
    (tmp_path / "stand_in").mkdir()
    (tmp_path / "stand_in" / "sitecustomize.py").write_text(STAND_IN_GPU_NODE)
    # a MASTER_ADDR exported without its port (a Slurm script's) is no rendezvous of torchrun's
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "GROUPS_LOG": str(tmp_path / "groups.log"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "stand_in"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "swehero", "recipe", "run", str(recipe)], capture_output=True,
                          text=True, timeout=550, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    groups = (tmp_path / "groups.log").read_text().splitlines()
    assert groups[0] == "nccl 0/1" and sorted(groups[1:3]) == ["nccl 0/2", "nccl 1/2"] and groups[3:] == ["nccl 0/1"]
    weights = _weights(tmp_path / "run" / "back" / "hf")
    assert weights.keys() == _weights(hf_dir).keys()
    assert all(torch.equal(weights[k], v) for k, v in _weights(hf_dir).items())


def test_a_gpu_node_with_fewer_gpus_than_ranks_is_one_line(monkeypatch):
    from swehero.model.launch import run_ranks

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(SystemExit, match="^this needs 4 GPU ranks and this node has 2 GPUs$"):
        run_ranks(print, 4)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="^this needs 4 GPU ranks, torchrun started 2: start it with --nproc-per-node"):
        run_ranks(print, 4)
