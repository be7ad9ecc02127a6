"""Container health check for the mlafleet image (standard library only).

Usage: ``python healthcheck.py {api,dashboard,worker,auto}``; exit 0 when healthy, 1 when not,
with one line on stderr saying what failed. Ports come from the same environment variables the
processes read (``MLAFLEET_PORT``, ``MLAFLEET_DASHBOARD_PORT``), so the check follows the
configuration. ``auto`` picks the role from the container's main command (``/proc/1/cmdline``).

- ``api``: ``GET /healthz`` of ``mlafleet serve`` answers 200.
- ``dashboard``: ``GET /_stcore/health`` of the Streamlit server answers 200.
- ``worker``: a Ray ``raylet`` process runs in this container (the node joined the cluster).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROLES = ("api", "dashboard", "worker")
TIMEOUT_S = 4.0


def _http_ok(url: str) -> str | None:
    """None when ``url`` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            if response.status == 200:
                return None
            return f"{url} answered {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} unreachable: {exc}"


def _process_running(name: str) -> bool:
    """Whether a process whose executable is ``name`` runs (scans ``/proc``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if Path(argv0.decode(errors="replace")).name == name:
            return True
    return False


def guess_role(cmdline: str) -> str | None:
    """The role of a container from its main command line, or None when it has none."""
    words = cmdline.replace("\0", " ").split()
    if "mlafleet" not in " ".join(words):
        return None
    for role, word in (("api", "serve"), ("dashboard", "dashboard"), ("worker", "worker")):
        if word in words:
            return role
    return None


def check(role: str) -> str | None:
    """None when the process of ``role`` is healthy, else why not.

    Raises:
        ValueError: ``role`` is not one of ``ROLES``.
    """
    if role == "api":
        port = os.environ.get("MLAFLEET_PORT", "8000")
        return _http_ok(f"http://127.0.0.1:{port}/healthz")
    if role == "dashboard":
        port = os.environ.get("MLAFLEET_DASHBOARD_PORT", "8501")
        return _http_ok(f"http://127.0.0.1:{port}/_stcore/health")
    if role == "worker":
        return None if _process_running("raylet") else "no Ray raylet runs in this container"
    raise ValueError(f"expected a role in {ROLES} or 'auto', got {role!r}")


def main(argv: list[str]) -> int:
    """Entry point; returns the exit status."""
    if len(argv) != 1:
        sys.stderr.write(f"usage: healthcheck.py {{{','.join(ROLES)},auto}}\n")
        return 2
    role: str | None = argv[0]
    if role == "auto":
        try:
            role = guess_role(Path("/proc/1/cmdline").read_text(errors="replace"))
        except OSError:
            role = None
        if role is None:
            return (
                0  # a one-shot or ad-hoc command (`mlafleet db upgrade`, a shell): nothing to check
            )
    try:
        problem = check(role)
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    if problem is not None:
        sys.stderr.write(f"unhealthy ({role}): {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
