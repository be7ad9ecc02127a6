"""Helpers of the reliability suite: real servers and processes, and the SQL that counts trials.

- ``start_api`` / ``stop_api``: a real uvicorn server on a free 127.0.0.1 port, in a thread.
- ``ServeProcess``: ``mlafleet serve`` as a child process (its own process group), killed with
  SIGKILL and started again by the fault tests.
- ``PrivatePostgres``: a throw-away PostgreSQL cluster (``initdb`` into a temporary folder, trust
  auth, a free port), so a test can restart *its* server without touching the machine's shared
  one (teammates' tests use that).
- ``trial_census``: what the database holds for one job, counted with SQL.
- ``expected_trials``: the config hashes an exhaustive task must end with (search space plus
  default), computed from the kernel registry, not hard-coded.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn

from mlafleet.kernels.configs import CPU_INTERPRETER
from mlafleet.kernels.registry import get_kernel
from mlafleet.orchestrator.api.app import create_app
from mlafleet.orchestrator.config import Settings
from mlafleet.orchestrator.db.repo_results import config_hash

BIN = Path(sys.executable).parent

TINY_WORKLOADS: dict[str, Any] = {
    "batch": [1],
    "seqlen": [16, 32],
    "heads": [2],
    "dtype": ["fp16"],
    "page_size": [16],
    "d_qk": 96,
    "d_v": 64,
}


def tiny_job(name: str = "reliability", **overrides: Any) -> dict[str, Any]:
    """An exhaustive decode tune job over tiny problems (the CPU interpreter runs it in seconds
    per trial); every task's trials are known in advance (``expected_trials``)."""
    spec: dict[str, Any] = {
        "kind": "tune",
        "name": name,
        "kernel": "mla_decode",
        "workloads": dict(TINY_WORKLOADS),
        "archs": "all",
        "strategy": "exhaustive",
    }
    spec.update(overrides)
    return spec


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], Any], *, timeout_s: float, what: str, every_s: float = 0.25
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s:.0f} s")
        time.sleep(every_s)


def add_node_with_retries(cluster: Any, *, attempts: int = 5, **node_args: Any) -> Any:
    """``cluster.add_node`` retried: Ray gives a node 30 s to register, which a loaded 2-core
    CI machine can miss (a node that failed is not added; its processes end with this one)."""
    for attempt in range(1, attempts + 1):
        try:
            return cluster.add_node(**node_args)
        except Exception:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- SQL census


@dataclass(frozen=True)
class Census:
    """What the database holds for one job."""

    total: int
    duplicates: int  # (task, config, env) groups with more than one row
    by_task: dict[int, set[str]]  # task id -> config hashes
    attempts: dict[int, int]  # task id -> attempts
    task_status: dict[int, str]
    job_status: str


