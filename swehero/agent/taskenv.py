"""Task environments without Docker: one virtual environment per repository, version and install recipe, cached.

What Docker images give SWE-bench (the project's Python, its dependencies, pytest, the checkout installed), built
here as plain virtual environments with the `venv` module and pip, for the local grader and for the bubblewrap
sandbox in execution mode:

- **The recipe** (`InstallSpec`): the Python version, the command that installs a checkout, the extra (test-only)
  packages and the test runner. It comes from the user's `EnvSettings`, else from the task row's `install_config`
  (SWE-rebench's column, SWE-bench's spec keys `python`, `install`, `pip_packages`), else from defaults: the
  interpreter running swehero and `python -m pip install -e .` when the checkout is a Python project.
- **The environment** (`ensure_env`): built once per (repository, version, recipe, interpreter) under the cache
  folder and reused by every instance, process and run: a venv holding the test runner, the extra packages and the
  project's dependencies (the install command is run once on a checkout of the first task's base commit, then the
  project itself is uninstalled, so that no stale copy shadows the checkout under test). Builds of the same
  environment are serialised by a file lock; a failed build is remembered with its log and reported at once to
  later requests until `retry_failed`. A build interrupted (a stopped run, an attempt's time limit) is no failed
  one: its partial folder is removed and nothing remembered, so the next request builds it afresh. The rollout's
  attempts do not count this wait against their time limit (see `swehero.rollout.attempt`).
- **The layer** (`make_layer`): a per-checkout venv over the shared environment (its site-packages added by a
  `.pth` file, its console scripts pointing at the layer's interpreter), into which each checkout is installed.
  The shared environment is never written after its build, so graders and sandboxes of the same repository run
  side by side, and inside the sandbox it is mounted read-only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swehero.errors import InputError
from swehero.jsonio import exclusive, write_json_atomic
from swehero.recipe.stage import Verbatim

INSTALL_CONFIG = "install_config"
"""Task column with the install recipe: a mapping (or its JSON string) with SWE-bench's spec keys `python`,
`install` and `pip_packages`; other keys (`pre_install`, `packages`, `test_cmd`, ...) are not used."""
READY = "swehero-env.json"
"""Written last into a built environment: what it holds (`TaskEnv` fields)."""
_LAYER_PTH = "_swehero_env.pth"


class EnvError(RuntimeError):
    """A task environment could not be built, or a checkout not installed into it: the infrastructure's failure,
    not the patch's. The message says why and where the log is."""


@dataclass
class EnvSettings:
    """How task environments are made (the local grader, and the local sandbox in execution mode)."""

    python: str = ""
    """Python for every task: a version (`3.11`, found as `python3.11` on PATH) or an interpreter's path; empty:
    the task's `install_config.python`, else the interpreter running swehero."""
    install: str | None = None
    """Shell command that installs a checkout, run in it with the environment active (`python -m pip install -e
    .[test]`; editable, so that the agent's `python` sees its edits); None: the task's `install_config.install`,
    else `python -m pip install -e .` when the checkout is a Python project (pyproject.toml with a build system or
    project table, or setup.py); empty string: install nothing."""
    pip_packages: list[Verbatim] = field(default_factory=list)
    """Requirements installed into every environment after the task's own `pip_packages` (test-only
    dependencies): names with versions, wheel files or folders, anything `pip install` takes."""
    runner: str = "pytest"
    """Requirement of the test runner, installed unless the task's packages name it. When the environment's Python
    is this one's, the runner and pip are the versions installed here, installed from them offline."""
    cache: str = ""
    """Folder of built environments, shared by runs and processes; empty: `$XDG_CACHE_HOME/swehero/envs`
    (`~/.cache/swehero/envs`)."""
    build_timeout_s: float = 1800.0
    """Seconds one environment build (venv, packages, the project's dependencies) may take."""
    install_timeout_s: float = 600.0
    """Seconds installing one checkout into its layer may take."""
    retry_failed: bool = False
    """Build again environments whose earlier build failed; otherwise that failure and its log are reported at
    once."""


