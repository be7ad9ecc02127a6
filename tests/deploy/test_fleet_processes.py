"""The compose services, started as plain processes (no Docker engine here), find each other.

Each process runs the command of its docker-compose.yml service with that service's environment,
interpolated as Compose would; mlafleet gets no flag and no MLAFLEET_* variable the file does not
give it. What differs, because the services share one machine here instead of a container each:
container names and ports become loopback addresses and free ports; the database is a fresh one
on the PostgreSQL server at 127.0.0.1:5432; Ray keeps its files in a folder of this test
(RAY_TMPDIR), the head runs without Ray's own web dashboard, and Ray waits longer for its agents
(see ``localize_ray_start`` and ``service_env``):

    migrate    mlafleet db upgrade                              (runs to completion)
    head       ray start --head ... && exec mlafleet serve      (/healthz answers)
    worker-cpu mlafleet worker --ray-address ...               (its node appears in /v1/archs)
    dashboard  mlafleet dashboard --api ... --host ...          (/_stcore/health; the page shows
                                                                 the API's data in a browser)

Every process runs in its own process group, killed in a finally; the database is dropped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from deploy_compose import DEPLOY_DIR, command_argv, compose

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(900)]

PG_URL = os.environ.get("MLAFLEET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BIN = Path(sys.executable).parent
HEAD_TIMEOUT_S = 240.0
JOIN_TIMEOUT_S = 300.0
RESTARTS = 4  # a service with `restart: unless-stopped` comes back; a crash loop still fails


def _free_port(avoid: range = range(0)) -> int:
    """A port free now, outside ``avoid`` (the OS picks from its ephemeral range, which a
    randomly placed range such as Ray's worker ports may overlap)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def _free_range(size: int, avoid: Collection[int] = ()) -> int:
    """The first port of ``size`` consecutive ports that are free now and hold none of
    ``avoid`` (ports already handed out but not yet bound)."""
    for _ in range(50):
        base = 20000 + (uuid.uuid4().int % 20000)
        ports = range(base, base + size)
        if any(port in ports for port in avoid):
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in ports[:: max(1, size // 8)]:
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


@dataclass
class Fleet:
    """The running processes, their logs, and where they listen."""

    logs: Path
    ports: dict[str, int]
    ray_tmp: Path
    services: dict[str, Any] = field(default_factory=dict)
    db_url: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    argvs: dict[str, list[str]] = field(default_factory=dict)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    baseline_archs: list[dict[str, Any]] = field(default_factory=list)
    joined_archs: list[dict[str, Any]] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    def log_tail(self, name: str, size: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.argvs[name], self.envs[name] = argv, env

    def ensure(self, name: str) -> None:
        """Start the compose service ``name`` (its command, localized) unless it runs."""
        if name not in self.procs:
            service = self.services[name]
            argv = [localize(word, self) for word in command_argv(service["command"])]
            self.start(name, argv, service_env(service, self, self.db_url))

    def wait_for(self, name: str, what: str, probe: Callable[[], Any], timeout_s: float) -> Any:
        """Call ``probe`` until it returns something truthy; fail with the process's log (once:
        a later test that needs the same thing fails at once)."""
        key = f"{name}: {what}"
        if key in self.failures:
            pytest.fail(f"(failed before) {self.failures[key]}")
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            code = self.procs[name].poll()
            if code is not None and self.restarts.get(name, 0) < RESTARTS:
                # restart: unless-stopped. Like a container's restart, nothing of the old run
                # survives it (a `ray start` that gave up may leave its GCS behind).
                self.restarts[name] = self.restarts.get(name, 0) + 1
                _kill_group(self.procs[name])
                self.start(name, self.argvs[name], self.envs[name])
            elif code is not None:
                self.failures[key] = f"{name} exited ({code}) before {what}:\n{self.log_tail(name)}"
                pytest.fail(self.failures[key])
            with contextlib.suppress(httpx.HTTPError):
                last = probe()
                if last:
                    return last
            time.sleep(1.0)
        tail = self.log_tail(name)
        self.failures[key] = f"{name}: no {what} after {timeout_s:.0f} s (last: {last!r}):\n{tail}"
        pytest.fail(self.failures[key])

    def stop(self) -> None:
        """SIGTERM every process group, then SIGKILL what is left."""
        for proc in reversed(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15.0
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            _kill_group(proc)
        # Ray starts its worker processes in sessions of their own; they carry this run's
        # RAY_TMPDIR, which nothing else on the machine has.
        marker = f"RAY_TMPDIR={self.ray_tmp}".encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        os.kill(int(entry.name), signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group that ``proc`` leads, and reap ``proc``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; yields its SQLAlchemy URL, drops it afterwards."""
    name = f"mlafleet_deploy_{uuid.uuid4().hex[:10]}"
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def localize(value: str, fleet: Fleet) -> str:
    """A compose value with container addresses and ports turned into this machine's."""
    ports = fleet.ports
    value = value.replace("head:6379", f"127.0.0.1:{ports['gcs']}")
    value = value.replace("http://head:8000", fleet.api)
    return value.replace("0.0.0.0", "127.0.0.1")


def localize_ray_start(script: str, fleet: Fleet) -> str:
    """The head's ``ray start ...`` with every port free here, and without Ray's own web
    dashboard: a dozen Python processes that a shared 2-core test machine cannot afford, which
    nothing of mlafleet uses (the container keeps it, for operators).

    (Ray itself turns a loopback address into this machine's own address, so its processes
    listen there, as with any local ``ray.init()``.)
    """
    base = _free_range(200, avoid=set(fleet.ports.values()))
    workers = range(base, base + 200)
    fixed = {
        "--port": fleet.ports["gcs"],
        "--min-worker-port": base,
        "--max-worker-port": base + 199,
    }

    def port(match: re.Match[str]) -> str:
        flag = match.group(1)
        return f"{flag}={fixed.get(flag) or _free_port(avoid=workers)}"

    no_dashboard = "--include-dashboard=false"
    script = re.sub(r"--dashboard-host=\S+ --dashboard-port=\d+", no_dashboard, script)
    assert no_dashboard in script, script
    return re.sub(r"(--[a-z-]*port)=(\d+)", port, script)


def service_env(service: dict[str, Any], fleet: Fleet, db_url: str) -> dict[str, str]:
    """This machine's environment without any MLAFLEET_* variable, plus the service's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAFLEET_")}
    env.pop("TRITON_INTERPRET", None)  # only where the service sets it
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"  # as the image's ENV
    # Each container has its own /tmp; here Ray's files (and its "current cluster" address,
    # which a bare ray.init() would follow) stay in this test's own folder.
    env["RAY_TMPDIR"] = str(fleet.ray_tmp)
    # Tolerance for a loaded 2-core test machine: a raylet waits this long for its node's
    # agents (Python processes that can take tens of seconds to start here) before giving up.
    env["RAY_agent_register_timeout_ms"] = "180000"
    for key, value in service.get("environment", {}).items():
        env[key] = localize(str(value), fleet)
    ports = {"MLAFLEET_PORT": "api", "MLAFLEET_DASHBOARD_PORT": "dashboard"}
    for key, port_name in ports.items():
        if key in env:
            env[key] = str(fleet.ports[port_name])
    if "MLAFLEET_DB_URL" in env:  # the same variable, pointing at this test's database
        env["MLAFLEET_DB_URL"] = db_url
    return env


def _archs(fleet: Fleet) -> list[dict[str, Any]]:
    response = httpx.get(f"{fleet.api}/v1/archs", timeout=10)
    response.raise_for_status()
    return list(response.json())


def _alive_nodes(archs: list[dict[str, Any]]) -> int:
    return sum(int(arch.get("alive_nodes", 0)) for arch in archs)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    services = compose()["services"]
    ports = {name: _free_port() for name in ("api", "dashboard", "gcs")}
    ray_tmp = Path(f"/tmp/mlafd-{uuid.uuid4().hex[:8]}")  # short: Ray's socket paths live here
    ray_tmp.mkdir()
    fleet = Fleet(
        logs=tmp_path_factory.mktemp("fleet-logs"), ports=ports, ray_tmp=ray_tmp, services=services
    )
    with fresh_database() as db_url:
        fleet.db_url = db_url
        try:
            env = service_env(services["migrate"], fleet, db_url)
            done = subprocess.run(
                command_argv(services["migrate"]["command"]),
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert done.returncode == 0, (
                f"migrate failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )

            head = command_argv(services["head"]["command"])
            assert head[:2] == ["bash", "-c"]
            script = localize_ray_start(localize(head[2], fleet), fleet)
            fleet.start(
                "head", ["bash", "-c", script], service_env(services["head"], fleet, db_url)
            )
            fleet.wait_for(
                "head",
                "answer on /healthz",
                lambda: httpx.get(f"{fleet.api}/healthz", timeout=5).status_code == 200,
                HEAD_TIMEOUT_S,
            )
            fleet.baseline_archs = _archs(fleet)
            # The tests start the worker, then the dashboard: one at a time, as Ray's node
            # start-up has fixed deadlines that a busy 2-core machine can miss.
            yield fleet
        finally:
            fleet.stop()
            shutil.rmtree(ray_tmp, ignore_errors=True)


def test_migration_made_the_schema_the_api_serves_from(fleet: Fleet) -> None:
    response = httpx.get(f"{fleet.api}/v1/jobs", timeout=10)
    assert response.status_code == 200, response.text


def test_the_worker_joins_and_the_api_lists_its_node(fleet: Fleet) -> None:
    if fleet.joined_archs is not None:
        return
    fleet.ensure("worker-cpu")
    before = _alive_nodes(fleet.baseline_archs)
    archs = fleet.wait_for(
        "worker-cpu",
        "node in /v1/archs",
        lambda: (a := _archs(fleet)) and _alive_nodes(a) > before and a,
        JOIN_TIMEOUT_S,
    )
    joined = [arch for arch in archs if arch["alive_nodes"] > 0]
    assert joined, archs
    assert all(arch["nodes"] and arch["gpus"] >= 1 for arch in joined), joined
    fleet.joined_archs = joined


def test_the_dashboard_answers_its_health_check(fleet: Fleet) -> None:
    fleet.ensure("dashboard")
    body = fleet.wait_for(
        "dashboard",
        "answer on /_stcore/health",
        lambda: (
            (r := httpx.get(f"{fleet.dashboard}/_stcore/health", timeout=5)).status_code == 200
            and r.text
        ),
        60.0,
    )
    assert body.strip() == "ok"


def _page_text(url: str, *, expect: list[str], timeout_s: float = 120.0) -> str:
    """The text of the page at ``url`` as headless Chromium renders it, loaded again until it
    contains every string of ``expect`` (Streamlit renders after its script has run, which takes
    a while on a loaded machine) or ``timeout_s`` passes."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (.ci/run installs it)")
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        done = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=20000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", done.stdout))
        if all(needle in text for needle in expect):
            break
    return text


def test_the_dashboard_page_reaches_the_api(fleet: Fleet) -> None:
    """In a browser, the page's sidebar asks the API's /healthz (server side) and says so."""
    test_the_dashboard_answers_its_health_check(fleet)
    text = _page_text(fleet.dashboard + "/", expect=["API up", fleet.api])
    assert "API up" in text, text[-3000:]
    assert fleet.api in text, text[-3000:]
    assert "unreachable" not in text, text[-3000:]


def test_the_dashboard_fleet_page_shows_the_workers_node(fleet: Fleet) -> None:
    test_the_worker_joins_and_the_api_lists_its_node(fleet)
    test_the_dashboard_answers_its_health_check(fleet)
    archs = [arch["arch"] for arch in fleet.joined_archs or []]
    text = _page_text(f"{fleet.dashboard}/fleet", expect=["Devices", *archs])
    assert "Devices" in text, text[-3000:]
    for arch in fleet.joined_archs or []:
        assert arch["arch"] in text, f"{arch['arch']} not on the Fleet page: {text[-3000:]}"


def test_the_image_health_checks_pass_against_the_live_processes(fleet: Fleet) -> None:
    test_the_worker_joins_and_the_api_lists_its_node(fleet)
    test_the_dashboard_answers_its_health_check(fleet)
    script = str(DEPLOY_DIR / "healthcheck.py")
    for role, service in (("api", "head"), ("dashboard", "dashboard"), ("worker", "worker-cpu")):
        done = subprocess.run(
            [sys.executable, script, role],
            env=fleet.envs[service],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"{role}: {done.stderr}"
    closed = {**fleet.envs["head"], "MLAFLEET_PORT": str(_free_port())}
    done = subprocess.run(
        [sys.executable, script, "api"],
        env=closed,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "unhealthy (api)" in done.stderr
