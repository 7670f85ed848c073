import json
import re
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from tests_paths import qwen

from swehero.data.cli import data
from swehero.data.trajectory import template_messages
from swehero.recipe.stage import ModelConfig, StageContext

FIXTURES = Path(__file__).parent / "data_fixtures"


def _ok(args):
    result = CliRunner().invoke(data, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_import_render_show_prepare(tmp_path, qwen_tokenizer):
    canon = tmp_path / "c.jsonl"
    _ok(["import", "--format", "nvidia", "--stage", "zero", str(FIXTURES / "nvidia.jsonl"), "--out", str(canon)])
    assert [json.loads(x)["stage"] for x in canon.read_text().splitlines()] == ["zero", "zero"]

    _ok(["render", "--tokenizer", str(qwen()), str(canon), "--out", str(tmp_path / "r.jsonl")])
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["astropy__astropy-12907_0", "django__django-11099_2"]
    assert all(
        len(r["input_ids"]) == len(r["loss_mask"]) and 0 < sum(r["loss_mask"]) < len(r["loss_mask"]) for r in rows
    )

    shown = _ok(["show", "--tokenizer", str(qwen()), str(canon), "--index", "1"]).stdout
    rec = json.loads(canon.read_text().splitlines()[1])
    text = qwen_tokenizer.apply_chat_template(template_messages(rec["messages"]), tools=rec["tools"], tokenize=False)
    assert click.unstyle(shown) == text + "\n"
    highlighted = re.findall(r"(?:\x1b\[[0-9;]*m)+(.*?)\x1b\[0m", shown, re.DOTALL)
    assert highlighted[0].startswith("<tool_call>") and highlighted[-1].endswith("</tool_call><|im_end|>")
    assert len(highlighted) == 2  # the two assistant turns, nothing else

    out = _ok(
        [
            "prepare",
            str(canon),
            "--tokenizer",
            str(qwen()),
            "--seq-length",
            "8192",
            "--out",
            str(tmp_path / "ds"),
            "--workers",
            "0",
            "--valid-fraction",
            "0",
        ]
    ).stdout
    assert json.loads(out)["trajectories"]["kept"] == 2
    assert (tmp_path / "ds" / "train_tokens.idx").exists()


@pytest.mark.slow
def test_stage_run_uses_recipe_tokenizer_and_seed(tmp_path):
    from swehero.data.importers import import_files
    from swehero.data.stage import Settings, run

    import_files([str(FIXTURES / "nebius.jsonl")], "nebius", tmp_path / "c.jsonl", max_reject_fraction=0.6)
    ctx = StageContext(
        name="prep", dir=tmp_path / "stage", seed=7, model=ModelConfig(base=str(qwen())), upstream={}, resume=False
    )
    ctx.dir.mkdir()
    outputs = run(Settings(inputs=[str(tmp_path / "c.jsonl")], seq_length=4096, workers=0), ctx)
    stats = json.loads(Path(outputs["stats"]).read_text())
    assert stats["config"]["seed"] == 7 and stats["trajectories"]["kept"] == 1
    assert (Path(outputs["dataset"]) / "train_tokens.bin").exists()


@pytest.mark.parametrize("tokenizer, problem", [("/no/such/tokenizer", "no such tokenizer folder"),
                                                (str(FIXTURES), "not a tokenizer folder (no tokenizer.json or")])
def test_a_bad_tokenizer_is_a_usage_error_naming_it(tokenizer, problem, tmp_path):
    """A missing folder, and a folder without a tokenizer, are usage errors (exit 2) about --tokenizer."""
    result = CliRunner().invoke(data, ["render", "--tokenizer", tokenizer, str(FIXTURES / "nvidia.jsonl"),
                                       "--out", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--tokenizer'" in result.output and f"{tokenizer}: {problem}" in result.output
    assert not (tmp_path / "r.jsonl").exists()


def test_every_command_that_tokenizes_names_a_bad_tokenizer_in_one_line(tiny_model_dir, tmp_path):
    """`data prepare` / `verifier` and `serve check` load the tokenizer as `render` does: a folder without one, or
    one without a chat template, is one `Error:` line naming it (transformers' own message names neither), and
    nothing is left behind."""
    from swehero.cli import main

    untemplated = tmp_path / "untemplated"
    untemplated.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_model_dir / name, untemplated / name)
    trajectories = str(FIXTURES / "nvidia.jsonl")
    for tokenizer, problem in ((FIXTURES, "not a tokenizer folder"), (untemplated, "the tokenizer has no chat template")):
        out = tmp_path / "out"
        for args in (["data", "prepare", trajectories, "--tokenizer", str(tokenizer), "--seq-length", "64"],
                     ["data", "verifier", trajectories, "--tokenizer", str(tokenizer), "--seq-length", "64"],
                     ["serve", "check", trajectories, "--tokenizer", str(tokenizer)]):
            result = CliRunner().invoke(main, args + (["--out", str(out)] if args[0] == "data" else []))
            assert result.exit_code == 1 and result.output.startswith(f"Error: {tokenizer}: {problem}"), args
            assert "Traceback" not in result.output and not list(tmp_path.glob("out*")), args


def test_a_folder_without_data_files_is_an_error_not_an_empty_dataset(tmp_path):
    from swehero.cli import main

    empty = tmp_path / "downloads"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "README.md").write_text("not data")
    for args in (["import", "--format", "nvidia", "--stage", "zero", str(empty), "--out", str(tmp_path / "o.jsonl")],
                 ["prepare", str(empty), "--tokenizer", str(qwen()), "--seq-length", "64", "--out", str(tmp_path / "d")]):
        result = CliRunner().invoke(main, ["data", *args])
        assert result.exit_code == 1, result.output
        assert f"Error: {empty}: a folder without data files (.jsonl, .json, .traj, .parquet)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]


def test_too_many_rejects_are_one_line_and_leave_only_the_rejects(tmp_path):
    from swehero.cli import main

    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(main, ["data", "import", "--format", "sharegpt", str(FIXTURES / "sharegpt.jsonl"),
                                       "--max-reject-fraction", "0.1", "--out", str(out)])
    assert result.exit_code == 1 and result.output.startswith("Error: 1 of "), result.output
    assert f"details in {tmp_path / 'o.rejects.jsonl'}" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.rejects.jsonl"]  # no o.jsonl, no o.jsonl.partial
