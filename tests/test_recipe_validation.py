"""Every kind of bad recipe fails before any stage runs, with file:line: field: message."""

import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from swehero.cli import main
from swehero.recipe.config import load_recipe
from swehero.recipe.loader import RecipeError, load_yaml

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
    (GOOD.replace("cat ../fetch/out.txt", "cat ${stages.fetc.dir}/out.txt"),
     ":11: stages[1].run: ${stages.fetc.dir}: no item 'fetc' in stages; did you mean 'fetch'?"),
    # a cycle only the input paths make, at the line of a stage in it
    (GOOD.replace("    outputs: [out.txt]", "    outputs: [out.txt]\n    inputs: ['${stages.use.dir}/o.txt']", 1),
     ":4: stages[0]: dependency cycle through input paths: fetch -> use -> fetch"),
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


def test_a_recipe_without_a_list_of_stages_or_not_utf8_or_with_a_file_as_run_dir_is_one_problem(tmp_path):
    """Each ended in a traceback (a TypeError checking the stages' graph, a UnicodeDecodeError reading the file, a
    NotADirectoryError in the dry run)."""
    (tmp_path / "afile").write_text("")
    cases = {"name: t\nrun_dir: x\nstages: 5\n": ":3: stages: expected a list of stages, got int",
             "name: t\nrun_dir: x\n": "stages: missing required field",
             f"name: t\nrun_dir: {tmp_path / 'afile'}\nstages: []\n":
                 f":2: run_dir: {tmp_path / 'afile'} is a file, not the folder of the run's stages"}
    for text, expected in cases.items():
        path = write(tmp_path, text)
        for command in ("validate", "show", "plan"):
            result = CliRunner().invoke(main, ["recipe", command, str(path)])
            assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output, \
                (command, result.output)
    (tmp_path / "latin1.yaml").write_bytes(b"name: t\nrun_dir: x\nstages: []\n# caf\xe9\n")
    result = CliRunner().invoke(main, ["recipe", "validate", str(tmp_path / "latin1.yaml")])
    assert result.exit_code == 2 and f"{tmp_path / 'latin1.yaml'}:4: not UTF-8 text (byte 0xe9)" in result.output


def test_an_empty_run_dir_or_list_of_stages_is_refused_at_its_line(tmp_path, monkeypatch):
    """An empty run_dir (its variable set but empty) wrote the stages into the working directory, `${stages.X.dir}`
    being `/X`; `stages: []` validated, and `recipe run` ended in an IndexError."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEHERO_TEST_RUN_DIR", "")
    path = write(tmp_path, GOOD.replace("{run_dir}", "${env:SWEHERO_TEST_RUN_DIR}"))
    said = (f"{path}:2: run_dir: is empty (the recipe writes it as ${{env:SWEHERO_TEST_RUN_DIR}}): name the folder "
            "of the run's stages")
    assert problems(path) == [said]
    assert problems(write(tmp_path, GOOD, "good.yaml"), "run_dir=''") == ["--set: run_dir: is empty: name the folder of the run's "
                                                            "stages"]
    empty = write(tmp_path, "name: t\nrun_dir: {run_dir}\nstages: []\n", "empty.yaml")
    assert problems(empty) == [f"{empty}:3: stages: is empty: a recipe has at least one stage"]
    for recipe, problem in ((path, said), (empty, "stages: is empty")):
        result = CliRunner().invoke(main, ["recipe", "run", str(recipe)])
        assert result.exit_code == 2 and problem in result.output and "nothing was run" in result.output, \
            result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.yaml", "good.yaml", "r.yaml"]


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


def test_a_set_that_replaces_a_section_is_blamed_for_what_it_holds(tmp_path):
    """`--set stages.sft_zero.optimizer={lr: x}` was reported at the recipe's line of the lr it replaced."""
    found = problems("hero-7b", f"run_dir={tmp_path}", "stages.sft_zero.optimizer={lr: x}")
    assert found == ["--set: stages[7].optimizer.lr: expected float, got str 'x'"], found
    found = problems("tiny-cpu", f"run_dir={tmp_path}", "stages.prepare_zero.inputs=[nowhere.jsonl]")
    assert [p for p in found if "nowhere" in p] == ["--set: stages[4].inputs[0]: input not found: nowhere.jsonl"], found


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
    recipe = load_recipe(variant, (f"run_dir={tmp_path / 'v'}",))
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


def test_a_misspelt_section_in_set_is_reported_at_set(tmp_path):
    """`--set stages.sft_zero.optimiser.lr=1` blamed the bundled recipe's line of the stage; the `stages[7]` form
    the problems print is accepted as a path too."""
    found = problems("hero-7b", f"run_dir={tmp_path}", "stages.sft_zero.optimiser.lr=1")
    assert found == ["--set: stages[7].optimiser: unknown field; did you mean 'optimizer'?"], found
    recipe = load_recipe("hero-7b", (f"run_dir={tmp_path}", "stages[7].optimizer.lr=3e-5"))
    assert recipe.stage("sft_zero").settings.optimizer.lr == 3e-5


def test_a_variant_sets_its_own_run_dir(tmp_path):
    """Inherited, a variant's run_dir is its base's: its changed stages would empty and overwrite the base run's
    folders (a probe's variant replaced the base's trained checkpoint). Given in the file or with --set, it runs."""
    (tmp_path / "base.yaml").write_text(textwrap.dedent(GOOD).replace("{run_dir}", str(tmp_path / "run")))
    variant = tmp_path / "variant.yaml"
    variant.write_text("base: base.yaml\nname: v\nstages:\n  - {name: use, run: echo changed}\n")
    assert problems(variant) == [f"{variant}: run_dir: missing required field (a variant sets its own: sharing "
                                 "its base's, it would overwrite that run's stages)"]
    assert load_recipe(variant, (f"run_dir={tmp_path / 'mine'}",)).run_dir == str(tmp_path / "mine")
    variant.write_text("base: tiny-cpu\nname: v\n")  # its 36 references to run_dir are not reported again
    assert problems(variant) == [f"{variant}: run_dir: missing required field (a variant sets its own: sharing "
                                 "its base's, it would overwrite that run's stages)"]
    middle = tmp_path / "middle.yaml"  # each variant of a chain sets its own, not only the first
    middle.write_text(f"base: base.yaml\nrun_dir: {tmp_path / 'middle'}\n")
    variant.write_text("base: middle.yaml\nname: v\n")
    assert any("run_dir: missing required field" in p for p in problems(variant))
    variant.write_text(f"base: middle.yaml\nname: v\nrun_dir: {tmp_path / 'v'}\n")
    assert load_recipe(variant).run_dir == str(tmp_path / "v")


