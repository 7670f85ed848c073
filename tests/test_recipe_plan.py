"""`swehero recipe plan` against what vLLM and Megatron-Core do: serving layouts vLLM refuses at startup, and the
memory full recompute holds in the backward pass."""

import json
import os

import pytest
from click.testing import CliRunner

from swehero.cli import main
from swehero.model.folder import known_config
from swehero.train.config import ParallelConfig, Settings
from swehero.train.memory import GiB, estimate


def plan(recipe: str, tmp_path, *sets: str) -> str:
    args = ["recipe", "plan", recipe, "--set", f"run_dir={tmp_path}", *(a for s in sets for a in ("--set", s))]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.output


def stage_block(output: str, name: str) -> str:
    """The lines of `stage NAME: ...` up to the next stage."""
    block = output.split(f"stage {name}: ", 1)[1]
    return block.split("\nstage ", 1)[0]


def test_plan_warns_where_vllm_refuses_the_serving_tensor_parallel_size(tmp_path):
    """vLLM refuses heads that TP does not divide ("Total number of attention heads (28) must be divisible by tensor
    parallel size (8)"), and key/value heads TP neither divides nor is a multiple of; the plan printed the memory
    of such a layout and no warning."""
    eval_7b = stage_block(plan("hero-7b", tmp_path, "stages.eval_verified.serve.tensor_parallel_size=8",
                               "stages.eval_verified.serve.data_parallel_size=1"), "eval_verified")
    assert "warning: serve.tensor_parallel_size: tensor 8 does not divide num_attention_heads 28" in eval_7b
    assert "num_key_value_heads" not in eval_7b  # 4 KV heads, each on 2 of the 8 ranks: vLLM replicates them
    eval_14b = stage_block(plan("hero-14b", tmp_path, "stages.eval_verified.serve.tensor_parallel_size=3"),
                           "eval_verified")
    assert "tensor 3 does not divide num_attention_heads 40" in eval_14b
    assert "tensor 3 neither divides nor is a multiple of num_key_value_heads 8" in eval_14b
    assert "warning" not in plan("hero-14b", tmp_path).split("stage eval_verified")[1]


def test_plan_warns_when_a_server_needs_more_gpus_than_a_node_of_the_recipe(tmp_path):
    """One vLLM server runs on one node: 4 replicas x TP 3 is 12 GPUs, more than the 8 the recipe's nodes have
    (its train stages' gpus_per_node)."""
    twelve = "stages.eval_verified.serve.tensor_parallel_size=3"
    assert "12 GPUs, more than the 8 of a node" in stage_block(plan("hero-14b", tmp_path, twelve), "eval_verified")
    sixteen = plan("hero-14b", tmp_path, twelve, "stages.sft_zero.gpus_per_node=16")
    assert "of a node" not in stage_block(sixteen, "eval_verified")


def test_plan_warns_when_an_evaluation_serves_past_the_positions_the_trained_model_reaches(tmp_path):
    """Trained at 32k without YaRN, the export reaches 32768 positions, and vLLM refuses the evaluations'
    max_model_len 131072; the plan said nothing. Stage 2 without a rope_scaling of its own keeps stage 1's."""
    long = "serve.max_model_len 131072 is longer than the 32768 positions the model reaches"
    short = plan("hero-7b", tmp_path, "stages.sft_zero.seq_length=32768", "stages.sft_zero.rope_scaling=null")
    assert long in stage_block(short, "eval_verified") and long in stage_block(short, "eval_multilingual")
    assert "positions the model reaches" not in plan("hero-7b", tmp_path)
    keeps_yarn = plan("hero-7b", tmp_path, "stages.sft_hero.rope_scaling=null")
    assert long not in keeps_yarn and "positions the model reaches" not in stage_block(keeps_yarn, "sft_hero")
    served_at_32k = plan("hero-7b", tmp_path, "stages.sft_zero.seq_length=32768", "stages.sft_zero.rope_scaling=null",
                         "stages.eval_verified.serve.max_model_len=32768")
    assert long not in stage_block(served_at_32k, "eval_verified")


@pytest.mark.parametrize("size, tensor, pipeline, recomputed_gib", [("7B", 4, 2, 5.06), ("14B", 8, 2, 2.42),
                                                                    ("32B", 8, 4, 3.69)])