@dataclass
class InstallSpec:
    """How one repository at one version is installed (SWE-bench's spec keys), as `install_spec` resolved it."""

    python: str = ""
    """Version or interpreter path; empty: the interpreter running swehero."""
    install: str | None = None
    """Install command; None: decided per checkout (`default_install`)."""
    pip_packages: list[str] = field(default_factory=list)
    """The task's packages, then the settings'."""
    runner: str = "pytest"
    """The test runner's requirement."""


@dataclass(frozen=True)
class Interpreter:
    """A base (non-venv) Python installation."""

    executable: str
    version: str
    """`major.minor`."""
    full_version: str
    prefix: str
    """`sys.prefix`: the folder the sandbox must show (read-only) for the interpreter to run."""


@dataclass(frozen=True)
class TaskEnv:
    """A built environment; what `READY` holds."""

    path: str
    interpreter: Interpreter
    install: str | None
    """The install command (None: `default_install` per checkout)."""
    install_timeout_s: float = 600.0

    @property
    def site_packages(self) -> str:
        return f"{self.path}/lib/python{self.interpreter.version}/site-packages"

    @property
    def readonly_paths(self) -> tuple[str, ...]:
        """What a sandbox must show for the environment to work: itself and its interpreter's installation."""
        return (self.path, self.interpreter.prefix)

    def install_command(self, checkout: Path) -> str:
        """The command that installs `checkout` (empty: nothing to install)."""
        return default_install(checkout) if self.install is None else self.install

    @classmethod
    def load(cls, path: Path) -> TaskEnv:
        data = json.loads((path / READY).read_text())
        return cls(path=data["path"], interpreter=Interpreter(**data["interpreter"]), install=data["install"],
                   install_timeout_s=data["install_timeout_s"])


def install_spec(task: dict, settings: EnvSettings) -> InstallSpec:
    """The recipe for `task`: the user's settings, else the task's `install_config`, else defaults."""
    given = task.get(INSTALL_CONFIG) or {}
    if isinstance(given, str):
        try:
            given = json.loads(given) if given.strip() else {}
        except json.JSONDecodeError as e:
            raise InputError(f"task {task.get('instance_id', '?')}: {INSTALL_CONFIG} is not JSON ({e})") from None
    if not isinstance(given, dict):
        raise InputError(f"task {task.get('instance_id', '?')}: {INSTALL_CONFIG} must be a mapping, got {given!r:.80}")
    packages = given.get("pip_packages") or []
    if isinstance(packages, str):  # SWE-bench's older specs spell the list as one string
        packages = packages.split()
    install = settings.install if settings.install is not None else given.get("install")
    return InstallSpec(python=settings.python or str(given.get("python") or ""), install=install,
                       pip_packages=[*map(str, packages), *settings.pip_packages], runner=settings.runner)


def default_install(checkout: Path) -> str:
    """`python -m pip install -e .` for a Python project, else nothing (a folder of modules run from its root)."""
    return _default_install(lambda name: (checkout / name).read_text(errors="replace")
                            if (checkout / name).is_file() else None)


def _default_install(read) -> str:
    """`default_install` of the tree whose files `read(name)` returns (None: absent)."""
    import tomllib

    pyproject = read("pyproject.toml")
    if pyproject is not None:
        try:
            tables = tomllib.loads(pyproject)
        except tomllib.TOMLDecodeError:
            tables = {"build-system": {}}  # let pip report what is wrong with it
        if "build-system" in tables or "project" in tables:
            return "python -m pip install -e ."
    if read("setup.py") is not None:
        return "python -m pip install -e ."
    return ""


def _install_at(source_repo: Path, commit: str) -> str:
    """`default_install` of `source_repo` at `commit`, read from git's objects (no checkout)."""
    def read(name: str) -> str | None:
        done = subprocess.run(["git", "show", f"{commit}:{name}"], cwd=source_repo, capture_output=True)
        return done.stdout.decode(errors="replace") if done.returncode == 0 else None

    return _default_install(read)


