"""Every kind of bad recipe fails before any stage runs, with file:line: field: message."""

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from swehero.cli import main
from swehero.recipe.config import load_recipe
from swehero.recipe.loader import RecipeError

GOOD = """\
name: t
run_dir: {run_dir}
stages:
  - name: fetch
    kind: command
    run: echo hi > out.txt
    outputs: [out.txt]
  - name: use
    kind: command
    needs: [fetch]
    run: cat ../fetch/out.txt
"""


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("{run_dir}", str(tmp_path / "run")))
    return path


def problems(path, *overrides):
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return info.value.problems


def test_good_recipe_loads(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert [s.name for s in recipe.stages] == ["fetch", "use"]
    assert recipe.stage("use").needs == ["fetch"]


@pytest.mark.parametrize("text, expected", [
    # YAML syntax: the line of the broken token
    (GOOD.replace("    run: echo hi > out.txt", "    run: [unclosed"),
     ":7: YAML syntax error: expected ',' or ']', but got ':' (while parsing a flow sequence at line 6)"),
    # unknown key, with the nearest valid one suggested
    (GOOD.replace("    outputs: [out.txt]", "    output: [out.txt]"),
     ":7: stages[0].output: unknown field; did you mean 'outputs'?"),
    (GOOD.replace("run_dir:", "rundir:"), ":2: rundir: unknown field; did you mean 'run_dir'?"),
    # wrong type
    (GOOD.replace("outputs: [out.txt]", "outputs: out.txt"), ":7: stages[0].outputs: expected a list, got str"),
    ("name: t\nseed: many\nrun_dir: x\nstages: []\n", ":2: seed: expected int, got str 'many'"),
    # missing required field (reported at its section's line)
    (GOOD.replace("    run: cat ../fetch/out.txt\n", ""), ":8: stages[1].run: missing required field"),
    ("name: t\nstages: []\n", "run_dir: missing required field"),
    # bad needs reference
    (GOOD.replace("needs: [fetch]", "needs: [fecth]"), ":10: stages[1].needs[0]: no stage named 'fecth'; did you mean 'fetch'?"),
    # unknown kind
    (GOOD.replace("kind: command\n    needs", "kind: comand\n    needs"), ":9: stages[1].kind: unknown stage kind 'comand'; did you mean 'command'?"),
    # dependency cycle
    (GOOD.replace("    run: echo hi > out.txt", "    needs: [use]\n    run: echo hi"), "dependency cycle: fetch -> use -> fetch"),
    # missing input file
    (GOOD.replace("    outputs: [out.txt]", "    inputs: [/nonexistent/data.jsonl]"),
     ":7: stages[0].inputs[0]: input not found: /nonexistent/data.jsonl"),
    # unresolvable references
    (GOOD.replace("echo hi > out.txt", "echo ${nothing.here}"), ":6: stages[0].run: ${nothing.here}: nothing does not exist"),
    (GOOD.replace("echo hi > out.txt", "echo ${env:SWEHERO_SURELY_UNSET}"), "environment variable SWEHERO_SURELY_UNSET is not set"),
    ("name: ${a}\na: ${name}\nrun_dir: x\nstages: []\n", "reference cycle"),
    # duplicate names and keys
    (GOOD.replace("name: use", "name: fetch"), ":8: stages[1].name: duplicate stage name 'fetch'"),
    ("name: t\nname: u\nrun_dir: x\nstages: []\n", ":2: name: duplicate key"),
])
def test_bad_recipe_names_file_line_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    found = problems(path)
    assert any(expected in p for p in found), found
    assert all(p.startswith(str(path)) for p in found), found
    # The CLI reports the same and runs nothing.
    result = CliRunner().invoke(main, ["recipe", "run", str(path)])
    assert result.exit_code == 2 and expected in result.output and "nothing was run" in result.output
    assert not (tmp_path / "run").exists()


def test_all_problems_reported_at_once(tmp_path):
    text = GOOD.replace("outputs: [out.txt]", "outputz: [out.txt]").replace("needs: [fetch]", "needs: [nope]")
    found = problems(write(tmp_path, text))
    assert len(found) >= 1 and any("outputz" in p for p in found)


def test_overrides_and_references(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEHERO_TEST_GREETING", "hello")
    path = write(tmp_path, """\
        name: refs
        seed: 3
        description: "${name} writes to ${stages.a.dir}"
        run_dir: {run_dir}
        stages:
          - name: a
            kind: command
            run: echo ${env:SWEHERO_TEST_GREETING} ${env:SWEHERO_NOPE,plan-b} seed=${seed} > out.txt
            outputs: [out.txt]
          - name: b
            kind: command
            run: cat ${stages.a.dir}/out.txt
            inputs: ["${stages.a.dir}/out.txt"]
            outputs: ${stages.a.outputs}
            env: {DIR: "${recipe_dir}"}
        """)
    recipe = load_recipe(path, ("seed=42", "stages.a.outputs=[out.txt, other.txt]", "stages.1.env.RATE=fast"))
    a, b = recipe.stage("a"), recipe.stage("b")
    assert a.settings.run == "echo hello plan-b seed=42 > out.txt"
    assert a.settings.outputs == ["out.txt", "other.txt"]
    assert b.settings.outputs == ["out.txt", "other.txt"]  # a whole-value reference keeps its type
    assert recipe.seed == 42 and recipe.description == f"refs writes to {tmp_path / 'run'}/a"
    assert b.settings.run == f"cat {tmp_path / 'run'}/a/out.txt"
    assert b.settings.env == {"DIR": str(tmp_path), "RATE": "fast"}
    assert b.needs == ["a"]  # inferred: b reads a file inside a's folder


def test_override_errors_name_the_option(tmp_path):
    path = write(tmp_path, GOOD)
    assert "--set stages.nosuch.run" in problems(path, "stages.nosuch.run=x")[0]
    found = problems(path, "stages.fetch.outputs=notalist")
    assert any("--set: stages[0].outputs: expected a list" in p for p in found), found
    found = problems(path, "stages.fetch.lr=1")
    assert any("--set: stages[0].lr: unknown field" in p for p in found), found


def test_exponent_floats_and_int_promotion(tmp_path):
    path = write(tmp_path, "name: t\nrun_dir: {run_dir}\nstages:\n  - {name: tiny, kind: tiny}\n")
    recipe = load_recipe(path, ("stages.tiny.model.rope_theta=1e6",))
    assert recipe.stage("tiny").settings.model.rope_theta == 1e6  # YAML 1.1 would read "1e6" as a string
    recipe = load_recipe(path, ("stages.tiny.model.rope_theta=10000",))
    assert isinstance(recipe.stage("tiny").settings.model.rope_theta, float)
    found = problems(path, "stages.tiny.model.num_layers=2.5")
    assert any("stages[0].model.num_layers: expected int, got float 2.5" in p for p in found), found


def test_variant_recipes_merge_on_their_base(tmp_path):
    (tmp_path / "base.yaml").write_text(textwrap.dedent(GOOD).replace("{run_dir}", str(tmp_path / "run")))
    variant = tmp_path / "variant.yaml"
    variant.write_text("base: base.yaml\nname: v\nstages:\n  - {name: use, run: echo changed}\n"
                       "  - {name: extra, kind: command, run: echo new, needs: [use]}\n")
    recipe = load_recipe(variant)
    assert recipe.name == "v" and [s.name for s in recipe.stages] == ["fetch", "use", "extra"]
    assert recipe.stage("use").settings.run == "echo changed" and recipe.stage("use").needs == ["fetch"]
    assert recipe.stage("fetch").settings.outputs == ["out.txt"]  # untouched base stage
    # Problems name the file the value came from.
    variant.write_text("base: base.yaml\nstages:\n  - {name: use, rn: echo}\n")
    assert any(p.startswith(f"{variant}:3: stages[1].rn: unknown field") for p in problems(variant))
    (tmp_path / "base.yaml").write_text((tmp_path / "base.yaml").read_text().replace("outputs:", "outputz:"))
    variant.write_text("base: base.yaml\nname: v\n")
    assert any(p.startswith(f"{tmp_path / 'base.yaml'}:7: stages[0].outputz") for p in problems(variant))
    variant.write_text("base: nowhere.yaml\nname: v\n")
    assert any(f"{variant}:1: base: no recipe 'nowhere.yaml'" in p for p in problems(variant))


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "recipes").glob("*.yaml")))
def test_bundled_recipes_validate_and_dry_run(name, tmp_path):
    from swehero.recipe.engine import plan

    recipe = load_recipe(name, (f"run_dir={tmp_path}",))
    steps = plan(recipe)
    assert steps and all(step.run for step in steps)
    names = [s.name for s in recipe.stages]
    for stage in recipe.stages:  # dependencies come first
        assert all(names.index(n) < names.index(stage.name) for n in stage.needs)


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "recipes").glob("*.yaml")))
def test_bundled_recipes_plan_with_tokens_per_step(name, tmp_path):
    result = CliRunner().invoke(main, ["recipe", "plan", name, "--set", f"run_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    train_stages = [s for s in load_recipe(name, (f"run_dir={tmp_path}",)).stages if s.kind == "train"]
    assert result.output.count("tokens per step") == len(train_stages) > 0


def test_plan_covers_the_verifier_stages(tmp_path):
    """The verifier's training stage and its server (after the policy's) are planned like any other."""
    result = CliRunner().invoke(main, ["recipe", "plan", "hero-32b-verifier", "--set", f"run_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert "stage sft_verifier: 4x8 GPUs" in result.output
    assert "stage eval_verified (verifier): vLLM, 1 replica(s) x TP 8 = 8 GPUs" in result.output