def test_a_variant_stage_without_a_kind_must_name_a_stage_of_the_base(tmp_path):
    """A mistyped name would otherwise be appended as a new stage, reported as missing its kind."""
    (tmp_path / "base.yaml").write_text(textwrap.dedent(GOOD).replace("{run_dir}", str(tmp_path / "run")))
    variant = tmp_path / "variant.yaml"
    variant.write_text("base: base.yaml\nstages:\n  - {name: use, run: echo changed}\n  - {name: fecth, run: echo}\n"
                       "  - {name: extra, kind: command, run: echo new}\n")
    assert problems(variant) == [
        f"{variant}:4: stages[1].name: no stage 'fecth' in the base recipe; did you mean 'fetch'?"]


def test_a_reference_to_a_setting_left_out_is_its_default(tmp_path):
    """The value the stage gets: a section given in part, as a section left out, has its field's defaults for the
    keys it leaves out (distill's agent: SWE-Zero's mode and 1800 s, not the class's exec and 3600 s), as the
    command line's options give them."""
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}
        stages:
          - {name: tiny, kind: tiny, model: {num_layers: 3}}
          - {name: given, kind: distill, agent: {mode: exec}}
          - {name: left, kind: distill}
          - name: c
            kind: command
            run: echo ${stages.tiny.model.num_layers} ${stages.tiny.model.hidden_size}
            outputs: ${stages.left.exclude}
            env: {AGENT: "${stages.given.agent.time_limit_s} ${stages.left.agent.time_limit_s} ${stages.left.agent.mode}"}
        """)
    recipe = load_recipe(path)
    c = recipe.stage("c")
    assert c.settings.run == "echo 3 256" and c.settings.env == {"AGENT": "1800.0 1800.0 zero"}
    assert c.settings.outputs == []
    given = recipe.stage("given").settings.agent
    assert (given.mode, given.time_limit_s) == ("exec", 1800.0)
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}
        stages:
          - {name: d, kind: distill, agent: {policy: openai, openai: {temperature: 1.0}}, serve: {model: org/m}}
          - {name: e, kind: eval, serve: {model: org/m}}
        """)
    recipe = load_recipe(path)
    d, e = recipe.stage("d").settings, recipe.stage("e").settings
    assert (d.agent.mode, d.agent.time_limit_s, d.agent.openai.temperature) == ("zero", 1800.0, 1.0)
    assert d.serve.max_model_len == e.serve.max_model_len == 131072
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}
        stages:
          - {name: tiny, kind: tiny}
          - {name: bare, kind: command}
          - {name: c, kind: command, run: "${stages.bare.run}", outputs: ["${stages.tiny.model.num_layer}"]}
        """)
    assert problems(path) == [
        f"{path}:6: stages[2].run: ${{stages.bare.run}}: stages[1].run is not set in the recipe (no default)",
        f"{path}:6: stages[2].outputs[0]: ${{stages.tiny.model.num_layer}}: stages[0].model.num_layer does not exist",
        f"{path}:5: stages[1].run: missing required field",
    ]


def test_a_whole_value_environment_variable_is_read_as_yaml(tmp_path, monkeypatch):
    """As if written in its place (`1e-5` a float); an empty one stays text, as does one inside a longer string."""
    monkeypatch.delenv("SWEHERO_TEST_SEED", raising=False)
    monkeypatch.delenv("SWEHERO_TEST_UNSET", raising=False)
    monkeypatch.setenv("SWEHERO_TEST_THETA", "1e-5")
    monkeypatch.setenv("SWEHERO_TEST_TEXT", "a: [b #c")
    path = write(tmp_path, """\
        name: t
        seed: ${env:SWEHERO_TEST_SEED,7}
        run_dir: {run_dir}
        stages:
          - {name: tiny, kind: tiny, model: {rope_theta: "${env:SWEHERO_TEST_THETA}"}}
          - name: c
            kind: command
            run: echo ${env:SWEHERO_TEST_SEED,7}
            env: {EMPTY: "${env:SWEHERO_TEST_UNSET,}", TEXT: "${env:SWEHERO_TEST_TEXT}"}
        """)
    recipe = load_recipe(path)
    assert recipe.seed == 7 and recipe.stage("tiny").settings.model.rope_theta == 1e-5
    assert recipe.stage("c").settings.run == "echo 7"
    assert recipe.stage("c").settings.env == {"EMPTY": "", "TEXT": "a: [b #c"}
    monkeypatch.setenv("SWEHERO_TEST_SEED", "2020-13-45")
    assert problems(path) == [
        f"{path}:2: seed: ${{env:SWEHERO_TEST_SEED,7}}: cannot read '2020-13-45': month must be in 1..12"]


def test_a_quoted_environment_value_is_a_string_without_its_quotes(tmp_path, monkeypatch):
    """As documented: `REV='"0123"'` keeps an all-digit revision a string (unquoted, `0123` is YAML 1.1's octal
    83); the quotes are YAML's, not the value's. A quote left open is reported, not kept as text."""
    monkeypatch.setenv("SWEHERO_TEST_DOUBLE", '"0123"')
    monkeypatch.setenv("SWEHERO_TEST_SINGLE", "'it''s 1e-5'")
    monkeypatch.setenv("SWEHERO_TEST_INNER", '"0123"')
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}
        stages:
          - name: c
            kind: command
            run: echo ${env:SWEHERO_TEST_INNER}
            env: {DOUBLE: "${env:SWEHERO_TEST_DOUBLE}", SINGLE: "${env:SWEHERO_TEST_SINGLE}"}
        """)
    settings = load_recipe(path).stage("c").settings
    assert settings.env == {"DOUBLE": "0123", "SINGLE": "it's 1e-5"}
    assert settings.run == 'echo "0123"'  # inside a longer string it is text, quotes and all
    monkeypatch.setenv("SWEHERO_TEST_DOUBLE", '"0123')
    monkeypatch.setenv("SWEHERO_TEST_SINGLE", '"a": b')
    assert problems(path) == [
        f"{path}:7: stages[0].env.DOUBLE: ${{env:SWEHERO_TEST_DOUBLE}}: cannot read '\"0123': not one quoted string: "
        "found unexpected end of stream",
        f"{path}:7: stages[0].env.SINGLE: ${{env:SWEHERO_TEST_SINGLE}}: cannot read '\"a\": b': not one quoted string",
    ]


