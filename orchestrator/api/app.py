"""The FastAPI application: ``create_app(settings)`` (mounted by ``mlafleet serve``).

Routes (``docs/API.md``; OpenAPI at ``/docs``): jobs, architectures, config lookup, bundles,
raw results, ``/healthz``, ``/metrics``. Every error is JSON ``{"detail", "problems"}``
(``errors.py``); bodies over ``settings.max_body_bytes`` are refused with 413; ``POST`` and
``DELETE`` need ``Authorization: Bearer <MLAFLEET_API_TOKEN>`` when a token is set.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from mlafleet.orchestrator.config import Settings, get_settings

from .errors import install_error_handlers
from .lookup_cache import FastConfigLookups, RecommendationCache
from .middleware import BodySizeLimit, Metrics
from .routes import archs, bundle, configs, health, jobs, results
from .schemas import ErrorBody

API_DESCRIPTION = """\
mlafleet tunes, validates and serves Multi-head Latent Attention (DeepSeek MLA) Triton kernels
across a GPU fleet. Submit tuning and validation jobs, follow them per architecture, and fetch
the recommended config for a workload (with its fallback level, measurements and provenance)
or a whole config bundle for `MLAFLEET_CONFIGS`.

Reads are open. `POST` and `DELETE` need `Authorization: Bearer <token>` when the server has
`MLAFLEET_API_TOKEN` set. Every error is JSON: `{"detail": "...", "problems": ["..."]}`.
"""

_ERRORS = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (413, "request body too large"),
        (422, "invalid request; every problem listed"),
        (500, "internal error (reference in the message)"),
        (503, "the database is unavailable"),
    )
}


def create_app(
    settings: Settings | None = None, *, session_factory: sessionmaker[Session] | None = None
) -> FastAPI:
    """Build the API app.

    Args:
        settings: the service settings; default ``get_settings()`` (``MLAFLEET_*``).
        session_factory: sessions on an already opened database (``serve`` shares its
            engine); default: open ``settings.db_url``, refusing an outdated schema.

    Raises:
        SchemaOutdatedError: the database schema is behind the code (run `mlafleet db upgrade`).
        StorageError: the database URL is invalid or the database cannot be reached.
    """
    settings = settings or get_settings()
    if session_factory is None:
        from mlafleet.orchestrator.db.session import open_database

        _, session_factory = open_database(settings.db_url)
    app = FastAPI(
        title="mlafleet API",
        version=health._version(),
        description=API_DESCRIPTION,
        responses=_ERRORS,  # type: ignore[arg-type]
    )
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.registry = CollectorRegistry()
    install_error_handlers(app)
    for module in (health, jobs, archs, configs, bundle, results):
        app.include_router(module.router)
    app.state.rec_cache = RecommendationCache(session_factory)
    # the last added is the outermost: metrics see every request, including refused bodies
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(FastConfigLookups, state=app.state)
    app.add_middleware(Metrics, registry=app.state.registry)
    _add_job_spec_schema(app)
    return app


def _add_job_spec_schema(app: FastAPI) -> None:
    """Publish the ``JobSpec`` schema (the POST /v1/jobs body, parsed by hand for YAML)."""
    from typing import Any

    from mlafleet.orchestrator.jobspec import JobSpec

    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            spec = JobSpec.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}"
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in spec.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components["JobSpec"] = spec
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["create_app"]
