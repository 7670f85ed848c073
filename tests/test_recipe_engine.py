"""Stages run, are skipped when complete and unchanged, and rerun (with the reason said) otherwise."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from swehero.cli import main

RECIPE = """\
name: engine
run_dir: {run}
stages:
  - name: first
    kind: command
    run: echo first >> {log}; cat {data} > out.txt
    inputs: [{data}]
    outputs: [out.txt]
  - name: second
    kind: command
    run: echo second >> {log}; tr a-z A-Z < ../first/out.txt > out.txt
    inputs: ["${{stages.first.dir}}/out.txt"]
    outputs: [out.txt]
  - name: third
    kind: command
    needs: [second]
    run: echo third >> {log}
"""


def setup_recipe(tmp_path: Path) -> Path:
    (tmp_path / "data.txt").write_text("hello\n")
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(run=tmp_path / "run", log=tmp_path / "log", data=tmp_path / "data.txt"))
    return path


def run(path, *args) -> str:
    result = CliRunner().invoke(main, ["recipe", "run", str(path), *args])
    assert result.exit_code == 0, result.output
    return result.output


def ran(tmp_path) -> list[str]:
    """Stages that ran since the last call (from the log the commands append to)."""
    log = tmp_path / "log"
    lines = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def manifest(tmp_path, stage) -> dict:
    return json.loads((tmp_path / "run" / stage / "manifest.json").read_text())


def test_another_recipes_run_dir_is_refused_before_anything_is_emptied(tmp_path, monkeypatch):
    """The bundled recipes share $SWEHERO_RUN_DIR: a second recipe with a stage of the same name and other settings
    emptied the first one's stage folder and ran it again."""
    path = setup_recipe(tmp_path)
    run(path)
    ran(tmp_path)
    monkeypatch.setenv("SWEHERO_RUN_DIR", str(tmp_path / "run"))
    other = tmp_path / "other.yaml"
    other.write_text(path.read_text().replace("name: engine", "name: demo").replace(
        f"run_dir: {tmp_path / 'run'}", "run_dir: ${env:SWEHERO_RUN_DIR}").replace("cat ", "tac "))
    dry = run(other, "--dry-run")
    problem = (f"run_dir {tmp_path / 'run'} (from $SWEHERO_RUN_DIR) holds a run of recipe 'engine' (its "
               "recipe.resolved.yaml), not of 'demo'")
    assert f"a run would stop before its first stage: {problem}" in dry, dry
    result = CliRunner().invoke(main, ["recipe", "run", str(other)])
    assert result.exit_code == 1 and problem in result.output, result.output
    assert ran(tmp_path) == [] and (tmp_path / "run" / "first" / "out.txt").read_text() == "hello\n"
    # A stage handed to Slurm (`swehero train --launcher slurm`) was emptied for its job without the check.
    from swehero.errors import InputError
    from swehero.recipe.config import load_recipe
    from swehero.recipe.engine import hand_off, plan

    loaded = load_recipe(str(other))
    with pytest.raises(InputError, match=re.escape(problem)):
        hand_off(loaded, plan(loaded)[0], lambda: {"slurm_script": "/jobs/t.sbatch", "slurm_job": None})
    assert (tmp_path / "run" / "first" / "out.txt").read_text() == "hello\n"
    (tmp_path / "run" / "recipe.resolved.yaml").unlink()  # as the message says, when the run is this recipe's
    run(other)
    assert ran(tmp_path) == ["first", "second", "third"]


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_run_skip_and_rerun_reasons(tmp_path):
    path = setup_recipe(tmp_path)
    run(path)
    assert ran(tmp_path) == ["first", "second", "third"]
    assert (tmp_path / "run" / "second" / "out.txt").read_text() == "HELLO\n"
    m = manifest(tmp_path, "second")
    assert m["status"] == "complete" and m["upstream"] == {"first": manifest(tmp_path, "first")["fingerprint"]}
    assert m["outputs"] == {"out.txt": str(tmp_path / "run" / "second" / "out.txt")}
    assert {"torch", "swehero"} <= set(m["versions"]) and m["started"] <= m["finished"]
    assert (tmp_path / "run" / "recipe.resolved.yaml").exists()

    # Nothing changed: everything is skipped.
    out = run(path, "--dry-run")
    assert out.count("up to date") == 3
    run(path)
    assert ran(tmp_path) == []

    # A settings change reruns that stage and everything downstream, and says why.
    out = run(path, "--dry-run", "--set", "stages.third.run=echo third-b >> " + str(tmp_path / "log"))
    assert "settings changed: run:" in out and out.count("up to date") == 2
    run(path, "--set", "stages.second.run=echo second >> " + str(tmp_path / "log") + "; cp ../first/out.txt .")
    assert ran(tmp_path) == ["second", "third"]
    out = run(path, "--dry-run", "--force")
    assert "first   forced" in out and "upstream first reruns" in out and "skip" not in out

    # An input file that changes reruns its reader and the stages downstream.
    time.sleep(0.01)
    (tmp_path / "data.txt").write_text("changed\n")
    out = run(path, "--dry-run")
    assert f"input changed: {tmp_path / 'data.txt'}" in out and "upstream first reruns" in out
    run(path)
    assert ran(tmp_path) == ["first", "second", "third"]

    # An output deleted by hand is noticed.
    (tmp_path / "run" / "first" / "out.txt").unlink()
    assert "output missing" in run(path, "--dry-run")