def test_yaml_merge_keys_merge_and_keep_the_line_each_value_is_written_on(tmp_path):
    """`<<: *anchor` merges a mapping in (its keys before the mapping's own, which win); a merged value is reported
    at the line it is written on, under the path it is merged into."""
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}
        stages:
          - name: a
            kind: command
            run: &run echo a
            env: &env {A: "1", B: "2"}
          - name: b
            kind: command
            run: *run
            env:
              <<: *env
              B: "3"
          - name: c
            kind: command
            <<: [{run: echo c, env: {C: 4}}, {run: echo never}]
        """)
    data, lines = load_yaml(path)
    assert data["stages"][1]["env"] == {"A": "1", "B": "3"} and data["stages"][2]["run"] == "echo c"
    assert lines.where(("stages", 1, "env", "A")) == f"{path}:7"  # the anchor's line
    assert lines.where(("stages", 1, "env", "B")) == f"{path}:13"
    assert problems(path) == [f"{path}:16: stages[2].env.C: expected str, got int 4"]
    twice = write(tmp_path, "a: &a {x: 1, y: 1}\nb: &b {<<: *a, x: 2}\nc: *b\nd: {<<: [*b, {x: 3, z: 3}]}\n", "t.yaml")
    assert load_yaml(twice)[0] == {"a": {"x": 1, "y": 1}, "b": {"y": 1, "x": 2}, "c": {"y": 1, "x": 2},
                                   "d": {"y": 1, "x": 2, "z": 3}}
    duplicate = write(tmp_path, "a: &a {x: 1}\nb:\n  <<: *a\n  y: 1\n  y: 2\n", "d.yaml")
    with pytest.raises(RecipeError, match=r"d.yaml:5: b.y: duplicate key"):
        load_yaml(duplicate)
    not_a_mapping = write(tmp_path, "a: &a [1]\nb:\n  <<: *a\n", "m.yaml")
    with pytest.raises(RecipeError) as info:
        load_yaml(not_a_mapping)
    assert info.value.problems == [f"{not_a_mapping}:1: b: `<<` merges a mapping or a list of mappings, got a scalar"]


@pytest.mark.parametrize("text,where", [("a: &x [1, *x]\n", "a[1]"), ("a: &x\n  b: *x\n", "a.b"),
                                        ("a: &x {<<: *x}\n", "a"), ("a: &x\n  c:\n    <<: *x\n", "a.c")])
def test_an_alias_inside_its_own_anchor_is_one_problem(tmp_path, text, where):
    """YAML allows a value that contains itself; as recipe data it never ends (it was a RecursionError)."""
    path = write(tmp_path, text, "r.yaml")
    with pytest.raises(RecipeError) as info:
        load_yaml(path)
    assert info.value.problems == [f"{path}:1: {where}: an alias of the anchor it is inside (the value would contain "
                                   "itself)"]
    assert load_yaml(write(tmp_path, "a: &x {c: 1}\nb: {<<: *x, d: *x}\n", "ok.yaml"))[0] == {
        "a": {"c": 1}, "b": {"c": 1, "d": {"c": 1}}}  # an anchor used twice, neither inside itself


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
def test_bundled_command_stages_read_other_stages_from_their_own_folder(name, tmp_path, monkeypatch):
    """A command runs in its stage folder, where a relative run_dir's `${stages.NAME.dir}` names nothing:
    tiny-docker's toy_images looked for runs/tiny-docker/toy_tasks/tasks.jsonl in runs/tiny-docker/toy_images."""
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(name, ("run_dir=relative/run",))
    for stage in (stage for stage in recipe.stages if stage.kind == "command"):
        for text in (stage.settings.run, *stage.settings.env.values()):
            assert "relative/run/" not in text, (stage.name, text)


def test_the_paper_recipes_stage_two_and_packing_follow_stage_one(tmp_path):
    """An edit of sft_zero's shape is stage 2's and the packing's too: a probe's 4-GPU nodes and 64k context reached
    sft_zero alone, so stage 2 asked 4-GPU nodes for 8 GPUs and prepare_hero packed 128k rows sft_hero refused."""
    edits = {"gpus_per_node": 4, "seq_length": 65536, "precision": "fp8", "epochs": 2.0}
    for name, follower in (("hero-7b", "sft_hero"), ("hero-32b", "sft_hero"), ("hero-32b-verifier", "sft_verifier")):
        recipe = load_recipe(name, (f"run_dir={tmp_path}", *(f"stages.sft_zero.{k}={v}" for k, v in edits.items())))
        stage_two = recipe.stage(follower).settings
        assert (stage_two.gpus_per_node, stage_two.precision) == (4, "fp8")
        if follower == "sft_hero":
            assert (stage_two.seq_length, stage_two.epochs) == (65536, 2.0)
        assert recipe.stage("prepare_zero").settings.seq_length == recipe.stage("prepare_hero").settings.seq_length == 65536


