"""Every command the compose files run exists: each ``mlafleet`` call is a real subcommand whose
``--help`` works and that accepts every option the service passes; the Ray head's ``ray start``
options exist in the installed Ray; the health checks name real roles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from deploy_compose import (
    COMPOSE_FILE,
    DEPLOY_DIR,
    DOCKERFILE,
    TEST_SECRETS,
    command_argv,
    interpolate,
    load_healthcheck,
    load_yaml,
    mlafleet_invocations,
    shell_steps,
)
from typer.testing import CliRunner

from mlafleet.orchestrator.cli.main import app

COMPOSE_FILES = [COMPOSE_FILE, *sorted(DEPLOY_DIR.glob("compose.*.yml"))]
ENV = {**TEST_SECRETS, "MLAFLEET_RAY_ADDRESS": "10.0.0.5:6379"}


def _services() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in COMPOSE_FILES:
        doc = interpolate(load_yaml(path), ENV)
        for name, service in doc.get("services", {}).items():
            if "command" in service:
                found.append((f"{path.name}:{name}", service))
    return found


def _invocations() -> list[tuple[str, list[str]]]:
    return [
        (name, args)
        for name, service in _services()
        for args in mlafleet_invocations(service["command"])
    ]


INVOCATIONS = _invocations()
EXPECTED = {("db", "upgrade"), ("serve",), ("worker",), ("dashboard",)}


def _subcommands(command: Any) -> dict[str, Any] | None:
    """A group's subcommands by name, or None for a plain command. (typer ships its own copy of
    click, so this reads the group's ``commands`` rather than testing for ``click.Group``.)"""
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, dict) else None


def resolve(args: list[str]) -> tuple[list[str], Any, list[str]]:
    """Split ``args`` into the subcommand path, the click command it names, and its options.

    Raises:
        LookupError: a word that should name a subcommand names none.
    """
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(args)
    while (subs := _subcommands(command)) is not None and rest and not rest[0].startswith("-"):
        sub = subs.get(rest[0])
        if sub is None:
            raise LookupError(f"mlafleet {' '.join([*path, rest[0]])}: no such command")
        path.append(rest.pop(0))
        command = sub
    return path, command, rest


def test_the_compose_file_runs_the_four_fleet_commands() -> None:
    found = set()
    for _, args in INVOCATIONS:
        path, _, _ = resolve(args)
        found.add(tuple(path))
    assert found == EXPECTED


@pytest.mark.parametrize(("service", "args"), INVOCATIONS, ids=[s for s, _ in INVOCATIONS])
def test_service_command_is_a_real_mlafleet_command(service: str, args: list[str]) -> None:
    path, command, rest = resolve(args)
    assert path, f"{service}: `mlafleet` alone is not a fleet command"
    assert _subcommands(command) is None, f"{service}: mlafleet {' '.join(path)} is a group"
    options = {opt for param in command.params for opt in param.opts}
    given = [word.split("=", 1)[0] for word in rest if word.startswith("-")]
    unknown = [opt for opt in given if opt not in options]
    assert not unknown, f"{service}: mlafleet {' '.join(path)} has no option {unknown}"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_help_works_through_the_installed_console_script() -> None:
    """The image runs the ``mlafleet`` console script, not the typer app in-process."""
    script = shutil.which("mlafleet") or str(Path(sys.executable).parent / "mlafleet")
    for path in sorted(EXPECTED):
        done = subprocess.run(
            [script, *path, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"mlafleet {' '.join(path)} --help: {done.stderr[-2000:]}"
        assert "Usage:" in done.stdout


def test_ray_head_options_exist_in_the_installed_ray() -> None:
    head = interpolate(load_yaml(COMPOSE_FILE), ENV)["services"]["head"]
    steps = shell_steps(command_argv(head["command"]))
    ray_steps = [step for step in steps if step[:2] == ["ray", "start"]]
    assert len(ray_steps) == 1
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    done = subprocess.run(
        [ray, "start", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for word in ray_steps[0][2:]:
        option = word.split("=", 1)[0]
        assert option in done.stdout, f"`ray start` has no option {option}"


def test_health_checks_name_real_roles_of_the_installed_script() -> None:
    healthcheck = load_healthcheck()
    assert "/opt/mlafleet/healthcheck.py" in DOCKERFILE.read_text()
    checked = 0
    for name, service in _services():
        test = service.get("healthcheck", {}).get("test")
        if test and "/opt/mlafleet/healthcheck.py" in test:
            role = test[test.index("/opt/mlafleet/healthcheck.py") + 1]
            assert role in healthcheck.ROLES, f"{name}: unknown health check role {role}"
            checked += 1
    assert checked >= 5