def test_a_run_moved_elsewhere_is_the_same_run(tmp_path):
    """Moved to a bigger disk: its manifests, settings and inputs name the old place; nothing reruns (a probe's
    rerun of a moved run retrained every stage, emptying the folders it had moved)."""
    path = setup_recipe(tmp_path)
    run(path)
    ran(tmp_path)
    (tmp_path / "run").rename(tmp_path / "moved")
    moved = ["--set", f"run_dir={tmp_path / 'moved'}"]
    out = run(path, "--dry-run", *moved)
    assert out.count("up to date") == 3, out
    run(path, *moved)
    assert ran(tmp_path) == []
    # and a change there reruns as it would have here, with the moved stage's output as input
    run(path, *moved, "--set", "stages.second.run=echo second >> " + str(tmp_path / "log") + "; cp ../first/out.txt .")
    assert ran(tmp_path) == ["second", "third"]
    second = json.loads((tmp_path / "moved" / "second" / "manifest.json").read_text())
    first = json.loads((tmp_path / "moved" / "first" / "manifest.json").read_text())
    assert second["inputs"] == {} and second["upstream"] == {"first": first["fingerprint"]}

LINKED = """\
name: linked
run_dir: {run}
stages:
  - name: fetch
    kind: command
    run: echo fetch >> {log}; ln -sfn "$SNAP" snap
    env: {{SNAP: {snapshot}}}
    outputs: [snap]
  - name: use
    kind: command
    inputs: ["${{stages.fetch.dir}}/snap"]
    run: echo use >> {log}; cat ../fetch/snap/data.txt > out.txt
    outputs: [out.txt]
"""


