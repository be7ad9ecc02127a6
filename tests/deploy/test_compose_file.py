"""docker-compose.yml and the image, checked without a Docker engine.

The file is validated against the Compose Specification's JSON schema (vendored next to this test,
see compose-spec.SOURCE.md), before and after variable interpolation, and checked for what the
deployment promises: start order, health checks, GPU reservations, no secrets, and environment
variables that mlafleet really reads.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import jsonschema
import pytest
from deploy_compose import (
    COMPOSE_FILE,
    DEPLOY_DIR,
    DOCKERFILE,
    ROOT,
    SCHEMA_FILE,
    TEST_SECRETS,
    InterpolationError,
    compose,
    env_example_names,
    interpolate,
    load_schema,
    load_yaml,
    names_read_in_source,
    settings_env_names,
    variables,
)

LONG_RUNNING = ("postgres", "head", "worker-h100", "worker-a100", "worker-cpu", "dashboard")
GPU_WORKERS = ("worker-h100", "worker-a100")


def _errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(load_schema())
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<top>'}: {err.message}"
        for err in validator.iter_errors(document)
    ]


def test_vendored_schema_is_a_valid_json_schema() -> None:
    schema = load_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"


def test_schema_rejects_what_compose_rejects() -> None:
    """The validator has teeth: misspelled keys and bad conditions fail."""
    bad = {
        "services": {
            "api": {"image": "x", "comand": ["mlafleet", "serve"]},
            "w": {"image": "x", "depends_on": {"api": {"condition": "service_ready"}}},
        }
    }
    problems = _errors(bad)
    assert any("comand" in p for p in problems), problems
    assert any("service_ready" in p for p in problems), problems


def test_compose_file_matches_the_spec_as_written() -> None:
    assert _errors(load_yaml(COMPOSE_FILE)) == []


def test_compose_file_matches_the_spec_after_interpolation() -> None:
    assert _errors(compose()) == []


@pytest.mark.parametrize("path", sorted(DEPLOY_DIR.glob("compose.*.yml")), ids=lambda p: p.name)
def test_extra_compose_files_match_the_spec(path) -> None:
    env = {**TEST_SECRETS, "MLAFLEET_RAY_ADDRESS": "10.0.0.5:6379"}
    assert _errors(interpolate(load_yaml(path), env)) == []


@pytest.mark.parametrize("missing", sorted(TEST_SECRETS))
def test_required_secrets_refuse_to_start_with_a_message(missing: str) -> None:
    env = {k: v for k, v in TEST_SECRETS.items() if k != missing}
    with pytest.raises(InterpolationError, match=missing) as info:
        compose(env)
    assert "set " + missing in str(info.value)


def test_no_secret_is_written_in_the_file() -> None:
    doc = load_yaml(COMPOSE_FILE)
    secretive = re.compile(r"(?i)password|token|secret")
    checked = 0
    for name, service in doc["services"].items():
        for key, value in service.get("environment", {}).items():
            if secretive.search(key):
                checked += 1
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name}: {key}={value}"
    assert checked >= 2  # the PostgreSQL password and the API token
    # The database URL takes its password from the variable, not from the file.
    assert re.search(r"mlafleet:\$\{POSTGRES_PASSWORD:\?", COMPOSE_FILE.read_text())


def test_start_order_and_health_checks() -> None:
    services = compose()["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["head"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"}
    }
    for name in (*GPU_WORKERS, "worker-cpu", "dashboard"):
        assert services[name]["depends_on"] == {"head": {"condition": "service_healthy"}}, name
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert not check.get("disable"), f"{name} has its health check disabled"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["migrate"]["restart"] == "no"


def test_postgres_keeps_its_data_in_a_volume() -> None:
    doc = compose()
    mounts = doc["services"]["postgres"]["volumes"]
    assert "pgdata:/var/lib/postgresql/data" in mounts
    assert "pgdata" in doc["volumes"]


def test_gpu_workers_reserve_nvidia_gpus_and_have_a_profile_each() -> None:
    services = compose()["services"]
    profiles = set()
    for name in GPU_WORKERS:
        service = services[name]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], name
        assert len(service["profiles"]) == 1
        profiles |= set(service["profiles"])
        # Scalable: nothing that two replicas of one service would fight over.
        assert "container_name" not in service, name
        assert "ports" not in service, name
    assert len(profiles) == len(GPU_WORKERS)
    assert "devices" not in str(services["worker-cpu"].get("deploy", {}))


def test_workers_join_the_head_and_the_dashboard_reads_the_api() -> None:
    services = compose()["services"]
    for name in (*GPU_WORKERS, "worker-cpu"):
        assert services[name]["command"] == ["mlafleet", "worker", "--ray-address", "head:6379"]
    assert "--port=6379" in services["head"]["command"][-1]
    assert "exec mlafleet serve" in services["head"]["command"][-1]
    dashboard = services["dashboard"]["command"]
    assert dashboard[dashboard.index("--api") + 1] == "http://head:8000"
    assert services["head"]["environment"]["MLAFLEET_PORT"] == 8000


def test_only_migrate_and_head_get_the_database_password() -> None:
    services = compose()["services"]
    holders = {
        name for name, svc in services.items() if "MLAFLEET_DB_URL" in svc.get("environment", {})
    }
    assert holders == {"migrate", "head"}
    password = TEST_SECRETS["POSTGRES_PASSWORD"]
    for name in (*GPU_WORKERS, "worker-cpu", "dashboard"):
        assert password not in str(services[name]), name
    ray_nodes = {
        name for name, svc in services.items() if "RAY_AUTH_TOKEN" in svc.get("environment", {})
    }
    assert ray_nodes == {"head", *GPU_WORKERS, "worker-cpu"}


def test_every_mlafleet_variable_is_one_that_mlafleet_reads() -> None:
    real = settings_env_names() | names_read_in_source()
    for name, service in compose()["services"].items():
        for key in service.get("environment", {}):
            if key.startswith("MLAFLEET_"):
                assert key in real, f"{name}: {key} is not a Settings field nor read by mlafleet"


def test_env_example_documents_every_setting_and_compose_variable() -> None:
    documented = env_example_names()
    assert settings_env_names() <= documented, settings_env_names() - documented
    used = variables(load_yaml(COMPOSE_FILE))
    for path in DEPLOY_DIR.glob("compose.*.yml"):
        used |= variables(load_yaml(path))
    assert used <= documented, used - documented
    for line in (DEPLOY_DIR / ".env.example").read_text().splitlines():
        if line.startswith(tuple(TEST_SECRETS)):
            assert line.endswith("="), f"the example must not carry a secret: {line}"


def test_dockerfile_builds_a_cuda_image_for_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:12\.\d+(\.\d+)?-runtime-ubuntu", text, re.M)
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}", text, re.M)
    assert '--index-url "$TORCH_INDEX_URL"' in text  # a CUDA build of PyTorch
    assert re.search(r"^RUN pip install \.", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users, "the image runs as root"
    assert users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*healthcheck\.py", text, re.M | re.S)
    for source in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"COPY {path}: not in the repository"


def test_dockerignore_keeps_what_the_image_needs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", ".env"} <= ignored
    needed = {"pyproject.toml", "README.md", "kernels", "worker", "orchestrator", "dashboard"}
    assert not needed & ignored


def test_vendored_schema_is_the_recorded_upstream_file() -> None:
    """compose-spec.json is byte for byte the file compose-spec.SOURCE.md names."""
    source = (SCHEMA_FILE.parent / "compose-spec.SOURCE.md").read_text()
    recorded = re.search(r"sha256 `([0-9a-f]{64})`", source)
    assert recorded, "compose-spec.SOURCE.md records no checksum"
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == recorded.group(1)
    assert (SCHEMA_FILE.parent / "compose-spec.LICENSE").read_text().count("Apache License") >= 1
