"""The repo installs as one namespace, mlafleet.*, with every package listed in pyproject.toml."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"kernels", "worker", "orchestrator", "dashboard"}


def _listed_packages() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(data["tool"]["setuptools"]["packages"])


def _package_folders() -> set[str]:
    found = set()
    for top in TOP_LEVEL:
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.add("mlafleet." + ".".join(rel.parts))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    missing = _package_folders() - _listed_packages()
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_no_listed_package_is_missing_on_disk() -> None:
    stale = _listed_packages() - _package_folders()
    assert not stale, f"pyproject.toml lists packages with no folder: {stale}"


@pytest.mark.parametrize("name", sorted(f"mlafleet.{t}" for t in TOP_LEVEL))
def test_packages_import_under_the_namespace(name: str) -> None:
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent.parent == ROOT


def test_no_top_level_kernels_module_is_installed_by_us(tmp_path: Path) -> None:
    # `import kernels` must not resolve to this repo (it would clash with the PyPI package);
    # checked in a fresh interpreter outside the checkout, as an installed user would run it.
    code = (
        "import importlib.util, json; s = importlib.util.find_spec('kernels'); "
        "m = importlib.util.find_spec('mlafleet.kernels'); "
        "print(json.dumps([s.origin if s else None, m.origin if m else None]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    top_level, namespaced = json.loads(out.stdout)
    assert namespaced is not None
    assert Path(namespaced).resolve().parent == ROOT / "kernels"
    assert top_level is None or Path(top_level).resolve().parent != ROOT / "kernels"


def test_cli_help_lists_the_commands() -> None:
    from mlafleet.orchestrator.cli.main import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in (
        "demo",
        "devices",
        "tune",
        "validate",
        "serve",
        "worker",
        "submit",
        "jobs",
        "cancel",
        "pull",
        "export",
        "dashboard",
        "db",
    ):
        assert command in result.output, f"`mlafleet {command}` missing from --help"


def test_every_file_a_make_target_runs_exists() -> None:
    # `make bench` once ran a script that had been renamed away: a user got "No such file"
    makefile = (ROOT / "Makefile").read_text()
    recipes = [line.strip() for line in makefile.splitlines() if line.startswith("\t")]
    run = {
        word
        for line in recipes
        for word in line.split()
        if word.endswith((".py", ".sh")) and not word.startswith("$")
    }
    assert {"bench/bench_decode.py", "scripts/test.sh"} <= run, run
    missing = sorted(path for path in run if not (ROOT / path).is_file())
    assert not missing, f"Makefile recipes run files that do not exist: {missing}"