def test_the_paper_recipes_checkpoint_within_stage_two(tmp_path):
    """sft_hero trains ~314 steps at the paper's data size (`recipe plan`): the default interval (500) saved nothing
    before its end, so a failure 6 hours in started it again; sft_zero saved every 9 hours."""
    for name in ("zero-7b", "hero-7b", "hero-14b", "hero-32b", "hero-32b-fp8", "hero-32b-verifier"):
        for stage in load_recipe(name, (f"run_dir={tmp_path}",)).stages:
            if stage.kind == "train":
                assert stage.settings.checkpoint.every <= 50, (name, stage.name)


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "recipes").glob("*.yaml")))
def test_bundled_recipes_plan_with_tokens_per_step(name, tmp_path):
    result = CliRunner().invoke(main, ["recipe", "plan", name, "--set", f"run_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    train_stages = [s for s in load_recipe(name, (f"run_dir={tmp_path}",)).stages if s.kind == "train"]
    assert result.output.count("tokens per step") == len(train_stages) > 0


def test_plan_warns_when_training_goes_past_the_positions_the_model_reaches(tmp_path):
    """Without the recipe's YaRN (or with factor 2) sft_zero trained at 128k past Qwen2.5's 32k positions, and
    vLLM refused the evaluations' 128k max_model_len after days of training; validation said ok."""
    def plan(*sets):
        args = ["recipe", "plan", "zero-7b", "--set", f"run_dir={tmp_path}", *(a for s in sets for a in ("--set", s))]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        return result.output

    assert "positions the model reaches" not in plan()
    assert "seq_length 131072 is longer than the 32768 positions the model reaches:" in plan(
        "stages.sft_zero.rope_scaling=null")
    assert "seq_length 131072 is longer than the 65536 positions the model reaches with this rope_scaling" in plan(
        "stages.sft_zero.rope_scaling={type: yarn, factor: 2.0, original_max_position_embeddings: 32768}")


def test_plan_covers_the_verifier_stages(tmp_path):
    """The verifier's training stage is planned like any other; the selection is a stage of its own, after the
    8 runs (which need no verifier: retraining one reran all 4,000 attempts)."""
    result = CliRunner().invoke(main, ["recipe", "plan", "hero-32b-verifier", "--set", f"run_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert "stage sft_verifier: 4x8 GPUs" in result.output
    recipe = load_recipe("hero-32b-verifier", (f"run_dir={tmp_path}",))
    assert "sft_verifier" not in recipe.stage("eval_verified").needs
    assert set(recipe.stage("select_verified").needs) == {"eval_verified", "sft_verifier"}


def test_stage_names_are_folder_names(tmp_path):
    """A name such as `.` or `../x` would make the stage's folder another stage's, the run's or one outside it,
    which a rerun empties: every such name is refused, and nothing runs."""
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}
        stages:
          - {name: a, kind: command, run: echo hi > out.txt, outputs: [out.txt]}
          - {name: ".", kind: command, run: "true"}
          - {name: "../precious", kind: command, run: "true"}
          - {name: "a.b", kind: command, run: "true"}
          - {name: "", kind: command, run: "true"}
          - {name: "-x", kind: command, run: "true"}
          - {name: "ok-2_B", kind: command, run: "true"}
        """)
    found = problems(path)
    for i, name in [(1, "."), (2, "../precious"), (3, "a.b"), (4, ""), (5, "-x")]:
        assert any(p.startswith(f"{path}:{i + 4}: stages[{i}].name: {name!r} is not a stage name") for p in found), found
    assert len(found) == 5, found
    result = CliRunner().invoke(main, ["recipe", "run", str(path)])
    assert result.exit_code == 2 and "nothing was run" in result.output
    assert not (tmp_path / "run").exists() and (outside / "keep.txt").read_text() == "keep"


def test_values_that_are_not_yaml_are_one_line_errors(tmp_path):
    path = write(tmp_path, GOOD)
    for value, reason in [("[a", "expected ',' or ']', but got '<stream end>'"), ("2020-13-45", "month must be in 1..12")]:
        found = problems(path, f"description={value}")
        assert found == [f"--set description={value}: the value is not YAML: {reason} (quote it to keep it a string)"]
    bad_date = write(tmp_path, GOOD.replace("run_dir:", "description: 2020-13-45\nrun_dir:"))
    assert problems(bad_date) == [f"{bad_date}:2: description: cannot read '2020-13-45': month must be in 1..12 "
                                  "(quote it to keep it a string)"]


@pytest.mark.parametrize("text, value", [
    ("-e5", "-e5"), (".e5", ".e5"), ("+e2", "+e2"), ("e5", "e5"),  # no digit before the exponent: strings
    ("1e-5", 1e-5), ("+1.e5", 1e5), (".5e1", 5.0), ("1_000e3", 1e6), ("-2E+2", -200.0),
])
def test_exponent_floats_need_a_digit(tmp_path, text, value):
    data, _ = load_yaml(write(tmp_path, f"x: {text}\n"))
    assert data["x"] == value and type(data["x"]) is type(value)


def test_documented_overrides_name_real_fields():
    """The `--set stages....` examples of docs/recipes.md and of `recipe --help` apply to the bundled hero-32b."""
    docs = (Path(__file__).parents[1] / "docs" / "recipes.md").read_text()
    helps = [CliRunner().invoke(main, ["recipe", command, "--help"], terminal_width=400).output
             for command in ("validate", "run")]
    examples = sorted(set(re.findall(r"--set (stages\.[^\s`)]+)", "\n".join([docs, *helps]))) - {
        "stages.download_zero.repos.zero.revision=..."})  # a placeholder value
    assert any(".lr=" in e for e in examples), examples
    for assignment in examples:
        try:
            load_recipe("hero-32b", (assignment,))
        except RecipeError as e:  # an example's file need not exist; its field must
            assert not [p for p in e.problems if "input not found" not in p], (assignment, e.problems)


def test_settings_out_of_range_are_reported_before_anything_runs(tmp_path):
    (tmp_path / "t.jsonl").write_text("")
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}
        stages:
          - name: prep
            kind: prepare
            inputs: [t.jsonl]
            seq_length: -5
            valid_fraction: 1
            batch_size: 0
            max_open: 0
          - name: sft
            kind: train
            data: ${stages.prep.dir}/dataset
            epochs: 0
            optimizer: {lr: -1}
        """.replace("t.jsonl", str(tmp_path / "t.jsonl")))
    assert problems(path) == [
        f"{path}:7: stages[0].seq_length: must be >= 1, got -5",
        f"{path}:8: stages[0].valid_fraction: must be >= 0 and < 1, got 1.0",
        f"{path}:9: stages[0].batch_size: must be >= 1, got 0",
        f"{path}:10: stages[0].max_open: must be >= 1, got 0",
        f"{path}:14: stages[1].epochs: must be > 0, got 0.0",
        f"{path}:15: stages[1].optimizer.lr: must be > 0, got -1.0",
    ]
    assert problems(path, "stages.prep.valid_fraction=-1")[1].endswith("valid_fraction: must be >= 0 and < 1, got -1.0")


@pytest.mark.parametrize("assignment, message", [
    ("stages.sft_zero.parallel.tensor=0", "parallel.tensor: must be >= 1, got 0"),
    ("stages.sft_zero.parallel.context=-2", "parallel.context: must be >= 1, got -2"),
    ("stages.sft_zero.nodes=0", "nodes: must be >= 1, got 0"),
    ("stages.sft_zero.gpus_per_node=0", "gpus_per_node: must be >= 1, got 0"),
    ("stages.sft_zero.steps=-5", "steps: must be >= 1, got -5"),
    ("stages.sft_zero.optimizer.warmup_fraction=2", "optimizer.warmup_fraction: must be >= 0 and <= 1, got 2.0"),
    ("stages.sft_zero.optimizer.min_lr=1", "optimizer.min_lr: must be <= lr (1e-05), got 1.0"),
    ("stages.eval_verified.serve.tensor_parallel_size=0", "serve.tensor_parallel_size: must be >= 1, got 0"),
    ("stages.eval_verified.serve.data_parallel_size=0", "serve.data_parallel_size: must be >= 1, got 0"),
    ("stages.eval_verified.serve.max_model_len=0", "serve.max_model_len: must be >= 1, got 0"),
    ("stages.eval_verified.agent.openai.top_p=7", "agent.openai.top_p: must be > 0 and <= 1, got 7.0"),
    ("stages.eval_verified.agent.openai.top_k=-2", "agent.openai.top_k: must be >= -1, got -2"),
    ("stages.eval_verified.agent.openai.temperature=-1", "agent.openai.temperature: must be >= 0 and <= 2, got -1.0"),
    ("stages.eval_verified.agent.loop.max_steps=0", "agent.loop.max_steps: must be >= 1, got 0"),
    ("stages.eval_verified.workers=0", "workers: must be >= 1, got 0"),
    ("stages.eval_verified.grading.workers=0", "grading.workers: must be >= 1, got 0"),
    ("stages.eval_verified.agent.openai.max_reply_tokens=0", "agent.openai.max_reply_tokens: must be >= 1, got 0"),
    ("stages.eval_verified.limit=-1", "limit: must be >= 0, got -1"),
    ("stages.eval_verified.shard=abc", "shard: must look like i/n (e.g. 0/4), got 'abc'"),
    ("stages.eval_verified.shard=3/2", "shard: '3/2': need 0 <= i < n"),
])
def test_sizes_and_sampling_settings_out_of_range_are_reported(assignment, message, tmp_path):
    """Each was accepted, then divided by (`recipe plan`: ZeroDivisionError) or planned as nonsense (0x8 GPUs)."""
    found = problems("hero-7b", f"run_dir={tmp_path}", assignment)
    assert re.fullmatch(rf"--set: stages\[\d+\]\.{re.escape(message)}", found[0]), found


def test_the_verifier_datas_reject_fraction_is_a_share(tmp_path):
    found = problems("hero-32b-verifier", f"run_dir={tmp_path}", "stages.verifier_data.max_reject_fraction=-1")
    assert re.fullmatch(r"--set: stages\[\d+\]\.max_reject_fraction: must be >= 0 and <= 1, got -1.0", found[0]), found


@pytest.mark.parametrize("assignment", ["stages.sft_zero.parallel.tensor=0",
                                        "stages.eval_verified.serve.tensor_parallel_size=0"])
def test_plan_reports_a_size_of_0_instead_of_dividing_by_it(assignment):
    result = CliRunner().invoke(main, ["recipe", "plan", "hero-7b", "--set", assignment])
    assert result.exit_code == 2 and "must be >= 1, got 0" in result.output, result.output


@pytest.mark.parametrize("root, said", [("/ws/{name}", "takes the placeholders {repo} and {version} only"),
                                        ("workspace/{repo}", "must be an absolute path"),
                                        ("/tmp/{repo}", "cannot appear at /tmp/owner__name inside the sandbox")])
def test_an_agent_root_no_attempt_can_use_is_refused_before_the_run(tmp_path, root, said):
    """Each attempt of a run failed on it (an agent_error each, the run exiting 0). (Reported again where another
    stage takes the same agent section.)"""
    found = problems("tiny-cpu", f"run_dir={tmp_path}", f"stages.eval_untrained.agent.root={root}")
    assert re.fullmatch(rf"--set: stages\[\d+\]\.agent\.root: .*{re.escape(said)}.*", found[0]), found


def test_min_lr_above_lr_is_reported_at_its_line(tmp_path):
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}
        stages:
          - name: sft
            kind: train
            data: d
            optimizer:
              lr: 1.0e-5
              min_lr: 1.0e-3
          - name: sft2
            kind: train
            data: d
            optimizer: {lr: "${nothing}", min_lr: 1.0e-3}
        """)
    assert problems(path) == [f"{path}:13: stages[1].optimizer.lr: ${{nothing}}: nothing does not exist",
                              f"{path}:9: stages[0].optimizer.min_lr: must be <= lr (1e-05), got 0.001"]


@pytest.mark.parametrize("scaling, message", [
    ("{type: yarn}", "factor: must be a number > 1, got nothing"),
    ("{type: yarn, factor: abc}", "factor: must be a number > 1, got 'abc'"),
    ("{type: yarn, factor: -2}", "factor: must be a number > 1, got -2"),
    ("{factor: 4}", "type: must be yarn (the rope scaling Qwen2.5 extends its context with), got nothing"),
    ("{rope_type: linear, factor: 4}", "rope_type: must be yarn (the rope scaling Qwen2.5 extends its context with), "
                                       "got 'linear'"),
    ("{type: yarn, factor: 4, original_max_position_embeddings: abc}",
     "original_max_position_embeddings: must be a whole number > 0, got 'abc'"),
])
def test_a_rope_scaling_no_model_is_built_with_is_reported_by_validate(scaling, message, tmp_path):
    """`validate` said ok; `plan` and `run --dry-run` then failed with a traceback (KeyError 'factor', ValueError),
    or planned -65536 positions (factor -2), or trained without scaling (no type)."""
    found = problems("zero-7b", f"run_dir={tmp_path}", f"stages.sft_zero.rope_scaling={scaling}")
    assert found == [f"--set: stages[7].rope_scaling.{message}"]
    assert load_recipe("zero-7b", (f"run_dir={tmp_path}",
                                   "stages.sft_zero.rope_scaling={rope_type: yarn, factor: 2}")).stage("sft_zero")


@pytest.mark.parametrize("setting, message", [
    ("rope_scaling: {type: yarn, factor: 1}", "rope_scaling.factor: must be a number > 1, got 1"),
    # passed `recipe validate` and stopped `recipe plan` and `run`
    ("global_batch_tokens: 0", "global_batch_tokens: must be >= 1, got 0"),
])
def test_a_train_setting_no_run_can_take_is_reported_at_its_line(tmp_path, setting, message):
    path = write(tmp_path, f"""\
        name: t
        run_dir: {{run_dir}}
        stages:
          - name: sft
            kind: train
            data: d
            {setting}
        """)
    assert problems(path) == [f"{path}:7: stages[0].{message}"]


def test_a_rope_scaling_a_variant_recipe_overrides_is_reported_at_the_variants_line(tmp_path):
    """Merged key by key into the base's mapping, the problem was reported at the base's `rope_scaling` (its line
    73 reads `factor: 4.0`)."""
    hero = Path(__file__).parent.parent / "recipes" / "hero-7b.yaml"  # whose sft_hero takes sft_zero's scaling
    path = write(tmp_path, f"""\
        base: {hero}
        name: variant
        run_dir: {{run_dir}}
        stages:
          - name: sft_zero
            rope_scaling:
              type: yarn
              factor: 0.5
        """)
    assert problems(path) == [f"{path}:8: stages[7].rope_scaling.factor: must be a number > 1, got 0.5",
                              f"{hero}:31: stages[12].rope_scaling.factor: must be a number > 1, got 0.5"]


def test_commands_built_from_the_settings_report_ranges_too():
    result = CliRunner().invoke(main, ["serve", "start", "some/model", "--tensor-parallel-size", "0"])
    assert result.exit_code == 2, result.output
    assert "--tensor-parallel-size: tensor_parallel_size: must be >= 1, got 0" in result.output


@pytest.mark.parametrize("layout, world, message", [
    (dict(tensor=0), 8, "tensor 0"), (dict(pipeline=0, context=-1), 8, "pipeline 0, context -1"),
    (dict(virtual_pipeline=0), 8, "virtual_pipeline 0"), ({}, 0, "world size 0")])
def test_a_layout_built_outside_a_recipe_with_a_size_below_1_is_a_layout_error(layout, world, message):
    from swehero.model.folder import known_config
    from swehero.model.parallel import ParallelConfig
    from swehero.train.config import LayoutError, Settings, check_layout

    with pytest.raises(LayoutError, match=f"bad parallel layout: {message}: sizes must be >= 1"):
        check_layout(Settings(data="d", parallel=ParallelConfig(**layout)),
                     known_config("Qwen/Qwen2.5-Coder-7B-Instruct"), world)


@pytest.mark.parametrize("mfu", ["0", "-1", "1.5"])
def test_plan_takes_a_utilisation_between_0_and_1(mfu):
    result = CliRunner().invoke(main, ["recipe", "plan", "hero-32b", "--mfu", mfu])
    assert result.exit_code == 2 and "Invalid value for '--mfu'" in result.output


def test_a_key_set_inside_a_reference_names_where_to_set_it():
    """tiny-cpu's eval_trained takes its agent settings by reference: a key below it is set where it points."""
    result = CliRunner().invoke(main, ["recipe", "validate", "tiny-cpu", "--set",
                                       "stages.eval_trained.agent.openai.top_p=0.5"])
    assert result.exit_code == 2 and (
        "--set stages.eval_trained.agent.openai.top_p: stages[12].agent is not a mapping but "
        "${stages.eval_untrained.agent}, a reference: set stages.eval_untrained.agent.openai.top_p (every section "
        "that refers to it changes), or stages[12].agent whole") in result.output, result.output
    assert CliRunner().invoke(main, ["recipe", "validate", "tiny-cpu", "--set",
                                     "stages.eval_untrained.agent.openai.top_p=0.5"]).exit_code == 0


def test_references_schema_and_needs_are_checked_in_one_pass(tmp_path):
    """A reference to no setting is reported beside every other stage's problems and bad needs, instead of one phase
    at a time."""
    path = write(tmp_path, """\
        name: t
        rundir: x
        run_dir: {run_dir}
        stages:
          - {name: a, kind: command, run: "true", outputz: [o.txt]}
          - {name: b, kind: command, run: "true", outputs: "${stages.a.output}", needs: [c]}
          - {name: c, kind: command, run: "true", needs: [b, nope]}
          - {name: d, kind: comand, run: "true"}
        """)
    assert problems(path, "stages.x.run=1", "stages.a.seed=[") == [
        "--set stages.x.run: no item 'x' in stages (have ['a', 'b', 'c', 'd'])",
        "--set stages.a.seed=[: the value is not YAML: expected the node content, but found '<stream end>' "
        "(quote it to keep it a string)",
        f"{path}:6: stages[1].outputs: ${{stages.a.output}}: stages[0].output does not exist",
        f"{path}:2: rundir: unknown field; did you mean 'run_dir'?",
        f"{path}:5: stages[0].outputz: unknown field; did you mean 'outputs'?",
        f"{path}:8: stages[3].kind: unknown stage kind 'comand'; did you mean 'command'?",
        f"{path}:7: stages[2].needs[1]: no stage named 'nope' (valid: a, b, c, d)",
        f"{path}:6: stages[1].needs: dependency cycle: b -> c -> b",
    ]


def test_a_filter_skipping_no_rule_is_reported_at_its_field(tmp_path):
    """`rules.skip` names rules the filter leaves out (the releases carry no test patch for `touches_test_files`):
    a misspelt name is a validation error at its line and field, not a rule silently left running."""
    src = tmp_path / "in.jsonl"
    src.write_text("")
    path = write(tmp_path, f"name: t\nrun_dir: {tmp_path}/run\nstages:\n  - name: f\n    kind: filter\n"
                           f"    trajectories: {src}\n    rules: {{stage: zero, skip: [touches_test_file]}}\n")
    found = problems(path)
    assert len(found) == 1 and found[0].startswith(f"{path}:7: stages[0].rules.skip[0]: must be one of ["), found
    assert "'touches_test_files'" in found[0] and "got 'touches_test_file'" in found[0]


FILES_READ = """\
name: t
run_dir: {run_dir}
stages:
  - name: d
    kind: distill
    exclude: [{tmp}/eval.jsonl, verified]
  - name: f
    kind: filter
    trajectories: {tmp}/in.jsonl
    rules: {stage: hero, tasks: {tmp}/tasks.jsonl, repos: {tmp}/repos}
"""


def test_the_files_a_distill_exclude_and_a_filter_read_are_checked_and_fingerprinted(tmp_path):
    """A distill stage's `exclude` and a filter's `rules.tasks` were plain strings: a typo passed validation, and a
    changed file did not rerun the stage. (`rules.repos`, a folder of checkouts, stays a path, as the rollout
    stages' `repos`.)"""
    path = write(tmp_path, FILES_READ.replace("{tmp}", str(tmp_path)))
    (tmp_path / "in.jsonl").write_text("")
    assert problems(path) == [f"{path}:6: stages[0].exclude[0]: input not found: {tmp_path}/eval.jsonl",
                              f"{path}:10: stages[1].rules.tasks: input not found: {tmp_path}/tasks.jsonl"]
    for name in ("eval.jsonl", "tasks.jsonl"):
        (tmp_path / name).write_text("")
    (tmp_path / "repos").mkdir()
    recipe = load_recipe(path)
    assert recipe.stage("d").inputs == [str(tmp_path / "eval.jsonl")]
    assert recipe.stage("f").inputs == [str(tmp_path / name) for name in ("in.jsonl", "tasks.jsonl")]


def test_the_paper_recipes_import_every_trajectory_and_select_after_the_filter(tmp_path):
    """The paper filters, then keeps ~2 trajectories per task (SWE-Zero, ~300k) and 1 (SWE-Hero); selecting at the
    import kept rollouts the filter drops although the task had a clean one."""
    for name in ("zero-7b", "hero-7b", "hero-14b", "hero-32b", "hero-32b-fp8", "hero-32b-verifier"):
        recipe = load_recipe(name, (f"run_dir={tmp_path}",))
        stages = {stage.name: stage.settings for stage in recipe.stages}
        for imported in ("import_zero", "import_hero"):
            assert (stages[imported].per_instance, stages[imported].limit) == (None, None), (name, imported)
        zero = stages["filter_zero"].rules
        assert (zero.stage, zero.skip, zero.per_instance, zero.limit) == ("zero", ["touches_test_files"], 2, 300000)
        assert stages["prepare_zero"].inputs == [f"{tmp_path}/filter_zero/trajectories.jsonl"]
        if "filter_hero" in stages:
            hero = stages["filter_hero"].rules
            assert (hero.stage, hero.skip, hero.per_instance, hero.limit) == ("hero", ["touches_test_files"], 1, None)
            assert not hero.resolved_only
            assert stages["prepare_hero"].inputs == [f"{tmp_path}/filter_hero/trajectories.jsonl"]


def test_nested_references_resolve_innermost_first_and_a_reference_left_open_is_reported(tmp_path, monkeypatch):
    """`${env:A,${env:B}/x}` (OmegaConf's nested default) stayed text and a `${` left open validated: run_dir was a
    folder named `${env:...` under the working directory. A default the variable makes unused needs nothing."""
    monkeypatch.delenv("SWEHERO_TEST_RUN_DIR", raising=False)
    monkeypatch.setenv("SWEHERO_TEST_SCRATCH", str(tmp_path / "scratch"))
    path = write(tmp_path, """\
        name: t
        run_dir: ${env:SWEHERO_TEST_RUN_DIR,${env:SWEHERO_TEST_SCRATCH}/runs}
        stages:
          - {name: c, kind: command, run: "echo ${env:SWEHERO_TEST_UNSET,${name}}"}
        """)
    recipe = load_recipe(path)
    assert recipe.run_dir == f"{tmp_path}/scratch/runs" and recipe.stage("c").settings.run == "echo t"
    monkeypatch.setenv("SWEHERO_TEST_RUN_DIR", str(tmp_path / "mine"))
    monkeypatch.delenv("SWEHERO_TEST_SCRATCH")
    assert load_recipe(path).run_dir == str(tmp_path / "mine")
    monkeypatch.delenv("SWEHERO_TEST_RUN_DIR")
    assert problems(path) == [f"{path}:2: run_dir: environment variable SWEHERO_TEST_SCRATCH is not set (use "
                              "${env:SWEHERO_TEST_SCRATCH,default} for a default)"]
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}_${env:USER_TAG
        stages:
          - {name: c, kind: command, run: "echo ${}"}
        """)
    assert problems(path) == [
        f"{path}:2: run_dir: '${{env:USER_TAG': a `${{` that no `}}` closes (`$${{` writes the text `${{`)",
        f"{path}:4: stages[0].run: ${{}}: an empty reference"]


def test_shell_variables_are_written_with_an_escape_and_every_bad_reference_is_reported(tmp_path):
    """bash's `${VAR}` was read as a recipe reference, reported as "SWEHERO_SEED does not exist" (a variable the
    command stage sets), and only the first of a value's bad references was."""
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}
        stages:
          - name: c
            kind: command
            run: echo "$${SWEHERO_SEED}" > "$${SWEHERO_STAGE_DIR}/o.txt"; echo $${N:-3} $$ ${name} $$${x}
            env: {RUN: "${stages.c.run}", DIR: "$${recipe_dir}"}
        """)
    settings = load_recipe(path).stage("c").settings
    run = 'echo "${SWEHERO_SEED}" > "${SWEHERO_STAGE_DIR}/o.txt"; echo ${N:-3} $$ t $${x}'
    assert settings.run == run and settings.env == {"RUN": run, "DIR": "${recipe_dir}"}  # an escape is text once
    path.write_text(path.read_text().replace("$${", "${"))
    assert problems(path) == [
        f"{path}:6: stages[0].run: ${{SWEHERO_SEED}}: SWEHERO_SEED does not exist (a shell variable? write "
        "$SWEHERO_SEED or $${SWEHERO_SEED})",
        f"{path}:6: stages[0].run: ${{SWEHERO_STAGE_DIR}}: SWEHERO_STAGE_DIR does not exist (a shell variable? write "
        "$SWEHERO_STAGE_DIR or $${SWEHERO_STAGE_DIR})",
        f"{path}:6: stages[0].run: ${{N:-3}}: N:-3 does not exist (a shell variable? write $${{N:-3}})"]


def test_recipe_dir_in_a_base_recipe_is_the_base_recipes_folder(tmp_path):
    """It was the variant's folder: a base's data beside it was not found, or the variant's file of that name used."""
    (tmp_path / "base" / "data").mkdir(parents=True)
    (tmp_path / "base" / "data" / "in.txt").write_text("base\n")
    (tmp_path / "variant" / "data").mkdir(parents=True)
    (tmp_path / "variant" / "data" / "in.txt").write_text("variant\n")
    write(tmp_path / "base", """\
        name: b
        run_dir: {run_dir}
        stages:
          - {name: a, kind: command, run: cat in.txt, inputs: ["${recipe_dir}/data/in.txt"]}
        """, "base.yaml")
    variant = write(tmp_path / "variant", """\
        base: ../base/base.yaml
        name: v
        run_dir: {run_dir}
        stages:
          - {name: a, env: {HERE: "${recipe_dir}"}}
        """, "v.yaml")
    a = load_recipe(variant, ("stages.a.env.SET=${recipe_dir}",)).stage("a")
    assert a.settings.inputs == [str(tmp_path / "base" / "data" / "in.txt")]
    assert a.settings.env == {"HERE": str(tmp_path / "variant"), "SET": str(tmp_path / "variant")}


