"""Command-line options generated from a settings dataclass (`swehero.recipe.options`): names, types, defaults
and help from the fields, precedence of defaults < --config < options < --set, and errors that say where a bad
value came from."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Annotated, Literal

import click
import pytest
from click.testing import CliRunner

from swehero.recipe.options import field_docs, option_names, settings_options
from swehero.recipe.stage import InputPath, ModelRef, Range


@dataclass
class Grading:
    workers: int = 2
    """Graders at once."""
    mode: Literal["local", "docker"] = "local"
    """Where the tests run."""


@dataclass(kw_only=True)
class Base:
    seed: int = 1
    """Seed from the base class."""
    ratio: float = 0.5
    """Share of the base class."""


@dataclass(kw_only=True)
class Demo(Base):
    source: InputPath
    """What to read."""
    model: ModelRef | None = None
    """A folder or a hub id."""
    workers: int = 4
    """Workers at once."""
    ratio: float = 0.75
    """Share, redefined by the subclass."""
    name: str = "demo"
    """A name."""
    flag: bool = False
    """Turn it on."""
    mode: Literal["fast", "slow"] = "fast"
    """How."""
    tags: list[str] = field(default_factory=list)
    """Labels."""
    counts: list[int] = field(default_factory=list)
    """Numbers."""
    limit: int | None = None
    """At most this many; none: no limit."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra variables."""
    grading: Grading = field(default_factory=lambda: Grading(workers=3))
    """How to grade."""
    kind: str = "demo"
    """Set by the command."""


@click.command()
@settings_options(Demo, positional=("source",), required=("name",), defaults={"seed": 9}, fixed={"kind": "fixed"})
@click.option("--out", default="o", help="Not a setting.")
def demo(settings: Demo, out: str) -> None:
    """Print the settings."""
    click.echo(json.dumps({**dataclasses.asdict(settings), "out": out}))


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(demo, list(args))


def parsed(*args: str) -> dict:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def problems(*args: str) -> list[str]:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    *lines, summary = result.output.strip().splitlines()
    assert summary == f"settings invalid: {len(lines)} problem(s); nothing was run"
    return lines


def test_names_are_the_shortest_unique_suffix():
    paths = [("workers",), ("grading", "workers"), ("grading", "mode"), ("a", "b", "c"), ("x", "b", "c"), ("y", "c")]
    assert option_names(paths) == {
        ("workers",): "workers", ("grading", "workers"): "grading-workers", ("grading", "mode"): "mode",
        ("a", "b", "c"): "a-b-c", ("x", "b", "c"): "x-b-c", ("y", "c"): "y-c",
    }
    assert option_names([("max_steps",), ("agent", "max_steps")])[("agent", "max_steps")] == "agent-max-steps"
    with pytest.raises(ValueError, match="a-b"):
        option_names([("a_b",), ("a", "b"), ("z", "b")])


def test_field_docs_read_the_class_source_and_inherit():
    docs = field_docs(Demo)
    assert docs["seed"] == "Seed from the base class." and docs["ratio"] == "Share, redefined by the subclass."
    assert docs["grading"] == "How to grade." and field_docs(Grading)["mode"] == "Where the tests run."


def test_defaults(tmp_path):
    got = parsed(str(tmp_path), "--name", "n")
    assert got == {
        "seed": 9, "ratio": 0.75, "source": str(tmp_path), "model": None, "workers": 4, "name": "n", "flag": False,
        "mode": "fast", "tags": [], "counts": [], "limit": None, "env": {}, "grading": {"workers": 3, "mode": "local"},
        "kind": "fixed", "out": "o",
    }


def test_every_type(tmp_path):
    got = parsed(str(tmp_path), "--name", "n", "--seed", "3", "--ratio", "1e-3", "--workers", "8", "--flag",
                 "--mode", "slow", "--tags", "a,b", "--tags", "c", "--counts", "1", "--counts", "2", "--limit", "5",
                 "--grading-workers", "6", "--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--out", "x")
    assert (got["seed"], got["ratio"], got["workers"], got["flag"], got["mode"]) == (3, 1e-3, 8, True, "slow")
    assert (got["tags"], got["counts"], got["limit"]) == (["a", "b", "c"], [1, 2], 5)
    assert got["grading"] == {"workers": 6, "mode": "local"} and got["out"] == "x"
    assert got["model"] == "Qwen/Qwen2.5-Coder-7B-Instruct"  # a hub id needs no local folder
    assert parsed(str(tmp_path), "--name", "n", "--flag", "--no-flag")["flag"] is False
    assert parsed(str(tmp_path), "--name", "n", "--model", str(tmp_path))["model"] == str(tmp_path)
    # Dicts are no option, but --set reaches them (and anything else), the value read as YAML.
    assert "--env" not in invoke("--help").output
    got = parsed(str(tmp_path), "--name", "n", "--set", "env.A=x", "--set", "limit=null", "--limit", "3",
                 "--set", "tags=[p, q]")
    assert (got["env"], got["limit"], got["tags"]) == ({"A": "x"}, None, ["p", "q"])