def find_python(want: str) -> Interpreter:
    """The base interpreter for `want`: '' (the one running swehero), a version ('3.9': `python3.9` on PATH, else
    one installed by pyenv or uv) or a path."""
    if not want:
        candidates = [getattr(sys, "_base_executable", "") or sys.executable]
    elif re.fullmatch(r"\d+\.\d+", want):
        home = Path.home()
        candidates = [c for c in [shutil.which(f"python{want}"),  # pyenv's shims answer only for active versions
                                  *sorted(map(str, home.glob(f".pyenv/versions/{want}.*/bin/python{want}"))),
                                  *sorted(map(str, home.glob(f".local/share/uv/python/cpython-{want}.*/bin/"
                                                             f"python{want}")))] if c]
        if not candidates:
            raise EnvError(f"no Python {want} on this machine (not on PATH, nor installed by pyenv or uv): install "
                           f"it (`uv python install {want}`, pyenv, apt) or set the environment's python to an "
                           "interpreter's path")
    else:
        candidates = [want]
    probe = ("import json, sys; print(json.dumps([getattr(sys, '_base_executable', '') or sys.executable, "
             "sys.version_info[:3], sys.base_prefix]))")
    errors = []
    for candidate in candidates:
        try:
            done = subprocess.run([candidate, "-c", probe], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            errors.append(f"{candidate}: {e}")
            continue
        try:
            exe, version, prefix = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            errors.append(f"{candidate}: {(done.stderr.strip() or 'no answer')[-300:]}")
            continue
        short = f"{version[0]}.{version[1]}"
        if want and re.fullmatch(r"\d+\.\d+", want) and short != want:
            errors.append(f"{candidate} is Python {short}")
            continue
        return Interpreter(executable=exe, version=short, full_version=".".join(map(str, version)), prefix=prefix)
    raise EnvError(f"no usable Python {want or 'interpreter'}: {'; '.join(errors)}")


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "swehero" / "envs"


def env_key(task: dict, spec: InstallSpec, interpreter: Interpreter, project: bool) -> str:
    """`owner__name__version-<hash>` (hash of the recipe, the interpreter and the runner it pins), one folder per
    environment; `python3.X-<hash>` when there is no project to install (`project` false), since then nothing in
    the environment depends on the repository and every such task shares it."""
    pinned = ""
    if spec.runner and _req_name(spec.runner) == spec.runner.strip().lower():
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pinned = importlib.metadata.version(spec.runner)
    recipe = json.dumps([asdict(spec), interpreter.executable, interpreter.full_version, pinned], sort_keys=True)
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    if not project:
        return f"python{interpreter.version}-{digest}"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{task['repo'].replace('/', '__')}__{task.get('version') or '0'}")
    return f"{name}-{digest}"


def ensure_env(task: dict, settings: EnvSettings, source_repo: Path) -> TaskEnv:
    """The environment of `task` (a SWE-bench row: `repo`, `version`, `base_commit`, optional `install_config`),
    built now if it is not in the cache. Raises `EnvError` when it cannot be built, now or before."""
    spec = install_spec(task, settings)
    interpreter = find_python(spec.python)
    cache = Path(settings.cache) if settings.cache else default_cache()
    install = spec.install if spec.install is not None else _install_at(source_repo, task["base_commit"])
    key = env_key(task, spec, interpreter, project=bool(install))
    path = cache / key
    if (path / READY).exists():
        return TaskEnv.load(path)
    cache.mkdir(parents=True, exist_ok=True)
    failed, log = cache / f"{key}.failed.json", cache / f"{key}.log"
    with exclusive(cache / f"{key}.lock"):
        if (path / READY).exists():  # another process built it while this one waited
            return TaskEnv.load(path)
        if failed.exists() and not settings.retry_failed:
            raise EnvError(json.loads(failed.read_text())["error"] + " (an earlier build; set retry_failed, or "
                           f"delete {failed}, to try again)")
        shutil.rmtree(path, ignore_errors=True)  # a build that died midway
        env = TaskEnv(path=str(path), interpreter=interpreter, install=spec.install,
                      install_timeout_s=settings.install_timeout_s)
        try:
            with open(log, "w") as out:
                _build(env, spec, install, task, source_repo, out, time.monotonic() + settings.build_timeout_s)
        except (subprocess.SubprocessError, OSError, EnvError) as e:
            shutil.rmtree(path, ignore_errors=True)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:]) if log.exists() else ""
            error = (f"building the environment of {task['repo']} {task.get('version', '')} failed: {e}"
                     + (f"; the log ends:\n{tail}\n" if tail else "") + f"; log: {log}")
            write_json_atomic(failed, {"error": error, "log": str(log)})
            raise EnvError(error) from None
        except BaseException as e:  # interrupted, not failed (a stop, Ctrl-C, an attempt's time limit): no marker
            shutil.rmtree(path, ignore_errors=True)  # the next request builds it afresh
            with contextlib.suppress(OSError), open(log, "a") as out:
                out.write(f"interrupted ({type(e).__name__}): the partial environment was removed\n")
            raise
        failed.unlink(missing_ok=True)
        write_json_atomic(path / READY, asdict(env), indent=1)
    return env