def test_a_stage_reading_another_stages_link_out_of_the_run_follows_that_stage(tmp_path):
    """A download's outputs link into the hub cache: reading one, a stage still depends on the download (it lost the
    dependency once the link existed, reran as "input changed" on the next run, and stayed up to date when the
    download reran for a new revision); files added to another stage's folder (`wandb sync`'s marker) rerun
    nothing."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.txt").write_text(f"snapshot {name}\n")
    path = tmp_path / "r.yaml"
    path.write_text(LINKED.format(run=tmp_path / "run", log=tmp_path / "log", snapshot=tmp_path / "a"))
    run(path)
    assert ran(tmp_path) == ["fetch", "use"]
    assert run(path, "--dry-run").count("up to date") == 2
    (tmp_path / "run" / "fetch" / "run-1.wandb.synced").touch()
    assert run(path, "--dry-run").count("up to date") == 2
    other = ["--set", "stages.fetch.env={SNAP: " + str(tmp_path / "b") + "}"]
    assert "upstream fetch reruns" in run(path, "--dry-run", *other)
    run(path, *other)
    assert ran(tmp_path) == ["fetch", "use"]
    assert (tmp_path / "run" / "use" / "out.txt").read_text() == "snapshot b\n"


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_from_only_force(tmp_path):
    path = setup_recipe(tmp_path)
    run(path)
    ran(tmp_path)
    run(path, "--from", "second")
    assert ran(tmp_path) == ["second", "third"]
    run(path, "--only", "second")  # up to date: left as a plain run leaves it
    assert ran(tmp_path) == []
    run(path, "--only", "second", "--force")
    assert ran(tmp_path) == ["second"]
    run(path, "--force")
    assert ran(tmp_path) == ["first", "second", "third"]


def test_a_stage_run_again_within_the_same_second_is_new_input_to_the_next(tmp_path, monkeypatch):
    """A stage's fingerprint was its settings, inputs and finish time to the second: one forced to run again within
    that second (a quick stage, a script) made the same, and the stages after it stayed up to date."""
    from swehero.recipe import engine

    monkeypatch.setattr(engine, "_now", lambda: "2026-12-07T00:00:00+00:00")  # every run within one second
    path = setup_recipe(tmp_path)
    run(path)
    ran(tmp_path)
    run(path, "--only", "second", "--force")
    assert ran(tmp_path) == ["second"]
    run(path)
    assert ran(tmp_path) == ["third"]


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_a_run_of_part_of_the_recipe_says_what_it_ran_not_that_the_recipe_is_complete(tmp_path):
    """`--only` and `--from` said `recipe NAME complete` with stages never run or out of date."""
    path = setup_recipe(tmp_path)
    complete = f"recipe engine complete: {tmp_path / 'run'}"
    left = "not run or out of date (`--dry-run` says why): " + str(tmp_path / "run")
    assert run(path, "--only", "first").splitlines()[-1] == f"recipe engine: ran first; not complete: second, third {left}"
    assert run(path).splitlines()[-1] == complete
    assert run(path, "--only", "third").splitlines()[-1] == complete  # up to date, as is every other stage
    changed = ["--set", "stages.second.run=cp ../first/out.txt ."]
    assert run(path, "--only", "second", *changed).splitlines()[-1] == \
        f"recipe engine: ran second; not complete: third {left}"
    changed = ["--set", f"stages.first.run=cat {tmp_path / 'data.txt'} > out.txt"]
    assert run(path, "--from", "second", *changed).splitlines()[-1] == \
        f"recipe engine: ran second, third; not complete: first, second, third {left}"
    assert run(path, *changed).splitlines()[-1] == complete


RELATIVE = """\
name: relative
run_dir: runs/relative
stages:
  - name: first
    kind: command
    run: echo made > out.txt
    outputs: [out.txt]
  - name: second
    kind: command
    run: cat ../first/out.txt > out.txt
    inputs: ["${stages.first.dir}/out.txt"]
    outputs: [out.txt]
"""


def test_a_command_reads_another_stages_output_from_its_own_folder_under_a_relative_run_dir(tmp_path, monkeypatch):
    """As docs/recipes.md says to write it: `../first/...` in the command (run in its stage folder), and
    `${stages.first.dir}/...` in `inputs` (read from the working directory)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(RELATIVE)
    run("r.yaml", "--only", "first")
    run("r.yaml", "--only", "second")
    folder = tmp_path / "runs" / "relative"
    assert (folder / "second" / "out.txt").read_text() == "made\n"
    first, second = (json.loads((folder / name / "manifest.json").read_text()) for name in ("first", "second"))
    assert second["upstream"] == {"first": first["fingerprint"]}  # the input made `first` a need of `second`


@pytest.mark.parametrize("option", ["--only", "--from"])
def test_a_stage_option_naming_no_stage_is_a_usage_error_listing_the_stages(tmp_path, option):
    """As click refuses a bad option value: exit 2, the option and the recipe's stages named, nothing written."""
    path = setup_recipe(tmp_path)
    for dry_run in ([], ["--dry-run"]):
        result = CliRunner().invoke(main, ["recipe", "run", str(path), option, "nosuch", *dry_run])
        assert result.exit_code == 2, result.output
        assert f"Invalid value for '{option}': 'nosuch' is not a stage of {path} (stages: first, second, third)" \
            in result.output
    assert not (tmp_path / "run").exists() and ran(tmp_path) == []


def test_train_stage_naming_no_train_stage_is_a_usage_error(tmp_path):
    """`swehero train --stage` likewise, for a name of no stage and a stage of another kind, before the run is
    locked (which creates its folder)."""
    path = setup_recipe(tmp_path)
    for name, says in (("nosuch", f"'nosuch' is not a stage of {path} (stages: first, second, third)"),
                       ("first", f"stage 'first' of {path} is a command stage, not a train one (train stages: none)")):
        result = CliRunner().invoke(main, ["train", str(path), "--stage", name])
        assert result.exit_code == 2 and f"Invalid value for '--stage': {says}" in result.output, result.output
    assert not (tmp_path / "run").exists() and ran(tmp_path) == []


