"""CLI commands that talk to the API: submit, jobs, cancel, pull; and export (from a database).

The API URL comes from ``--api``, else ``MLAFLEET_API_URL``; the bearer token for ``submit``
and ``cancel`` from ``MLAFLEET_API_TOKEN``. An error from the API is printed as one line
(``error: <detail>``, plus the listed problems of a refused job spec) and exits with 1.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from mlafleet.kernels.bundle import ConfigBundle

from ..config import Settings, get_settings
from ..errors import MlafleetError

# soft_wrap: paths and messages stay on one line (copyable), whatever the terminal width
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ApiOpt = Annotated[
    str | None, typer.Option("--api", help="API base URL (default: MLAFLEET_API_URL)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the API's JSON instead of a table")]
ArchOpt = Annotated[str | None, typer.Option("--arch", help="only this architecture, e.g. sm_90")]
KernelOpt = Annotated[
    str | None, typer.Option("--kernel", help="only this kernel: mla_decode or mla_prefill")
]
TIMEOUT_S = 30.0


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _settings() -> Settings:
    try:
        return get_settings()
    except MlafleetError as exc:
        _fail(str(exc))


def _client(api: str | None) -> httpx.Client:
    settings = _settings()
    headers = {"User-Agent": "mlafleet-cli"}
    token = settings.api_token or os.environ.get("MLAFLEET_API_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(
        base_url=(api or settings.api_url).rstrip("/"), headers=headers, timeout=TIMEOUT_S
    )


def _request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """Send one request; return the decoded JSON, or fail with the API's message."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        _fail(
            f"cannot reach the API at {client.base_url} ({type(exc).__name__}: {exc}); start "
            "it with `mlafleet serve`, or pass --api / set MLAFLEET_API_URL"
        )
    if response.is_success:
        try:
            return response.json()
        except ValueError:
            _fail(f"the API at {client.base_url} answered {method} {path} with non-JSON")
    try:
        body = response.json()
        detail = str(body.get("detail") or response.reason_phrase)
        problems = [str(p) for p in body.get("problems") or []]
    except (ValueError, AttributeError):
        detail, problems = response.text.strip()[:300] or response.reason_phrase, []
    message = f"{detail} (HTTP {response.status_code})"
    if len(problems) > 1:
        message += "".join(f"\n  - {p}" for p in problems)
    _fail(message)


