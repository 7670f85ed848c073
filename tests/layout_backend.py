"""A PEP 517 / PEP 660 build backend small enough to live inside a test repository (`backend-path`).

The layout repositories of `layout_repos.py` build with it, so that installing them needs no index (pip installs
no build requirements for `requires = []`) and the tests run offline. It does what setuptools, hatchling or flit
do for a pure-Python `src/` package: a wheel of the package, or an editable wheel holding a `.pth` file that puts
`src/` on the path; with `[tool.layout-backend] version-file`, it writes the version module at build time, as
setuptools-scm or hatch-vcs do. `wheel()` also makes the test-only dependency's wheel.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path


def wheel(directory: str, name: str, version: str, files: dict[str, bytes]) -> str:
    """Write `name-version-py3-none-any.whl` holding `files` and its metadata into `directory`; its file name.
    The file and dist-info names spell the project name with `_` for `-`, as the wheel specification requires
    (pip 25+ rejects `zeta-fixtures-0.3-...whl`, reading `fixtures` as the version)."""
    escaped = name.replace("-", "_")
    info = f"{escaped}-{version}.dist-info"
    files = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: layout-backend\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for path, data in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,", ""]).encode()
    filename = f"{escaped}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(Path(directory) / filename, "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
    return filename


def _project() -> tuple[str, str, dict]:
    tables = tomllib.loads(Path("pyproject.toml").read_text())  # pip runs the backend in the project folder
    project = tables["project"]
    return project["name"], project["version"], tables.get("tool", {}).get("layout-backend", {})


def _generate(version: str, options: dict) -> None:
    if "version-file" in options:
        Path(options["version-file"]).write_text(f"version = {version!r}\n")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name, version, options = _project()
    _generate(version, options)
    src = Path("src")
    return wheel(wheel_directory, name, version,
                 {str(p.relative_to(src)): p.read_bytes() for p in sorted(src.rglob("*.py"))})


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name, version, options = _project()
    _generate(version, options)
    return wheel(wheel_directory, name, version, {f"_{name}_editable.pth": f"{Path('src').resolve()}\n".encode()})