def test_only_refuses_when_needs_incomplete(tmp_path):
    path = setup_recipe(tmp_path)
    result = CliRunner().invoke(main, ["recipe", "run", str(path), "--only", "third"])
    assert result.exit_code != 0 and "needs second, which has not completed" in result.output
    assert ran(tmp_path) == []


def test_failed_stage_is_recorded_and_redone(tmp_path):
    path = setup_recipe(tmp_path)
    result = CliRunner().invoke(main, ["recipe", "run", str(path), "--set", "stages.second.run=exit 3"])
    assert result.exit_code != 0
    m = manifest(tmp_path, "second")
    assert m["status"] == "failed" and "status 3" in m["error"]
    assert ran(tmp_path) == ["first"]
    out = run(path, "--dry-run")
    assert "last attempt failed" in out
    run(path)
    assert ran(tmp_path) == ["second", "third"]



def test_a_rerun_stopped_while_it_empties_the_folder_leaves_no_complete_stage(tmp_path, monkeypatch):
    """Ctrl-C (or a kill) while a rerun deletes the old outputs (a checkpoint folder half gone, still there): the
    stage is not taken as up to date afterwards, once the change that reran it is undone."""
    import shutil

    path = setup_recipe(tmp_path)
    run(path)
    ran(tmp_path)

    def interrupted(folder, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    result = CliRunner().invoke(main, ["recipe", "run", str(path), "--set", "stages.second.run=echo changed"])
    assert result.exit_code != 0, result.output
    monkeypatch.undo()
    line = next(line for line in run(path, "--dry-run").splitlines() if line.split()[1] == "second")
    assert line.split() == ["run", "second", "never", "ran"]


def test_a_stage_folder_moved_to_another_disk_and_linked_back_reruns_there(tmp_path):
    """A rerun empties what the link's target holds and keeps the link (rmtree refused the link, after the manifest
    had gone); a link to no folder (its disk not mounted) is refused in one line before anything is touched."""
    path = setup_recipe(tmp_path)
    run(path)
    ran(tmp_path)
    linked, disk = tmp_path / "run" / "first", tmp_path / "disk" / "first"
    disk.parent.mkdir()
    linked.rename(disk)
    linked.symlink_to(disk)
    assert run(path, "--dry-run").count("up to date") == 3
    (disk / "left.txt").write_text("the last attempt's\n")
    run(path, "--from", "first")
    assert ran(tmp_path) == ["first", "second", "third"]
    assert linked.is_symlink() and sorted(p.name for p in disk.iterdir()) == ["manifest.json", "out.txt"]
    assert manifest(tmp_path, "first")["status"] == "complete"

    disk.parent.rename(tmp_path / "unmounted")
    result = CliRunner().invoke(main, ["recipe", "run", str(path), "--from", "first"])
    assert result.exit_code == 1 and result.output.splitlines()[-1] == (
        f"Error: stage first: its folder {linked} is a link to {disk}, which is not a folder (a disk not mounted?): "
        "mount it, or remove the link"), result.output
    assert ran(tmp_path) == [] and (tmp_path / "unmounted" / "first" / "manifest.json").exists()


def test_a_linked_command_stage_reads_the_run_through_swehero_run_dir(tmp_path):
    """A command stage's folder linked to another disk runs there: its `..` is that disk's folder, and
    $SWEHERO_RUN_DIR (its folder's parent, resolved) was too; it is the run's folder now."""
    path = setup_recipe(tmp_path)
    reads_run_dir = f"stages.second.run=echo second >> {tmp_path / 'log'}; tr a-z A-Z < $SWEHERO_RUN_DIR/first/out.txt > out.txt"
    run(path, "--set", reads_run_dir)
    linked, disk = tmp_path / "run" / "second", tmp_path / "disk" / "second"
    disk.parent.mkdir()
    linked.rename(disk)
    linked.symlink_to(disk)
    run(path, "--from", "second", "--set", reads_run_dir)
    assert (disk / "out.txt").read_text() == "HELLO\n"


def test_a_failed_command_is_one_line_naming_its_status_not_a_traceback(tmp_path):
    path = setup_recipe(tmp_path)
    result = CliRunner().invoke(main, ["recipe", "run", str(path), "--set", "stages.second.run=exit 3"])
    assert result.exit_code == 1 and result.output.splitlines()[-1] == "Error: command exited with status 3: exit 3"


def test_only_says_when_a_stage_it_needs_is_out_of_date(tmp_path):
    path = setup_recipe(tmp_path)
    run(path)
    out = run(path, "--dry-run", "--only", "third", "--set", f"stages.first.run=cat {tmp_path / 'data.txt'} > out.txt")
    assert "up to date" in out and "its input is out of date: a plain run would first rerun second (upstream first " \
                                   "reruns)" in out
    assert "out of date" not in run(path, "--dry-run", "--only", "third")



def test_an_eval_stage_whose_verifier_cannot_select_stops_the_run_before_its_first_stage(tmp_path):
    path = setup_recipe(tmp_path)
    with open(path, "a") as f:
        f.write("  - {name: ev, kind: eval, tasks: toy, agent: {policy: gold}, "
                "verifier: {endpoint: 'http://127.0.0.1:9/v1'}}\n")
    result = CliRunner().invoke(main, ["recipe", "run", str(path)])
    assert result.exit_code == 1 and "Error: stage ev: verifier.endpoint needs verifier.serve.model too" in result.output
    assert ran(tmp_path) == []

@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_second_run_of_a_run_dir_in_use_is_refused_and_leaves_the_first_alone(tmp_path):
    """Another terminal, or a Slurm requeue while the first job still runs: the second run would take the stage the
    first is running for an interrupted one and empty its folder under it."""
    path = setup_recipe(tmp_path)
    gate = tmp_path / "gate"
    slow = f"echo second >> {tmp_path / 'log'}; while [ ! -e {gate} ]; do sleep 0.05; done; cp ../first/out.txt ."
    first = subprocess.Popen([sys.executable, "-m", "swehero", "recipe", "run", str(path), "--set",
                              f"stages.second.run={slow}"], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ((tmp_path / "log").exists() and "second" in (tmp_path / "log").read_text()):
            assert first.poll() is None and time.monotonic() < deadline, "stage never started"
            time.sleep(0.05)
        for command in (["recipe", "run", str(path), "--set", f"stages.second.run={slow}"],
                        ["train", str(path)]):
            second = CliRunner().invoke(main, command)
            assert second.exit_code == 1, second.output
            assert f"{tmp_path / 'run'}: another `recipe run` or `swehero train` is running" in second.output
        # a dry run beside it says so (it does not take the lock: a real run is never refused for a dry one)
        dry = CliRunner().invoke(main, ["recipe", "run", str(path), "--dry-run", "--set", f"stages.second.run={slow}"])
        assert dry.exit_code == 0 and dry.output.startswith(
            f"{tmp_path / 'run'}: another `recipe run` or `swehero train` is running now; a stage shown as "
            "interrupted while running is the one it runs\n"), dry.output
        assert manifest(tmp_path, "second")["status"] == "running"
        gate.touch()
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert ran(tmp_path) == ["first", "second", "third"]
    assert manifest(tmp_path, "second")["status"] == "complete"

RESUMABLE_RECIPE = """\
name: resume
run_dir: {run}
stages:
  - name: attempts
    kind: eval
    tasks: {tasks}
    repos: {repos}
    agent: {{policy: gold}}
    grading: {{grader: local}}
"""


@pytest.mark.slow
def test_a_resumable_stage_that_stopped_goes_on_unless_its_settings_changed(tmp_path):
    """An eval stage fails after attempting what it could (a repository is missing): its attempts are kept for the
    next run with the same settings, and never mixed into a run with other settings, `--from` or `--force`."""
    from swehero.rollout.toy import build_toy_tasks

    toy = build_toy_tasks(tmp_path / "toy").parent
    repos = tmp_path / "repos"
    repos.mkdir()
    names = [json.loads(line)["repo"].replace("/", "__") for line in (toy / "heldout.jsonl").read_text().splitlines()]
    for name in names[1:]:
        (repos / name).symlink_to(toy / "repos" / name)
    path = tmp_path / "r.yaml"
    path.write_text(RESUMABLE_RECIPE.format(run=tmp_path / "run", tasks=toy / "heldout.jsonl", repos=repos))
    result = CliRunner().invoke(main, ["recipe", "run", str(path)])
    assert result.exit_code == 1 and "Error: " in result.output and names[0].replace("__", "/") in result.output
    stage = tmp_path / "run" / "attempts"
    assert manifest(tmp_path, "attempts")["status"] == "failed"
    attempted = (stage / "predictions.jsonl").read_text()
    assert len(attempted.splitlines()) == 2
    (repos / names[0]).symlink_to(toy / "repos" / names[0])
    changed = run(path, "--dry-run", "--set", "stages.attempts.agent.loop.max_steps=7").splitlines()[0]
    assert changed.endswith("settings changed: agent.loop.max_steps: 100 -> 7") and "resuming" not in changed
    for fresh in ("--force", "--from"):
        line = run(path, "--dry-run", fresh, *(["attempts"] if fresh == "--from" else [])).splitlines()[0]
        assert "last attempt failed: MissingRepository" in line and "resuming" not in line
    assert "(resuming)" in run(path, "--dry-run", "--only", "attempts")
    assert "(resuming)" in run(path)
    assert (stage / "predictions.jsonl").read_text().startswith(attempted)  # the two kept, the third added
    assert len((stage / "predictions.jsonl").read_text().splitlines()) == 3


def test_a_stage_handed_to_slurm_resumes_unless_its_settings_changed(tmp_path, monkeypatch):
    """What `swehero train --launcher slurm` records: the next run goes on from the job's work (the real cluster's
    test: tests/test_slurm_jobs.py), never with other settings. Once the job was submitted, with no squeue here to
    ask whether it has ended, it refuses rather than training beside it; a script only written does not stop it."""
    from swehero.recipe.config import load_recipe
    from swehero.recipe.engine import hand_off, plan

    path = tmp_path / "r.yaml"
    (tmp_path / "tasks.jsonl").write_text("")  # never read: nothing runs
    path.write_text(RESUMABLE_RECIPE.format(run=tmp_path / "run", tasks=tmp_path / "tasks.jsonl", repos=tmp_path))
    recipe = load_recipe(str(path))
    (tmp_path / "run" / "attempts").mkdir(parents=True)
    (tmp_path / "run" / "attempts" / "left.txt").write_text("a fresh attempt starts in an empty folder")
    hand_off(recipe, plan(recipe)[0], lambda: {"slurm_script": "/jobs/x.sbatch", "slurm_job": None})
    assert not (tmp_path / "run" / "attempts" / "left.txt").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    line = run(path, "--dry-run").splitlines()[0]
    assert line.endswith("attempts  handed to Slurm (/jobs/x.sbatch) (resuming)")
    line = run(path, "--dry-run", "--set", "stages.attempts.agent.loop.max_steps=7").splitlines()[0]
    assert line.endswith("handed to Slurm (/jobs/x.sbatch); settings changed: agent.loop.max_steps: 100 -> 7")

    hand_off(recipe, plan(recipe)[0], lambda: {"slurm_script": "/jobs/x.sbatch", "slurm_job": "77"})
    result = CliRunner().invoke(main, ["recipe", "run", str(path)])
    assert result.exit_code == 1
    assert result.output == ("Error: squeue is not on PATH: cannot tell whether a Slurm job of /jobs/x.sbatch is "
                             "still queued or running; run this on a node of the cluster\n")


def test_a_train_stage_resumes_when_only_its_logging_gpus_or_checkpointing_changed(tmp_path, monkeypatch):
    """A probe changed log_every on an interrupted train stage: its folder, checkpoints and all, was emptied and
    training began again; another moved it to twice the GPUs (a run resumes at another data-parallel size). These
    settings change how a stage runs and what it reports, not what it makes."""
    from swehero.recipe.config import load_recipe
    from swehero.recipe.engine import hand_off, plan

    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nrun_dir: {tmp_path / 'run'}\nstages:\n"
                    f"  - {{name: sft, kind: train, data: {tmp_path / 'data'}, init: {tmp_path / 'model'}}}\n")
    recipe = load_recipe(str(path))
    hand_off(recipe, plan(recipe)[0], lambda: {"slurm_script": "/jobs/t.sbatch", "slurm_job": None})
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    for how in ("log_every=5", "eval_every=100", "tensorboard=false", "wandb_project=mine", "nodes=2",
                "gpus_per_node=4", "checkpoint.every=10", "recompute=full"):
        line = run(path, "--dry-run", "--set", f"stages.sft.{how}").splitlines()[-1]  # after any stop (2 nodes)
        assert line.endswith("handed to Slurm (/jobs/t.sbatch) (resuming)"), line
    # Megatron cannot reshard the optimizer state across tensor-parallel sizes
    for what, said in (("optimizer.lr=2e-5", "optimizer.lr: 1e-05 -> 2e-05"),
                       ("parallel.tensor=2", "parallel.tensor: 1 -> 2")):
        line = run(path, "--dry-run", "--set", "stages.sft.log_every=5", "--set", f"stages.sft.{what}")
        assert "settings changed: " in line and said in line and "resuming" not in line, line


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
@pytest.mark.parametrize("stage, how_run", [
    ("{name: ev, kind: eval, tasks: toy, limit: 1, grading: {grader: none}, agent: {policy: gold}}",
     ("workers=4", "serve.gpu_memory_utilization=0.5", "grading.harness.max_workers=8",
      "agent.openai.request_timeout=60")),
    ("{name: ev, kind: distill, tasks: toy, limit: 1, agent: {policy: gold}}",
     ("workers=2", "endpoints=[http://127.0.0.1:9/v1]", "serve.gpu_memory_utilization=0.5", "progress=false",
      "agent.openai.request_retries=9"))])
def test_a_rollout_stage_keeps_its_attempts_when_only_how_they_are_run_changed(tmp_path, stage, how_run):
    """Any setting emptied an eval stage's folder, and a distill stage's still did: fewer workers, or a lower
    gpu_memory_utilization after running out of memory, cost the finished attempts (thousands, on the paper's
    benchmarks). What the attempts are made of still starts it again; a price, only in an eval's report, runs it
    again resuming."""
    import json

    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nrun_dir: {tmp_path / 'run'}\nstages:\n  - {stage}\n")
    run(path)
    for how in how_run:
        assert "up to date" in run(path, "--dry-run", "--set", f"stages.ev.{how}"), how
    assert "settings changed: agent.openai.temperature" in run(path, "--dry-run", "--set",
                                                               "stages.ev.agent.openai.temperature=0.5")
    if "kind: eval" in stage:
        priced = run(path, "--dry-run", "--set", "stages.ev.price_prompt_per_mtok=0.5")
        assert "settings changed: price_prompt_per_mtok" in priced and "resuming" in priced, priced
    manifest = tmp_path / "run" / "ev" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "status": "running"}))
    line = run(path, "--dry-run", "--set", f"stages.ev.{how_run[0]}").splitlines()[-1]
    assert line.endswith("interrupted while running (resuming)"), line