def trial_census(url: str, job_id: int) -> Census:
    """Count the trials of ``job_id`` with plain SQL (not through the code under test)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            total = conn.execute(
                sa.text("SELECT count(*) FROM trials WHERE job_id = :j"), {"j": job_id}
            ).scalar_one()
            duplicates = conn.execute(
                sa.text(
                    "SELECT count(*) FROM (SELECT task_id, config_hash, env_id FROM trials "
                    "WHERE job_id = :j GROUP BY task_id, config_hash, env_id "
                    "HAVING count(*) > 1) AS d"
                ),
                {"j": job_id},
            ).scalar_one()
            by_task: dict[int, set[str]] = {}
            for task_id, chash in conn.execute(
                sa.text("SELECT task_id, config_hash FROM trials WHERE job_id = :j"), {"j": job_id}
            ):
                by_task.setdefault(int(task_id), set()).add(str(chash))
            tasks = conn.execute(
                sa.text("SELECT id, attempts, status FROM tasks WHERE job_id = :j"), {"j": job_id}
            ).all()
            job_status = conn.execute(
                sa.text("SELECT status FROM jobs WHERE id = :j"), {"j": job_id}
            ).scalar_one()
    finally:
        engine.dispose()
    return Census(
        total=int(total),
        duplicates=int(duplicates),
        by_task=by_task,
        attempts={int(t[0]): int(t[1]) for t in tasks},
        task_status={int(t[0]): str(t[2]) for t in tasks},
        job_status=str(job_status),
    )


def task_problems(url: str, job_id: int) -> dict[int, dict[str, Any]]:
    """Task id -> its stored problem."""
    import json

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, problem FROM tasks WHERE job_id = :j"), {"j": job_id}
            ).all()
    finally:
        engine.dispose()
    return {int(i): (p if isinstance(p, dict) else json.loads(p)) for i, p in rows}


def expected_trials(kernel: str, problem: dict[str, Any]) -> set[str]:
    """Config hashes an exhaustive task of ``problem`` on the CPU interpreter must store."""
    spec = get_kernel(kernel)
    prob = spec.problem_from_dict(problem)
    configs = list(spec.fn("search_space")(prob, CPU_INTERPRETER))
    configs.append(spec.fn("default_config")(prob, CPU_INTERPRETER))
    return {config_hash(c.as_dict()) for c in configs}


def assert_every_trial_once(url: str, job_id: int) -> tuple[Census, int]:
    """The job succeeded and holds each expected trial exactly once; returns (census, expected)."""
    census = trial_census(url, job_id)
    expected = {t: expected_trials("mla_decode", p) for t, p in task_problems(url, job_id).items()}
    n_expected = sum(len(v) for v in expected.values())
    assert census.job_status == "succeeded", census
    assert set(census.task_status.values()) == {"succeeded"}, census.task_status
    assert census.duplicates == 0, census
    assert census.by_task == expected, (census.by_task, expected)
    assert census.total == n_expected, (census.total, n_expected)
    return census, n_expected


def row_counts(url: str) -> dict[str, int]:
    """Rows of every table of the schema."""
    engine = sa.create_engine(url)
    try:
        names = sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            return {
                n: int(conn.execute(sa.text(f'SELECT count(*) FROM "{n}"')).scalar_one())
                for n in names
            }
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- in-process API


@dataclass
class LiveApi:
    url: str
    server: uvicorn.Server
    thread: threading.Thread


def start_api(settings: Settings, **app_kwargs: Any) -> LiveApi:
    """uvicorn serving ``create_app(settings)`` on a free 127.0.0.1 port, in a thread."""
    app = create_app(settings, **app_kwargs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), timeout_s=30, what="uvicorn up")
    assert server.started, "uvicorn did not start"
    return LiveApi(f"http://127.0.0.1:{port}", server, thread)


def stop_api(live: LiveApi) -> None:
    live.server.should_exit = True
    live.thread.join(timeout=20)


# ----------------------------------------------------------------------------- mlafleet serve


@dataclass
class ServeProcess:
    """``mlafleet serve`` against a database and an existing Ray cluster."""

    db_url: str
    ray_address: str
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 180.0) -> float:
        """Start it and wait for /healthz; returns the seconds that took."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLAFLEET_")}
        env["MLAFLEET_JOB_POLL_S"] = "0.5"
        argv = [str(BIN / "mlafleet"), "serve", "--db", self.db_url, "--ray-address",
                self.ray_address, "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        began = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited ({self.proc.returncode}):\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.api}/healthz", timeout=5).status_code == 200
            return False

        wait_until(up, timeout_s=timeout_s, what="serve answering /healthz", every_s=0.5)
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL its whole process group, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, size: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""


# ----------------------------------------------------------------------------- private PostgreSQL


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL cluster of this test alone: ``initdb`` in a temp folder, trust auth."""

    def __init__(self) -> None:
        self.port = free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix="mlafleet-pg-"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.datadir, user="postgres", group="postgres")
        self.datadir.chmod(0o700)
        self.log = self.datadir / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout_s: float = 120.0) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self.as_root else list(argv)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run(_pg_bin("initdb"), "-D", str(self.datadir / "data"), "-A", "trust", "-U",
                  "postgres", "--no-sync", "-E", "UTF8")  # fmt: skip

    def start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} "
                "-c fsync=off -c full_page_writes=off")  # fmt: skip
        self._run(_pg_bin("pg_ctl"), "-D", str(self.datadir / "data"), "-o", opts, "-l",
                  str(self.log), "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.datadir / "data"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