def submit(
    job_file: Annotated[Path, typer.Argument(help="job spec, YAML or JSON")],
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a fleet tuning or validation job (a job spec file) to the API."""
    try:
        text = job_file.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {job_file}: {exc.strerror}; check the path")
    ctype = "application/json" if job_file.suffix.lower() == ".json" else "application/yaml"
    with _client(api) as client:
        job = _request(client, "POST", "/v1/jobs", content=text, headers={"Content-Type": ctype})
    if as_json:
        out.print_json(data=job)
        return
    out.print(
        f"job {job['id']} {job['status']}: {job['name']} ({job['kind']} {job['kernel']}); "
        f"follow it with `mlafleet jobs {job['id']}`"
    )


def _progress_table(job: dict[str, Any]) -> Table:
    table = Table(title=f"job {job['id']}: {job['name']} ({job['status']})")
    for column in ("arch", "tasks", "done", "running", "waiting", "failed", "trials", "message"):
        table.add_column(column)
    for p in job.get("progress", []):
        done = p["succeeded"] + p["failed"] + p["cancelled"]
        table.add_row(
            p["arch"],
            str(p["tasks_total"]),
            str(done),
            str(p["running"]),
            str(p["waiting"]),
            str(p["failed"]),
            str(p["trials"]),
            p["message"],
        )
    return table


def jobs(
    job_id: Annotated[int | None, typer.Argument(help="one job's details", min=1)] = None,
    status: Annotated[str | None, typer.Option("--status", help="only jobs in this state")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="jobs to list")] = 50,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List fleet jobs, or show one job with its progress per architecture."""
    with _client(api) as client:
        if job_id is not None:
            job = _request(client, "GET", f"/v1/jobs/{job_id}")
            if as_json:
                out.print_json(data=job)
                return
            out.print(f"{job['kind']} {job['kernel']}: {job['message']}", highlight=False)
            out.print(_progress_table(job))
            return
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        page = _request(client, "GET", "/v1/jobs", params=params)
    if as_json:
        out.print_json(data=page)
        return
    if not page["items"]:
        out.print("no jobs yet; submit one with `mlafleet submit JOB.yaml`")
        return
    table = Table(title=f"jobs ({page['total']} in all)")
    for column in ("id", "name", "kind", "kernel", "status", "tasks", "trials", "created"):
        table.add_column(column)
    for j in page["items"]:
        table.add_row(
            str(j["id"]),
            j["name"],
            j["kind"],
            j["kernel"],
            j["status"],
            f"{j['tasks_done']}/{j['tasks_total']}",
            str(j["trials"]),
            j["created_at"][:19],
        )
    out.print(table)


def cancel(
    job_id: Annotated[int, typer.Argument(help="the job to cancel", min=1)],
    api: ApiOpt = None,
) -> None:
    """Cancel a fleet job (needs MLAFLEET_API_TOKEN when the server has one)."""
    with _client(api) as client:
        job = _request(client, "DELETE", f"/v1/jobs/{job_id}")
    out.print(f"job {job['id']} {job['status']}: {job['message']}", highlight=False)


def _write_bundle(bundle: ConfigBundle, target: Path) -> None:
    """Write atomically (a half-written bundle is never read by a running process)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".configs-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(bundle.model_dump_json(indent=2))
        os.replace(tmp, target)
    except OSError as exc:
        _fail(f"cannot write {target}: {exc.strerror or exc}; choose another --out")


def _report(bundle: ConfigBundle, target: Path) -> None:
    from mlafleet.kernels.runtime_configs import bundle_path

    archs = sorted({e.arch for e in bundle.entries})
    out.print(
        f"wrote {len(bundle.entries)} config(s) for {', '.join(archs) or 'no architecture'} "
        f"to {target}",
        highlight=False,
    )
    if not bundle.entries:
        err.print("the bundle is empty: no recommendation matches; run a tune job first")
    if target.resolve() != bundle_path().resolve():
        out.print(
            f"the kernels read {bundle_path()}; set MLAFLEET_CONFIGS={target} to use this file",
            highlight=False,
        )


def _out_path(out_file: Path | None) -> Path:
    from mlafleet.kernels.runtime_configs import bundle_path

    return out_file if out_file is not None else bundle_path()


def pull(
    api: ApiOpt = None,
    arch: ArchOpt = None,
    kernel: KernelOpt = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="bundle file (default: MLAFLEET_CONFIGS or the user cache)"),
    ] = None,
) -> None:
    """Fetch a config bundle from the API for run-time use by mla_decode / mla_prefill."""
    params = {k: v for k, v in (("arch", arch), ("kernel", kernel)) if v}
    with _client(api) as client:
        data = _request(client, "GET", "/v1/bundle", params=params)
    try:
        bundle = ConfigBundle.model_validate(data)
    except ValueError as exc:
        _fail(f"the API sent an invalid bundle ({str(exc).splitlines()[0]}); upgrade mlafleet")
    target = _out_path(out_file)
    _write_bundle(bundle, target)
    _report(bundle, target)


def export(
    out_file: Annotated[Path, typer.Option("--out", help="bundle file to write")],
    db: Annotated[
        str | None, typer.Option("--db", help="database URL (default: MLAFLEET_DB_URL)")
    ] = None,
    arch: ArchOpt = None,
    kernel: KernelOpt = None,
) -> None:
    """Write a config bundle straight from a database (no API needed)."""
    from sqlalchemy.engine import make_url

    from ..bundle_export import export_bundle
    from ..db.session import open_database, session_scope

    if kernel is not None and kernel not in ("mla_decode", "mla_prefill"):
        _fail(f"--kernel: expected mla_decode or mla_prefill, got {kernel!r}")
    url = db or _settings().db_url
    try:
        engine, factory = open_database(url)
        with session_scope(factory) as session:
            bundle = export_bundle(
                session=session,
                source=make_url(url).render_as_string(hide_password=True),
                arch=arch,
                kernel=kernel,
            )
        engine.dispose()
    except MlafleetError as exc:
        _fail(str(exc))
    _write_bundle(bundle, out_file)
    _report(bundle, out_file)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(submit)
    app.command()(jobs)
    app.command()(cancel)
    app.command()(pull)
    app.command()(export)


__all__ = ["register"]