def test_a_train_stage_whose_export_is_turned_on_or_off_resumes_complete_or_not(tmp_path, monkeypatch):
    """Turning export_hf on for a trained stage emptied its folder and trained it again from scratch: the export is
    made from the last checkpoint, so the stage goes on from its work (test_train_cpu exports without training)."""
    from swehero.jsonio import write_json_atomic
    from swehero.recipe.config import load_recipe
    from swehero.recipe.engine import MANIFEST, _attempt, hand_off, plan, stage_dir

    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nrun_dir: {tmp_path / 'run'}\nstages:\n"
                    f"  - {{name: sft, kind: train, data: {tmp_path / 'data'}, init: {tmp_path / 'model'}}}\n")
    recipe = load_recipe(str(path), ("stages.sft.export_hf=false",))
    hand_off(recipe, plan(recipe)[0], lambda: {"slurm_script": "/jobs/t.sbatch", "slurm_job": None})
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    line = run(path, "--dry-run").splitlines()[-1]
    assert line.endswith("handed to Slurm (/jobs/t.sbatch); settings changed: export_hf: False -> True (resuming)")
    sft = recipe.stage("sft")
    write_json_atomic(stage_dir(recipe, sft) / MANIFEST, {**_attempt(recipe, sft, "complete"),
                                                          "finished": "2026-12-07", "outputs": {}})
    assert run(path, "--dry-run", "--set", "stages.sft.export_hf=false").splitlines()[-1].endswith(
        "up to date (completed 2026-12-07)")
    line = run(path, "--dry-run").splitlines()[-1]
    assert line.endswith("settings changed: export_hf: False -> True (resuming)"), line
    line = run(path, "--dry-run", "--set", "stages.sft.optimizer.lr=2e-5").splitlines()[-1]
    assert "export_hf: False -> True" in line and "resuming" not in line, line


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_stage_killed_with_sigkill_is_redone(tmp_path):
    path = setup_recipe(tmp_path)
    gate = tmp_path / "gate"
    slow = f"echo second >> {tmp_path / 'log'}; while [ ! -e {gate} ]; do sleep 0.05; done; cp ../first/out.txt ."
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "swehero", "recipe", "run", str(path), "--set",
                             f"stages.second.run={slow}"], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ((tmp_path / "log").exists() and "second" in (tmp_path / "log").read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "stage never started"
            time.sleep(0.05)
        assert manifest(tmp_path, "second")["status"] == "running"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert ran(tmp_path) == ["first", "second"]
    assert manifest(tmp_path, "second")["status"] == "running"  # no complete manifest was left behind
    assert not (tmp_path / "run" / "second" / "out.txt").exists()
    gate.touch()
    out = run(path, "--dry-run", "--set", f"stages.second.run={slow}")
    assert "interrupted while running" in out and "first" in out.splitlines()[0] and "up to date" in out
    run(path, "--set", f"stages.second.run={slow}")
    assert ran(tmp_path) == ["second", "third"]
    assert manifest(tmp_path, "second")["status"] == "complete"


@pytest.mark.slow
def test_sigterm_ends_a_command_stage_with_its_children(tmp_path):
    """The shell's own children go too (`subprocess.run` would kill the shell alone), and the stage is not complete."""
    path = setup_recipe(tmp_path)
    pid_file = tmp_path / "sleeper.pid"
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n")
    slow = f"{sys.executable} {sleeper}; true"  # `; true`: bash cannot exec the sleeper, which stays its child
    proc = subprocess.Popen([sys.executable, "-m", "swehero", "recipe", "run", str(path), "--set",
                             f"stages.second.run={slow}"], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "stage never started"
            time.sleep(0.05)
        sleeper_pid = int(pid_file.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 5
        while _running(sleeper_pid):
            assert time.monotonic() < deadline, "the command's child outlived the stopped recipe"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
        if pid_file.exists() and pid_file.read_text() and _running(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert "last attempt failed: stopped by SIGTERM; settings changed: run:" in run(path, "--dry-run").splitlines()[1]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_bundled_recipes_are_found_where_pip_put_them(tmp_path, monkeypatch):
    """Debian's and NGC's system Python install data files under /usr/local (its `posix_local` scheme: `sysconfig`'s
    data folder) while `sys.prefix` is /usr, so the GPU image found no bundled recipe. Installing into this
    machine's real /usr/local is not for a test: the scheme's answer is what is stood in for."""
    import sysconfig

    from swehero.recipe.config import find_recipe

    (tmp_path / "share/swehero/recipes").mkdir(parents=True)
    (tmp_path / "share/swehero/recipes/only-installed.yaml").write_text("name: x\n")
    real = sysconfig.get_path
    monkeypatch.setattr(sysconfig, "get_path",
                        lambda name, *args, **kwargs: str(tmp_path) if name == "data" else real(name, *args, **kwargs))
    assert find_recipe("only-installed") == tmp_path / "share/swehero/recipes/only-installed.yaml"


def test_bundled_recipe_by_name_and_show(tmp_path):
    result = CliRunner().invoke(main, ["recipe", "show", "tiny-cpu", "--set", f"run_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert f"base: {tmp_path}/tiny/model" in result.output and "kind: tiny" in result.output
    result = CliRunner().invoke(main, ["recipe", "validate", "tiny-cpu"])
    assert result.exit_code == 0 and "ok" in result.output


def test_from_says_when_a_stage_before_it_is_out_of_date(tmp_path):
    """`--from second` after `first`'s input changed reran second on first's old output without a word (`--only`
    said so), and the next plain run trained it again."""
    path = setup_recipe(tmp_path)
    run(path)
    (tmp_path / "data.txt").write_text("changed since\n")
    out = run(path, "--dry-run", "--from", "second")
    assert f"forced; its input is out of date: a plain run would first rerun first (input changed: " \
           f"{tmp_path / 'data.txt'})" in out
    assert [line for line in out.splitlines() if "out of date" in line][0].split()[:2] == ["run", "second"]
    assert "out of date" not in run(path, "--dry-run", "--from", "first")