def test_precedence_defaults_config_options_set(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text("source: .\nname: from-config\nworkers: 5\nseed: 11\ngrading:\n  mode: docker\n")
    got = parsed("--config", str(config))
    # The config beats the dataclass's and the command's defaults; a section merges with its default key by key.
    assert (got["name"], got["workers"], got["seed"], got["source"]) == ("from-config", 5, 11, ".")
    assert got["grading"] == {"workers": 3, "mode": "docker"}
    # Options beat the config, but only those given: an option's default never overrides the config.
    got = parsed("--config", str(config), "--workers", "6", str(tmp_path))
    assert (got["workers"], got["name"], got["seed"], got["source"]) == (6, "from-config", 11, str(tmp_path))
    # --set beats everything, whatever its place on the line.
    got = parsed("--set", "workers=7", "--config", str(config), "--workers", "6", "--set", "grading.workers=1")
    assert (got["workers"], got["grading"]) == (7, {"workers": 1, "mode": "docker"})


def test_errors_say_where_the_value_came_from(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text("source: .\nname: n\ngrading:\n  workers: many\n  modes: docker\n")
    assert problems("--config", str(config)) == [
        f"{config}:4: grading.workers: expected int, got str 'many'",
        f"{config}:5: grading.modes: unknown field; did you mean 'mode'?",
    ]
    assert problems(str(tmp_path), "--name", "n", "--workers", "4x", "--mode", "quick", "--counts", "1,2") == [
        "--workers: workers: expected int, got str '4x'",
        "--mode: mode: must be one of ['fast', 'slow'], got 'quick'",
        "--counts: counts[0]: expected int, got str '1,2'",
    ]
    assert problems(str(tmp_path), "--name", "n", "--set", "ratio=high", "--set", "kind=other") == [
        "--set: kind: set by the command",
        "--set: ratio: expected float, got str 'high'",
    ]
    assert problems() == ["--name: name: missing required field", "SOURCE: source: missing required field"]
    assert problems(str(tmp_path / "absent"), "--name", "n", "--model", "no/such/folder") == [
        f"SOURCE: source: input not found: {tmp_path / 'absent'}",
        "--model: model: input not found: no/such/folder",
    ]
    assert problems(str(tmp_path), "--name", "n", "--set", "workers") == [
        "--set workers: expected KEY=VALUE, e.g. stages.sft_zero.optimizer.lr=3e-5"]


def test_help_shows_types_defaults_and_docstrings():
    text = invoke("--help").output
    flat = " ".join(text.split())
    assert "Usage: demo [OPTIONS] SOURCE" in text and "SOURCE: What to read." in flat
    for expected in [
        "--seed INTEGER Seed from the base class. [default: 9]",  # the command's default
        "--ratio FLOAT Share, redefined by the subclass. [default: 0.75]",
        "--workers INTEGER Workers at once. [default: 4]",
        "--name TEXT A name. [required]",
        "--flag / --no-flag Turn it on. [default: no-flag]",
        "--mode [fast|slow] How. [default: fast]",
        "--tags TEXT,... Labels. (repeatable)",
        "--counts INTEGER Numbers. (repeatable)",
        "--limit INTEGER At most this many; none: no limit.",
        "--model PATH|HUB_ID A folder or a hub id.",
        "--grading-workers INTEGER Graders at once. [default: 3]",  # the section's default instance
        "--config FILE",
        "--set KEY=VALUE Set the setting at a dotted KEY to a YAML VALUE, e.g. --set grading.workers=...",
        "--out TEXT Not a setting.",
    ]:
        assert expected in flat, expected
    assert "--kind" not in text and "--env" not in text and "--source" not in text


def test_excluded_fields_and_sections_are_no_options_but_can_be_set(tmp_path):
    @click.command()
    @settings_options(Demo, positional=("source",), exclude=("grading", "workers"))
    def bare(settings: Demo) -> None:
        click.echo(json.dumps([settings.workers, settings.grading.workers]))

    assert "--grading-workers" not in CliRunner().invoke(bare, ["--help"]).output
    assert CliRunner().invoke(bare, [str(tmp_path), "--workers", "2"]).exit_code == 2  # no such option
    result = CliRunner().invoke(bare, [str(tmp_path), "--set", "workers=2", "--set", "grading.workers=5"])
    assert json.loads(result.output) == [2, 5]
    with pytest.raises(ValueError, match="no fields"):
        settings_options(Demo, exclude=("gradin",))



@dataclass
class Served:
    port: int = 8000
    """Where it listens."""


@dataclass
class TwoServers:
    policy: Served = field(default_factory=Served)
    """The policy's server."""
    judge: Served = field(default_factory=Served)
    """The judge's server."""


def test_an_excluded_section_does_not_rename_the_options_beside_it():
    """Names are the shortest unique suffix among the fields that get an option: with the judge's section excluded
    the policy's port is `--port`, as it was before the judge existed."""
    def ports(**options):
        @click.command()
        @settings_options(TwoServers, **options)
        def serve(settings: TwoServers) -> None:
            click.echo(json.dumps([settings.policy.port, settings.judge.port]))
        return serve

    assert "--policy-port" in CliRunner().invoke(ports(), ["--help"]).output
    result = CliRunner().invoke(ports(exclude=("judge",)), ["--port", "1", "--set", "judge.port=2"])
    assert json.loads(result.output) == [1, 2]


@dataclass
class Bounded:
    rows: Annotated[int, Range(min=1)] = 8
    """At least one."""
    share: Annotated[float, Range(gt=0, lt=1)] = 0.5
    """Strictly between 0 and 1."""
    limit: Annotated[int, Range(min=1)] | None = None
    """None, or at least one."""


@click.command()
@settings_options(Bounded)
def bounded(settings: Bounded) -> None:
    click.echo(json.dumps(dataclasses.asdict(settings)))


def test_ranges_are_checked_wherever_the_value_came_from(tmp_path):
    config = tmp_path / "bounded.yaml"
    config.write_text("share: 1\n")
    result = CliRunner().invoke(bounded, ["--rows", "0", "--limit", "-2", "--config", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.splitlines() == [
        "--rows: rows: must be >= 1, got 0",
        f"{config}:1: share: must be > 0 and < 1, got 1.0",
        "--limit: limit: must be >= 1, got -2",
        "settings invalid: 3 problem(s); nothing was run",
    ]
    result = CliRunner().invoke(bounded, ["--set", "share=0", "--rows", "many"])
    assert result.output.splitlines()[:2] == ["--rows: rows: expected int, got str 'many'",  # the type, not a range
                                              "--set: share: must be > 0 and < 1, got 0.0"]
    result = CliRunner().invoke(bounded, ["--rows", "1", "--share", "0.99", "--limit", "1"])
    assert json.loads(result.output) == {"rows": 1, "share": 0.99, "limit": 1}
    assert "--rows INTEGER" in CliRunner().invoke(bounded, ["--help"]).output


def test_verbatim_list_items_keep_their_commas(tmp_path):
    """vLLM's JSON-valued arguments (and pip's `pkg>=1,<2`) hold commas: split at them, a probe's
    `--speculative-config={...}` reached vLLM in two broken pieces."""
    from swehero.serve.server import ServeConfig

    got = []

    @click.command()
    @settings_options(ServeConfig, positional=("model",))
    def serve(settings: ServeConfig) -> None:
        got.append(settings)

    speculative = '--speculative-config={"method": "ngram", "num_speculative_tokens": 5}'
    result = CliRunner().invoke(serve, [str(tmp_path), "--extra-args", speculative, "--extra-args=--enforce-eager"])
    assert result.exit_code == 0, result.output
    assert got[0].extra_args == [speculative, "--enforce-eager"]


@click.command()
@settings_options(Demo, positional=("source",), required=("grading.mode",))
def graded(settings: Demo) -> None:
    click.echo(settings.grading.mode)


def test_a_required_field_is_given_only_by_its_own_path_or_a_mapping_that_holds_it(tmp_path):
    """A section given without the required key leaves it missing: `--set grading={}` or a config's
    `grading: {workers: 5}` once counted as giving `grading.mode`, which then silently took its default."""
    def run(*args: str) -> click.testing.Result:
        return CliRunner().invoke(graded, [str(tmp_path), *args])

    partial, whole = tmp_path / "partial.yaml", tmp_path / "whole.yaml"
    partial.write_text("grading:\n  workers: 5\n")
    whole.write_text("grading:\n  mode: docker\n")
    for args, where in [(["--config", str(partial)], "--grading-mode"), (["--set", "grading={}"], "--set"),
                        (["--set", "grading={workers: 1}"], "--set"),
                        (["--config", str(whole), "--set", "grading={workers: 1}"], "--set")]:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.splitlines()[0] == f"{where}: grading.mode: missing required field", args
    for args in (["--config", str(whole)], ["--grading-mode", "docker"], ["--set", "grading.mode=docker"],
                 ["--set", "grading={mode: docker}"], ["--config", str(partial), "--set", "grading={mode: docker}"]):
        result = run(*args)
        assert (result.exit_code, result.output) == (0, "docker\n"), (args, result.output)


def test_an_option_that_replaces_a_list_of_the_config_is_blamed_for_its_items(tmp_path):
    """The config's lines of the items it replaced would be blamed for the option's own values."""
    config = tmp_path / "demo.yaml"
    config.write_text("name: n\ncounts:\n  - 1\n  - 2\n")
    assert problems(str(tmp_path), "--config", str(config), "--counts", "x", "--counts", "3,4") == [
        "--counts: counts[0]: expected int, got str 'x'",
        "--counts: counts[1]: expected int, got str '3,4'",
    ]
    assert problems(str(tmp_path), "--config", str(config), "--set", "counts=[x]") == [
        "--set: counts[0]: expected int, got str 'x'"]


def test_a_config_file_resolves_environment_references_and_refuses_the_others(tmp_path, monkeypatch):
    """`${env:NAME}` and `${env:NAME,default}` (a whole value read as a YAML scalar) and `${recipe_dir}` (the config
    file's folder) resolve as in a recipe; a reference to a recipe's values has no meaning outside one."""
    monkeypatch.setenv("SWEHERO_TEST_WORKERS", "6")
    monkeypatch.delenv("SWEHERO_TEST_UNSET", raising=False)
    config = tmp_path / "demo.yaml"
    config.write_text("source: ${recipe_dir}\nname: ${env:SWEHERO_TEST_UNSET,me}\n"
                      "workers: ${env:SWEHERO_TEST_WORKERS}\nseed: ${env:SWEHERO_TEST_UNSET,7}\n"
                      "tags: ['x-${env:SWEHERO_TEST_WORKERS}']\n")
    got = parsed("--config", str(config))
    assert (got["source"], got["name"], got["workers"], got["seed"]) == (str(tmp_path), "me", 6, 7)
    assert got["tags"] == ["x-6"]
    config.write_text("source: ${stages.x.dir}/f\nname: ${stages.x.dir}\nworkers: ${env:SWEHERO_TEST_UNSET}\n"
                      "tags: [a, '${seed}/b']\nseed: ${env:SWEHERO_TEST_UNSET,2020-13-45}\n")
    assert problems("--config", str(config)) == [  # an input path that is no path is not reported missing
        f"{config}:1: source: ${{stages.x.dir}}: no recipe to refer to: a --config file resolves only "
        "${env:NAME}, ${env:NAME,default} and ${recipe_dir} (its folder)",
        f"{config}:2: name: ${{stages.x.dir}}: no recipe to refer to: a --config file resolves only "
        "${env:NAME}, ${env:NAME,default} and ${recipe_dir} (its folder)",
        f"{config}:3: workers: environment variable SWEHERO_TEST_UNSET is not set "
        "(use ${env:SWEHERO_TEST_UNSET,default} for a default)",
        f"{config}:4: tags[1]: ${{seed}}: no recipe to refer to: a --config file resolves only "
        "${env:NAME}, ${env:NAME,default} and ${recipe_dir} (its folder)",
        f"{config}:5: seed: ${{env:SWEHERO_TEST_UNSET,2020-13-45}}: cannot read '2020-13-45': month must be in 1..12",
    ]