def _build(env: TaskEnv, spec: InstallSpec, install: str, task: dict, source_repo: Path, log, deadline: float
           ) -> None:
    def run(cmd: list[str], cwd: Path | None = None, **kw) -> None:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        left = deadline - time.monotonic()
        if left <= 0:
            raise EnvError("the build timed out")
        done = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, timeout=left, **kw)
        if done.returncode != 0:
            raise EnvError(f"`{shlex.join(cmd)}` exited with {done.returncode}")

    python = f"{env.path}/bin/python"
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    runner = spec.runner if spec.runner and not any(_req_name(p) == _req_name(spec.runner)
                                                    for p in spec.pip_packages) else ""
    local = _local_wheels(["pip", *([runner] if runner else [])], Path(env.path).parent / "wheels") \
        if env.interpreter.version == _this_version() else None
    if local:  # pip and the runner as installed here, offline; pip run from its own wheel, as ensurepip does
        folder, pins = local
        run([env.interpreter.executable, "-m", "venv", "--without-pip", env.path])
        run([python, f"{next(folder.glob('pip-*.whl'))}/pip", "install", "--disable-pip-version-check", "--no-index",
             "--find-links", str(folder), *pins])
    else:
        run([env.interpreter.executable, "-m", "venv", env.path])
        if runner:
            run([*pip, runner])
    if spec.pip_packages:
        run([*pip, *spec.pip_packages])
    if not install:
        return
    # the project's dependencies, from a checkout of this first task; the project itself is installed per checkout
    with tempfile.TemporaryDirectory(prefix="build-", dir=Path(env.path).parent) as tmp:
        checkout = Path(tmp) / "repo"
        run(["git", "clone", "-q", "--no-checkout", str(source_repo), str(checkout)])
        run(["git", "checkout", "-q", "--detach", task["base_commit"]], cwd=checkout)
        run(["bash", "-c", install], cwd=checkout, env=activated(env.path))
        for name in _installed_from(Path(env.site_packages), checkout):
            run([python, "-m", "pip", "uninstall", "-y", name])


def activated(venv: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the venv at `venv` active, as `activate` would make it,
    and without Python variables of the calling process that would leak into it."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONNOUSERSITE", "PYTHONSAFEPATH",
                        "__PYVENV_LAUNCHER__", "CONDA_PREFIX", "CONDA_DEFAULT_ENV"}}
    env["VIRTUAL_ENV"] = venv
    env["PATH"] = f"{venv}/bin:{env.get('PATH') or '/usr/bin:/bin'}"
    return env


def _installed_from(site_packages: Path, checkout: Path) -> list[str]:
    """Distributions in `site_packages` installed from `checkout` (PEP 610 `direct_url.json`, or an `.egg-link`
    of `setup.py develop`)."""
    names = []
    for info in site_packages.glob("*.dist-info"):
        direct = info / "direct_url.json"
        if direct.exists() and json.loads(direct.read_text()).get("url", "").startswith(checkout.as_uri()):
            names.append(info.name.removesuffix(".dist-info").rsplit("-", 1)[0])
    for link in site_packages.glob("*.egg-link"):
        if link.read_text().split("\n", 1)[0].strip().startswith(str(checkout)):
            names.append(link.stem)
    return names


