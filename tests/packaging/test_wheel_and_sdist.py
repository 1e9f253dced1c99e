"""The package as a user gets it: built, installed with pip into a fresh virtual environment.

One module-scoped build: ``uv build --sdist`` from this checkout, the sdist unpacked, then the
README's install commands run as written in that unpacked sdist (``uv build --wheel`` and
``pip install dist/...whl``) with a fresh virtual environment's ``pip`` first on PATH. That
environment holds only the locked Airflow and its dependencies (``uv sync --no-install-project``
from uv.lock, hard-linked from uv's cache: fast, and offline: ``UV_OFFLINE``, ``PIP_NO_INDEX``),
so pip installs the provider's wheel alone and would fail on any requirement the lock does not
satisfy. Then: ``airflow providers list``, the ``packly-sandbox`` console script, the imports an
operator or sensor pays, the metadata, LICENSE and NOTICE in both artifacts, and the sdist's own
tests collected without errors.

Needs uv (``./dev`` installs it into ``.tools/``) and uv.lock, so it runs in a checkout and is
skipped in an unpacked sdist (which has no lock to build an environment from).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".tools" / "bin" / "uv"
PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13", "3.14")

pytestmark = [
    pytest.mark.airflow_cli,
    pytest.mark.skipif(not (ROOT / "uv.lock").exists(), reason="needs the checkout's uv.lock (not in the sdist)"),
    pytest.mark.skipif(not UV.exists(), reason="needs uv in .tools/ (any ./dev command installs it)"),
]


@dataclass
class Built:
    sdist: Path
    wheel: Path
    source: Path
    """The unpacked sdist, where the wheel was built by the README's commands."""
    venv: Path
    env: dict[str, str]
    install_output: str
    elsewhere: Path
    """An empty folder to run commands in, so that nothing imports the package from a source tree."""

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(
        self, *args: str, cwd: Path | None = None, extra_env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=cwd or self.elsewhere,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def readme_install_commands() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"## Install in your Airflow\n.*?```bash\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md has no bash block under '## Install in your Airflow'"
    return match.group(1)


def check(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("packaging")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTEST"))}
    env.update(
        {
            "UV_OFFLINE": "1",  # everything comes from uv's cache, filled by ./dev's uv sync
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
            "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "AIRFLOW_HOME": str(work / "airflow-home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )

    def run(*args: str | Path, cwd: Path = ROOT, extra: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(arg) for arg in args],
            cwd=cwd,
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=600,
        )
        return check(done)

    # The sdist, unpacked: the README's commands then run in it as in a checkout.
    run(UV, "build", "--sdist", "--out-dir", work / "dist", ROOT)
    (sdist,) = (work / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(work / "src", filter="data")
    (source,) = (work / "src").iterdir()
    (source / ".tools" / "bin").mkdir(parents=True)
    (source / ".tools" / "bin" / "uv").symlink_to(UV)

    # A fresh virtual environment with pip, and the locked runtime dependencies (no project).
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(
        UV,
        "sync",
        "--frozen",
        "--no-default-groups",
        "--no-install-project",
        "--inexact",
        "--python",
        venv / "bin" / "python",
        extra={"UV_PROJECT_ENVIRONMENT": str(venv)},
    )

    # The README's install commands, as written, with the fresh environment's pip first on PATH.
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    output = run("bash", "-euo", "pipefail", "-c", readme_install_commands(), cwd=source)
    (wheel,) = (source / "dist").glob("*.whl")
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return Built(
        sdist=sdist, wheel=wheel, source=source, venv=venv, env=env, install_output=output, elsewhere=elsewhere
    )


def test_the_readme_installs_the_wheel_with_pip(built):
    assert "Successfully installed airflow-provider-packly-0.1.0" in built.install_output
    # pip installed the provider alone: everything it requires was already there, from the lock.
    assert re.search(r"Successfully installed airflow-provider-packly-\S+\s*$", built.install_output.strip())
    location = check(built.run(built.bin("python"), "-c", "import airflow_provider_packly as p; print(p.__file__)"))
    assert str(built.venv) in location, "the provider must come from the wheel, not from a checkout"


def test_airflow_lists_the_provider(built):
    out = check(built.run(built.bin("airflow"), "providers", "list"))
    assert re.search(r"airflow-provider-packly\s*\|.*0\.1\.0", out), out


def test_the_console_script_runs(built):
    out = check(built.run(built.bin("packly-sandbox"), "--help"))
    assert "--port" in out


def test_operators_and_sensors_load_no_starlette_or_uvicorn(built):
    code = (
        "import sys\n"
        "import airflow_provider_packly.operators.packly, airflow_provider_packly.sensors.packly\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn'))\n"
        "print(loaded)\n"
        "assert not loaded, loaded\n"
    )
    check(built.run(built.bin("python"), "-c", code))


def test_the_wheel_metadata(built):
    with zipfile.ZipFile(built.wheel) as wheel:
        names = wheel.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(wheel.read(metadata_name).decode())
        entry_points = wheel.read(metadata_name.replace("METADATA", "entry_points.txt")).decode()
        licence = wheel.read(metadata_name.replace("METADATA", "licenses/LICENSE")).decode()
        notice = wheel.read(metadata_name.replace("METADATA", "licenses/NOTICE")).decode()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "airflow-provider-packly" in notice
    assert metadata["License-Expression"] == "Apache-2.0"
    requires_python = SpecifierSet(metadata["Requires-Python"])
    assert requires_python == SpecifierSet(">=3.10,<3.15")
    assert all(f"{version}.0" in requires_python for version in PYTHON_VERSIONS)
    classifiers = metadata.get_all("Classifier")
    for version in PYTHON_VERSIONS:
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert "Framework :: Apache Airflow :: Provider" in classifiers
    assert {"airflow", "packly"} <= set(metadata["Keywords"].split(","))
    labels = {url.split(",", 1)[0].strip().lower() for url in metadata.get_all("Project-URL")}
    assert {"documentation", "source", "changelog", "issues"} <= labels
    requires = " ".join(metadata.get_all("Requires-Dist"))
    assert "starlette" in requires and "uvicorn" in requires
    assert "packly = airflow_provider_packly.testing.pytest_plugin" in entry_points
    assert "packly-sandbox = airflow_provider_packly.sandbox.__main__:main" in entry_points
    assert not any(name.startswith(("tests/", "scripts/", "docs/")) for name in names)


def test_the_sdist_ships_what_its_tests_need(built):
    with tarfile.open(built.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("LICENSE", "NOTICE", "README.md", "pyproject.toml", "docs/testing.md", "scripts/run_examples.py"):
        assert needed in names
    assert any(name.startswith("benchmarks/") for name in names)


def test_the_sdist_tests_collect_without_errors(built):
    # The test dependencies, from the lock, into the same environment; then pytest in the sdist.
    check(
        built.run(
            str(UV),
            "sync",
            "--frozen",
            "--no-default-groups",
            "--group",
            "test",
            "--no-install-project",
            "--inexact",
            "--python",
            built.bin("python"),
            cwd=ROOT,
            extra_env={"UV_PROJECT_ENVIRONMENT": str(built.venv)},
        )
    )
    done = built.run(
        built.bin("python"), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", cwd=built.source
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert re.search(r"^\d+ tests? collected in ", done.stdout, re.MULTILINE), done.stdout[-3000:]
