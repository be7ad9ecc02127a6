"""CLI commands: demo, serve, worker, db upgrade (orchestrator)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from ..config import Settings, default_data_dir, get_settings
from ..errors import MlafleetError

log = logging.getLogger(__name__)
err = Console(stderr=True)
out = Console()

DbOpt = Annotated[
    str | None, typer.Option("--db", help="database URL (default: MLAFLEET_DB_URL or SQLite)")
]


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        base = get_settings()
    except MlafleetError as exc:
        _fail(str(exc))
        raise
    return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def db_upgrade(db: DbOpt = None) -> None:
    """Apply database schema migrations (safe to run again: does nothing when up to date)."""
    from ..db.session import upgrade

    settings = _settings(db_url=db)
    try:
        revision = upgrade(settings.db_url)
    except MlafleetError as exc:
        _fail(str(exc))
    out.print(f"database at revision {revision} (head)")


def serve(
    db: DbOpt = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="Ray cluster to join (default: start a local one)"),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="API address")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="API port")] = None,
) -> None:
    """Run the job runner and the HTTP API until Ctrl-C."""
    from ..db.store import Store
    from ..dispatch import ensure_ray

    settings = _settings(db_url=db, ray_address=ray_address, host=host, port=port)
    try:
        store = Store.open(settings.db_url)
    except MlafleetError as exc:
        _fail(str(exc))
    try:
        resources = ensure_ray(settings.ray_address)
    except ConnectionError as exc:
        _fail(str(exc))
    archs = sorted(k[5:] for k in resources if k.startswith("arch:"))
    err.print(f"Ray: {', '.join(archs) or 'no device nodes yet'}; database: {settings.db_url}")
    try:
        _run_service(store, settings)
    finally:
        store.close()


def _run_service(store: Any, settings: Settings) -> None:
    """The job runner in a thread and the API in this one, until Ctrl-C."""
    from ..runner import Runner

    stop = threading.Event()
    runner = Runner(store=store, settings=settings)
    thread = threading.Thread(target=runner.run, args=(stop,), name="mlafleet-runner", daemon=True)
    thread.start()
    try:
        _serve_api(store, settings)
    finally:
        stop.set()
        thread.join(timeout=30)


def _serve_api(store: Any, settings: Settings) -> None:
    """Serve the API in this thread; without the API package, wait for Ctrl-C instead."""
    try:
        import uvicorn

        from ..api.app import create_app
    except ImportError as exc:
        err.print(
            f"[yellow]the HTTP API is not available ({exc}); running the job runner only. "
            "Ctrl-C to stop.[/yellow]"
        )
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
        return
    app = create_app(settings, session_factory=store.factory)
    err.print(f"API on http://{settings.host}:{settings.port} (OpenAPI at /docs); Ctrl-C to stop")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def worker(
    ray_address: Annotated[
        str, typer.Option("--ray-address", help="the Ray head to join, host:port")
    ],
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", min=1)] = None,
    test_arch_alias: Annotated[
        str | None,
        typer.Option(
            "--test-arch-alias",
            hidden=True,
            help="TEST MODE (CPU interpreter only): advertise this architecture name",
        ),
    ] = None,
) -> None:
    """Join this machine's GPUs (or its CPU interpreter) to a fleet; runs until Ctrl-C."""
    from mlafleet.worker.device import local_devices

    from ..dispatch import node_resources

    try:
        resources, gpus = node_resources(local_devices(), test_arch_alias=test_arch_alias)
    except ValueError as exc:
        _fail(str(exc))
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray_bin is None:
        _fail("the `ray` command is not installed; pip install 'ray[default]'")
    command = [
        str(ray_bin),
        "start",
        f"--address={ray_address}",
        f"--resources={json.dumps(resources)}",
        f"--num-gpus={gpus}",
        "--block",
    ]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if test_arch_alias:
        err.print(f"[yellow]TEST MODE: advertising arch {test_arch_alias} for the CPU interpreter")
    err.print(f"joining {ray_address} with {resources}")
    env = dict(os.environ)
    if not gpus:
        env["TRITON_INTERPRET"] = "1"
    code = subprocess.call(command, env=env)
    if code:
        _fail(f"`ray start` exited with {code}; is a Ray head running at {ray_address}?", code)


def demo(
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="stop after printing the recommendations")
    ] = False,
    db: DbOpt = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535)] = None,
) -> None:
    """Tune on this machine with an embedded fleet, print the winners, serve API + dashboard."""
    from mlafleet.worker.device import use_interpreter_without_gpu

    from .. import demo as demo_mod
    from ..db.store import Store
    from ..dispatch import ensure_ray

    has_gpu = use_interpreter_without_gpu()
    url = db or f"sqlite:///{default_data_dir() / 'demo.db'}"
    settings = _settings(db_url=url, port=port)
    try:
        store = Store.open(url, auto_upgrade=True)
    except MlafleetError as exc:
        _fail(str(exc))
    err.print(f"[bold]mlafleet demo[/bold]: database {url}; starting an embedded Ray cluster")
    try:
        ensure_ray(None)
    except ConnectionError as exc:
        _fail(str(exc))
    spec = demo_mod.demo_spec(has_gpu=has_gpu)
    err.print(f"job '{spec.name}': {len(spec.problems())} workloads, strategy {spec.strategy}")
    try:
        (job_id, recs), wall_s = demo_mod.timed(demo_mod.run_demo_job, store, settings, spec=spec)
    except (TimeoutError, MlafleetError) as exc:
        _fail(str(exc))
    table_console = out if out.is_terminal else Console(width=120)
    demo_mod.print_summary(table_console, job_id=job_id, recs=recs, wall_s=wall_s)
    if no_serve:
        store.close()
        return
    dash = _start_dashboard(settings)
    try:
        _run_service(store, settings)  # jobs submitted through the API keep running
    finally:
        if dash is not None:
            dash.terminate()
        store.close()


def _start_dashboard(settings: Settings) -> subprocess.Popen[bytes] | None:
    try:
        from . import dashboard_cmd  # noqa: F401
    except ImportError as exc:
        err.print(f"[yellow]the dashboard is not available ({exc}); serving the API only")
        return None
    api = f"http://{settings.host}:{settings.port}"
    command = [sys.executable, "-m", "mlafleet.orchestrator.cli.main", "dashboard", "--api", api]
    err.print(f"dashboard on http://127.0.0.1:{settings.dashboard_port}")
    return subprocess.Popen([*command, "--port", str(settings.dashboard_port)])


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("demo")(demo)
    app.command("serve")(serve)
    app.command("worker")(worker)
    db_app = typer.Typer(help="database maintenance", no_args_is_help=True)
    db_app.command("upgrade")(db_upgrade)
    app.add_typer(db_app, name="db")
