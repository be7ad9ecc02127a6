"""Fixtures of the reliability suite.

- ``ray_cluster``: one real Ray cluster (``ray.cluster_utils.Cluster``) for the session, its head
  advertising the CPU interpreter; this process is connected to it as a driver. Fault tests add
  and remove their own nodes and shut their actors down, so tests do not share work.
- ``sqlite_url``: a fresh SQLite file per test.
- ``private_pg``: a PostgreSQL cluster of the test alone (restartable), stopped and deleted after.
- ``figures``: records a test's measurements (pytest ``user_properties``; and a JSON file per
  test in ``$MLAFLEET_RELIABILITY_OUT`` when set, for docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The helper modules of this folder import by name (also in the worker's spawned children,
# which inherit sys.path), whatever pytest's --import-mode.
sys.path.insert(0, str(Path(__file__).parent))

from reliability_support import PrivatePostgres, add_node_with_retries

INTERPRETER_RESOURCES = {"arch:cpu-interpreter": 1}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A Ray cluster with a CPU-interpreter head node; this process is its driver."""
    import ray
    from ray.cluster_utils import Cluster

    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("the fault tests run the fleet on the CPU interpreter (TRITON_INTERPRET=1)")
    cluster = Cluster(initialize_head=False)
    add_node_with_retries(
        cluster, num_cpus=2, resources=dict(INTERPRETER_RESOURCES), include_dashboard=False
    )
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlafleet.db'}"


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A private, running PostgreSQL server (trust auth on 127.0.0.1, a free port)."""
    pg = PrivatePostgres()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """``figures(name=value, ...)``: keep measurements with the test's report."""
    values: dict[str, Any] = {}

    def record(**kwargs: Any) -> None:
        values.update(kwargs)
        for key, value in kwargs.items():
            request.node.user_properties.append((key, value))

    yield record
    out = os.environ.get("MLAFLEET_RELIABILITY_OUT")
    if out and values:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        name = request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
        (folder / f"{name}.json").write_text(json.dumps(values, indent=2, default=str))