def make_layer(env: TaskEnv, host: Path, visible: str | None = None) -> None:
    """A virtual environment at `host` (used at the path `visible`, default `host`) over `env`: the same
    interpreter, `env`'s packages behind its own, and `env`'s console scripts (pytest, ...) running the layer's
    interpreter. Written by hand rather than with `venv`, which writes the folder's own path into its files and
    installs pip; Python needs only `pyvenv.cfg` and the interpreter's links."""
    visible = visible or str(host)
    interp = env.interpreter
    site = host / "lib" / f"python{interp.version}" / "site-packages"
    site.mkdir(parents=True)
    (host / "pyvenv.cfg").write_text(f"home = {Path(interp.executable).parent}\ninclude-system-site-packages = false"
                                     f"\nversion = {interp.full_version}\n")
    # `addsitedir`, not a bare path: the environment's own .pth files (editable installs, setuptools) must run too
    (site / _LAYER_PTH).write_text(f"import site; site.addsitedir({env.site_packages!r})\n")
    bin_dir = host / "bin"
    bin_dir.mkdir()
    for name in ("python", "python3", f"python{interp.version}"):
        (bin_dir / name).symlink_to(interp.executable)
    old, new = f"{env.path}/bin/python", f"{visible}/bin/python"
    for script in sorted(Path(env.path, "bin").iterdir()):
        if script.name.startswith(("python", "activate", "Activate")) or not script.is_file():
            continue
        head = script.read_bytes()
        if head.startswith(b"#!") and old.encode() in head[:1024]:
            (bin_dir / script.name).write_bytes(head.replace(old.encode(), new.encode()))
            (bin_dir / script.name).chmod(0o755)


def _req_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else requirement


def _this_version() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _local_wheels(requirements: list[str], wheels: Path) -> tuple[Path, list[str]] | None:
    """(folder of wheels, pinned requirements) for `requirements` and everything they need, when this interpreter
    has them installed as pure-Python distributions in versions that satisfy them; None otherwise (pip then uses
    the index). pip cannot make a wheel from an installed distribution, so they are repacked here: the files a
    distribution's RECORD lists, with a fresh RECORD."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        tops = [Requirement(r) for r in requirements]
    except InvalidRequirement:
        return None
    todo, found = list(tops), {}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            return None
        wheel_meta = dist.read_text("WHEEL") or ""
        if not req.specifier.contains(dist.version, prereleases=True) or dist.files is None \
                or "Root-Is-Purelib: true" not in wheel_meta:
            return None
        found[name] = dist
        todo += [Requirement(r) for r in dist.requires or []]
    folder = wheels / hashlib.sha256(json.dumps(sorted((n, d.version) for n, d in found.items())).encode()
                                     ).hexdigest()[:12]
    if not folder.exists():
        wheels.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=wheels))
        for dist in found.values():
            _repack(dist, tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process made the same folder meanwhile
            shutil.rmtree(tmp)
    return folder, [f"{top.name}=={found[canonicalize_name(top.name)].version}" for top in tops]


def _repack(dist: importlib.metadata.Distribution, dest: Path) -> None:
    files = [f for f in dist.files if not str(f).startswith("..") and "__pycache__" not in f.parts]
    info = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    skip = {f"{info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    tags = [t.split("-") for t in re.findall(r"^Tag: (\S+)$", dist.read_text("WHEEL"), flags=re.MULTILINE)]
    tag = "-".join(".".join(sorted({t[i] for t in tags})) for i in range(3)) if tags else "py3-none-any"
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    record = []
    with zipfile.ZipFile(dest / f"{name}-{dist.version}-{tag}.whl", "w", zipfile.ZIP_DEFLATED) as whl:
        for f in files:
            if str(f) in skip or not Path(dist.locate_file(f)).is_file():
                continue
            data = Path(dist.locate_file(f)).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            whl.writestr(str(f), data)
            record.append(f"{f},sha256={digest},{len(data)}")
        whl.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