def test_a_whole_section_reference_is_the_section_the_referenced_stage_gets(tmp_path):
    """`agent: ${stages.dist.agent}` copied what the distill stage wrote over the eval's own agent defaults: the
    execution-based agent with 3600 s, not SWE-Zero's execution-free one with 1800 s."""
    path = write(tmp_path, """\
        name: t
        run_dir: {run_dir}
        stages:
          - {name: dist, kind: distill, tasks: toy, agent: {policy: oracle, openai: {temperature: 0.5}}}
          - {name: ev, kind: eval, tasks: toy, agent: "${stages.dist.agent}"}
          - {name: ev2, kind: eval, tasks: toy, agent: {policy: oracle, openai: "${stages.dist.agent.openai}"}}
        """)
    recipe = load_recipe(path)
    dist, ev, ev2 = (recipe.stage(n).settings.agent for n in ("dist", "ev", "ev2"))
    assert (dist.mode, dist.time_limit_s) == ("zero", 1800.0)
    assert ev == dist
    assert ev2.openai == dist.openai and ev2.openai.temperature == 0.5


def test_a_set_value_keeps_a_hash_as_text(tmp_path):
    """As Hydra reads an override: `--set 'description=run #2'` was `run`, the rest dropped as a YAML comment."""
    path = write(tmp_path, GOOD)
    recipe = load_recipe(path, ("description=run #2 of the sweep", "stages.fetch.run=echo hi > out.txt # and more",
                                "stages.use.env={A: 'x #1'}"))
    assert recipe.description == "run #2 of the sweep"
    assert recipe.stage("fetch").settings.run == "echo hi > out.txt # and more"
    assert recipe.stage("use").settings.env == {"A": "x #1"}
    assert problems(path, "stages.fetch.outputs=[out.txt] # the result") == [
        "--set stages.fetch.outputs=[out.txt] # the result: ` #` starts a YAML comment after a list or mapping: "
        "quote the text that holds it (`[a, 'b #2']`)"]