def test_full_recompute_counts_the_layer_re_run_in_the_backward_pass(size, tensor, pipeline, recomputed_gib):
    """Megatron re-runs one layer's forward (recompute_num_layers 1) for one micro-batch in the backward pass and
    holds all its activations until that layer's backward ends: 10-20% of the bundled recipes' planned totals,
    left out when only each layer's checkpointed input was counted."""
    config = known_config(f"Qwen/Qwen2.5-Coder-{size}-Instruct")
    layout = ParallelConfig(tensor=tensor, pipeline=pipeline, sequence_parallel=True)
    full = estimate(Settings(data="d", parallel=layout, recompute="full"), config, 1)
    none = estimate(Settings(data="d", parallel=layout, recompute="none"), config, 1)
    # The first stage holds layers / pipeline layers for each of its `pipeline` micro-batches in flight (1F1B).
    layers_held = config["num_hidden_layers"]
    one_layer = none.activations_gib / layers_held
    checkpoint = 2 * config["hidden_size"] / tensor * 131072 / GiB  # a layer's input, split by sequence parallelism
    assert one_layer == pytest.approx(recomputed_gib, abs=0.01)
    assert full.activations_gib == pytest.approx(checkpoint * layers_held + one_layer)


def test_recipe_run_refuses_an_evaluation_vllm_would_not_start(tmp_path, monkeypatch):
    """Days of training, then an eval stage whose server vLLM refuses: `recipe run` stops before its first stage
    (the node-size warning, a guess from the train stages, does not stop it)."""
    for name in ("SWEHERO_SWE_ZERO_REVISION", "SWEHERO_SWE_HERO_REVISION"):
        monkeypatch.setenv(name, "main")
    args = ["recipe", "run", "hero-7b", "--set", f"run_dir={tmp_path}",
            "--set", "stages.eval_verified.serve.tensor_parallel_size=8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "stage eval_verified: serve.tensor_parallel_size: tensor 8 does not divide num_attention_heads 28: vLLM " \
           "will not start" in result.output, result.output
    assert not list(tmp_path.glob("*/manifest.json"))
    dry = CliRunner().invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith("a run would stop before its first stage: stage "
                                                        "eval_verified: serve.tensor_parallel_size: tensor 8"), dry.output


def test_only_servers_started_here_with_known_configs_are_refused(tmp_path):
    """An eval served by endpoints starts no server; a model another kind of stage makes has an unknown
    architecture (the base's is a guess); a train stage's export is judged as the recipe makes it now, not by
    what an earlier run left on disk."""
    from swehero.recipe.config import load_recipe
    from swehero.recipe.plan import unservable

    def refused(*sets: str) -> list[str]:
        recipe = load_recipe("hero-7b", (f"run_dir={tmp_path}", *sets))
        return unservable(recipe, recipe.stages)

    tp8 = "stages.eval_verified.serve.tensor_parallel_size=8"
    assert refused(tp8) and not refused(tp8, "stages.eval_verified.endpoints=[http://127.0.0.1:9/v1]")
    assert not refused(tp8, f"stages.eval_verified.serve.model={tmp_path}/download_zero/model")  # not a train stage's
    stale = tmp_path / "sft_hero" / "hf"  # an earlier run's export without YaRN: 32768 positions
    stale.mkdir(parents=True)
    (stale / "config.json").write_text(json.dumps(known_config("Qwen/Qwen2.5-Coder-7B-Instruct")))
    assert refused() == []


def test_the_distributed_optimizer_shards_over_the_context_parallel_ranks_too(tmp_path):
    """megatron-core 0.16 shards the optimizer state over its `intra_dp_cp` group (data x context ranks): at TP 4,
    CP 2 on 8 GPUs (DP 1) the plan said 21.3 GiB per GPU, twice what each rank holds."""
    block = stage_block(plan("zero-7b", tmp_path, "stages.sft_zero.parallel.context=2",
                             "stages.sft_zero.parallel.pipeline=1"), "sft_zero")
    assert "DP 1" in block and "optimizer 10.6 + " in block, block


def test_recipe_run_refuses_a_train_layout_megatron_would_not_run(tmp_path, monkeypatch):
    """The layout was checked only when the train stage launched, after the downloads, imports and packing before it:
    `recipe run` now stops before its first stage, judging it against the model the recipe names."""
    for name in ("SWEHERO_SWE_ZERO_REVISION", "SWEHERO_SWE_HERO_REVISION"):
        monkeypatch.setenv(name, "main")
    args = ["recipe", "run", "hero-7b", "--set", f"run_dir={tmp_path}", "--set", "stages.sft_zero.parallel.tensor=3"]
    result = CliRunner().invoke(main, args)
    refused = "stage sft_zero: bad parallel layout: world size 8 is not divisible by tensor 3 x pipeline 2"
    assert result.exit_code != 0 and refused in result.output, result.output
    assert "stage sft_hero: bad parallel layout" in result.output  # from sft_zero's folder: the base's architecture
    assert not list(tmp_path.glob("*/manifest.json"))
    dry = CliRunner().invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith("a run would stop before its first stage: ") \
        and refused in dry.output.splitlines()[0], dry.output
    assert "layout" not in CliRunner().invoke(main, args[:-2] + ["--dry-run"]).output


def test_a_layout_against_a_model_not_made_yet_is_judged_on_what_is_known(tmp_path):
    """tiny-cpu's model is made by its first stage: how its heads split is not known before, the world size is."""
    from swehero.recipe.config import load_recipe
    from swehero.recipe.engine import check_stages, plan as plan_steps

    recipe = load_recipe("tiny-cpu", (f"run_dir={tmp_path}", "stages.sft_zero.parallel.tensor=3"))
    assert check_stages(recipe, plan_steps(recipe)).problems == [
        "stage sft_zero: bad parallel layout: world size 2 is not divisible by tensor 3 x pipeline 1 x context 1 = 3"]


MULTI_NODE = """\
name: multi-node
run_dir: {run}
model: {{base: Qwen/Qwen2.5-Coder-7B-Instruct}}
stages:
  - {{name: hours_of_data, kind: command, run: "mkdir dataset", outputs: [dataset]}}
  - {{name: sft, kind: train, data: "${{stages.hours_of_data.dir}}/dataset", parallel: {{tensor: 4, pipeline: 2}},
     nodes: 2}}
"""


def test_a_dry_run_says_where_a_multi_node_train_stage_stops_the_run(tmp_path, monkeypatch):
    """Only a Slurm job trains a stage of several nodes: `recipe run` runs the stages before it and stops there,
    and the dry run says so beforehand (it did not). A stage whose Slurm job finished training is completed from
    its work, and stops nothing."""
    from swehero.recipe.config import load_recipe
    from swehero.recipe.engine import Step, check_stages

    path = tmp_path / "r.yaml"
    path.write_text(MULTI_NODE.format(run=tmp_path / "run"))
    stops = ("stage sft, which spans 2 nodes (only a Slurm job trains it): launch it with `swehero train RECIPE "
             "--stage sft --launcher slurm`")
    dry = CliRunner().invoke(main, ["recipe", "run", str(path), "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith(f"a run would stop at {stops}\n"), dry.output
    result = CliRunner().invoke(main, ["recipe", "run", str(path)])
    assert result.exit_code != 0 and f"Error: {stops.replace(', which', '')}" in result.output, result.output
    assert (tmp_path / "run" / "hours_of_data" / "dataset").is_dir()  # the stages before it ran
    assert not (tmp_path / "run" / "sft").exists()  # nor was the stage begun

    # Handed to Slurm, its job since ended unfinished: `recipe run` refused it only after a new attempt had replaced
    # the manifest's record of the script and the job, which then no later run asked squeue about.
    from swehero.recipe.engine import hand_off

    queue = tmp_path / "bin"  # a Slurm queue without jobs
    queue.mkdir()
    (queue / "squeue").write_text("#!/bin/sh\n")
    (queue / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{queue}:{os.environ['PATH']}")
    script = {"slurm_script": str(tmp_path / "run" / "sft" / "train.sbatch"), "slurm_job": "123"}
    hand_off(load_recipe(str(path), ()), Step(load_recipe(str(path), ()).stage("sft"), True, "never ran"),
             lambda: script)
    handed = (tmp_path / "run" / "sft" / "manifest.json").read_text()
    result = CliRunner().invoke(main, ["recipe", "run", str(path)])
    assert result.exit_code != 0 and "stage sft spans 2 nodes" in result.output, result.output
    assert (tmp_path / "run" / "sft" / "manifest.json").read_text() == handed

    recipe = load_recipe(str(path), ())
    (tmp_path / "run" / "sft").mkdir(parents=True, exist_ok=True)
    # what a Slurm job's workers write at the end
    (tmp_path / "run" / "sft" / "finished.json").write_text('{"step": 10, "hf": true}')
    resumed = Step(recipe.stage("sft"), True, "handed to Slurm (...) (resuming)", resume=True)
    assert check_stages(recipe, [resumed]) == check_stages(recipe, []) and not check_stages(recipe, []).stops_at
    afresh = Step(recipe.stage("sft"), True, "settings changed")
    assert check_stages(recipe, [afresh]).stops_at == [stops]
