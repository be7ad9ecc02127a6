"""CLI commands: dashboard (Streamlit).

``mlafleet dashboard`` runs ``streamlit run <mlafleet/dashboard/app.py>`` in a child process,
with the API URL passed through ``MLAFLEET_API_URL``. Streamlit is never imported here: the CLI
stays quick to start, and the dashboard stays an HTTP client of the API.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import typer

API_URL_ENV = "MLAFLEET_API_URL"


def dashboard_app_path() -> Path:
    """Where the dashboard's Streamlit entrypoint (``app.py``) is installed.

    Raises:
        FileNotFoundError: the ``mlafleet.dashboard`` package or its ``app.py`` is missing.
    """
    spec = importlib.util.find_spec("mlafleet.dashboard")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package mlafleet.dashboard is not installed; reinstall mlafleet (pip install -e .)"
        )
    app = Path(next(iter(spec.submodule_search_locations))) / "app.py"
    if not app.is_file():
        raise FileNotFoundError(f"expected the dashboard entrypoint at {app}; reinstall mlafleet")
    return app


def check_api_url(url: str) -> str:
    """The API URL without a trailing slash.

    Raises:
        typer.BadParameter: not an http(s) URL with a host.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise typer.BadParameter(
            f"expected an http(s) URL such as http://127.0.0.1:8000, got {url!r}"
        )
    return url.rstrip("/")


def streamlit_command(*, app: Path, port: int, host: str) -> list[str]:
    """The ``streamlit run`` command line for the dashboard.

    Runs Streamlit through this interpreter (``python -m streamlit``) so the dashboard sees the
    same installed packages as the CLI.
    """
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]


def dashboard(
    api: Annotated[
        str | None,
        typer.Option(
            "--api", help="API base URL (default: MLAFLEET_API_URL or http://127.0.0.1:8000)"
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="dashboard port (default 8501)"),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
) -> None:
    """Serve the Streamlit dashboard (reads the API over HTTP) until Ctrl-C."""
    from mlafleet.orchestrator.config import get_settings
    from mlafleet.orchestrator.errors import SettingsError

    try:
        settings = get_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    api_url = check_api_url(api or settings.api_url)
    try:
        app = dashboard_app_path()
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if importlib.util.find_spec("streamlit") is None:
        typer.echo("error: streamlit is not installed; run `pip install streamlit`", err=True)
        raise typer.Exit(2)
    listen_port = port or settings.dashboard_port
    env = {**os.environ, API_URL_ENV: api_url}
    typer.echo(f"dashboard: http://{host}:{listen_port}  (reading the API at {api_url})", err=True)
    command = streamlit_command(app=app, port=listen_port, host=host)
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        typer.echo(f"error: cannot find the Python interpreter {command[0]}", err=True)
        raise typer.Exit(2)
    proc = subprocess.Popen(command, env=env)
    raise typer.Exit(_wait_forwarding_signals(proc))


def _wait_forwarding_signals(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the Streamlit child; a SIGTERM/SIGHUP to this process is passed on to it, so
    stopping ``mlafleet dashboard`` never leaves an orphaned server behind.

    Returns:
        The child's exit code (0 after Ctrl-C).
    """

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the child too (same process group)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("dashboard")(dashboard)