def test_a_mapping_key_of_the_wrong_type_is_reported(tmp_path):
    """`--set stages.c.env={1: x}` validated, and the run ended in a TypeError traceback."""
    assert problems(write(tmp_path, GOOD), "stages.use.env={1: x, B: y}") == [
        "--set: stages[1].env: key 1: expected str, got int 1"]


@pytest.mark.parametrize("assignment, message", [
    ("memory=16Gi", "memory: must be bytes or a number with b, k, m or g (as 8g or 512m), got '16Gi'"),
    ("memory=4k", "memory: must be at least 6m (the engine's least), got '4k'"),
    ("cpus=0", "cpus: must be > 0, got 0.0"),
    ("pids=0", "pids: must be >= 1, got 0"),
    ("lifetime=0", "lifetime: must be >= 1, got 0"),
])
def test_container_limits_the_engine_refuses_are_reported_before_the_run(assignment, message, tmp_path):
    """The engine refused them at each attempt's container: every attempt of an evaluation failed alike (a
    traceback in `agent run`)."""
    found = problems("hero-7b", f"run_dir={tmp_path}", f"stages.eval_verified.agent.docker.{assignment}")
    assert re.fullmatch(rf"--set: stages\[\d+\]\.agent\.docker\.{re.escape(message)}", found[0]), found
