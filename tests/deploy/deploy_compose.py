"""Reading docker-compose.yml the way Docker Compose does, for the deployment tests.

No Docker engine runs here (nor in CI), so the tests parse the compose file themselves: YAML with
anchors and merge keys, then the Compose Specification's variable interpolation (``${VAR}``,
``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``,
``$$``), then the services' commands split into the ``mlafleet`` invocations they run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY_DIR = ROOT / "orchestrator" / "deploy"
ENV_EXAMPLE = DEPLOY_DIR / ".env.example"
DOCKERFILE = DEPLOY_DIR / "Dockerfile"
SCHEMA_FILE = Path(__file__).resolve().parent / "compose-spec.json"

# ${NAME}, ${NAME:-x}, ${NAME-x}, ${NAME:?x}, ${NAME?x}, ${NAME:+x}, ${NAME+x}; or $NAME; or $$.
_VAR = re.compile(
    r"\$\$"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)

# Values the tests give the variables a user must set (never real secrets).
TEST_SECRETS = {
    "POSTGRES_PASSWORD": "testpassword123",
    "MLAFLEET_API_TOKEN": "test-token-123",
    "RAY_AUTH_TOKEN": "5eed" * 16,
}


class InterpolationError(ValueError):
    """A required variable (``${VAR:?message}``) is unset: Compose refuses the file."""


class _ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags: ``!reset`` and ``!override`` keep the value they tag."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, _tagged)


def load_yaml(path: Path) -> dict[str, Any]:
    """The YAML document at ``path`` (anchors and ``<<`` merge keys resolved)."""
    data = yaml.load(path.read_text(), Loader=_ComposeLoader)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def _interpolate_str(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset_or_empty = not value
        missing = unset_or_empty if (op or "").startswith(":") else value is None
        if op in (":-", "-"):
            return _interpolate_str(arg, env) if missing else str(value)
        if op in (":?", "?"):
            if missing:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if missing else _interpolate_str(arg, env)
        return "" if value is None else str(value)

    return _VAR.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """``node`` with every string interpolated from ``env``, as Compose does before validating.

    Raises:
        InterpolationError: a ``${VAR:?message}`` variable is unset or empty.
    """
    if isinstance(node, str):
        return _interpolate_str(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def variables(node: Any) -> set[str]:
    """Names of the variables interpolated anywhere in ``node``."""
    if isinstance(node, str):
        return {
            m.group("braced") or m.group("bare") for m in _VAR.finditer(node) if m.group(0) != "$$"
        }
    if isinstance(node, list):
        return set().union(*(variables(item) for item in node)) if node else set()
    if isinstance(node, dict):
        found: set[str] = set()
        for value in node.values():
            found |= variables(value)
        return found
    return set()


def load_schema() -> dict[str, Any]:
    """The vendored Compose Specification JSON schema."""
    return json.loads(SCHEMA_FILE.read_text())


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml interpolated with ``env`` (default: the test secrets only)."""
    return interpolate(load_yaml(COMPOSE_FILE), dict(TEST_SECRETS if env is None else env))


def command_argv(command: str | list[str]) -> list[str]:
    """A service's ``command`` as an argv list (a string is split as the shell would)."""
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def shell_steps(argv: list[str]) -> list[list[str]]:
    """The simple commands of ``argv``: itself, or for ``bash -c SCRIPT`` the ``&&`` steps of SCRIPT
    (with a leading ``exec`` dropped)."""
    if len(argv) >= 3 and Path(argv[0]).name in ("bash", "sh") and argv[1] == "-c":
        steps: list[list[str]] = [[]]
        for word in shlex.split(argv[2]):
            if word in ("&&", ";"):
                steps.append([])
            else:
                steps[-1].append(word)
        return [step[1:] if step and step[0] == "exec" else step for step in steps if step]
    return [argv]


def mlafleet_invocations(command: str | list[str]) -> list[list[str]]:
    """The arguments of every ``mlafleet`` call in a service's command (program name dropped)."""
    return [step[1:] for step in shell_steps(command_argv(command)) if step[0] == "mlafleet"]


def settings_env_names() -> set[str]:
    """``MLAFLEET_<FIELD>`` for every field of the orchestrator's Settings."""
    from mlafleet.orchestrator.config import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def names_read_in_source() -> set[str]:
    """``MLAFLEET_*`` names written out in the installed packages' source (read by name, e.g.
    ``os.environ.get("MLAFLEET_LOG_LEVEL")``), beyond the Settings fields."""
    found: set[str] = set()
    for package in ("kernels", "worker", "orchestrator", "dashboard"):
        for path in (ROOT / package).rglob("*.py"):
            found |= set(re.findall(r"[\"'](MLAFLEET_[A-Z0-9_]+)[\"']", path.read_text()))
    return found


def env_example_names() -> set[str]:
    """Variable names documented in orchestrator/deploy/.env.example (set or commented out)."""
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line.strip())
        if match:
            names.add(match.group(1))
    return names


def load_healthcheck() -> ModuleType:
    """orchestrator/deploy/healthcheck.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY_DIR / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
