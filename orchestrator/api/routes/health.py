"""``GET /healthz`` (liveness and database reachability) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlafleet.orchestrator.db import queries
from mlafleet.orchestrator.db.session import session_scope
from mlafleet.orchestrator.errors import MlafleetError

from ..deps import get_session_factory
from ..schemas import Health

router = APIRouter(tags=["health"])


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlafleet")
    except PackageNotFoundError:
        return "unknown"


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "the database cannot be reached"}},
    summary="Liveness and database reachability",
)
def healthz(request: Request) -> Response:
    """200 with ``status: ok`` when the service and its database answer; 503 otherwise."""
    try:
        with session_scope(get_session_factory(request)) as session:
            queries.ping(session=session)
        database = "ok"
    except MlafleetError as exc:
        database = f"unreachable: {exc}"
    health = Health(
        status="ok" if database == "ok" else "degraded", version=_version(), database=database
    )
    return JSONResponse(health.model_dump(), status_code=200 if database == "ok" else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics (requests and latency per route)",
)
def metrics(request: Request) -> Response:
    """Request counts and latency histograms per route, in the Prometheus text format."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


__all__ = ["router"]
