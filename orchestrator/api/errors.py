"""Every error the API returns is JSON ``{"detail": ..., "problems": [...]}`` a person can act on.

``detail`` says what is wrong and what to do; ``problems`` lists each problem of a refused body
or query (one line each, naming the field). Handlers here turn framework and domain exceptions
into that form; nothing leaks a traceback to the client (the server log has it).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from mlafleet.orchestrator.errors import (
    JobSpecError,
    JobStateError,
    MlafleetError,
    NotFoundError,
    SchemaOutdatedError,
    StorageError,
)

from .schemas import ErrorBody

logger = logging.getLogger(__name__)

_MAX_INPUT_REPR = 80
_MAX_PROBLEMS = 50


def error_response(
    status: int,
    detail: str,
    problems: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The one error shape of the API."""
    body = ErrorBody(detail=detail, problems=(problems or [])[:_MAX_PROBLEMS])
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_INPUT_REPR else text[: _MAX_INPUT_REPR - 3] + "..."


def validation_problems(errors: list[Any]) -> list[str]:
    """One line per pydantic/FastAPI validation error: ``query.batch: <msg> (got 0)``."""
    out = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "invalid value")
        line = f"{loc}: {msg}"
        if "input" in err and err.get("type") != "missing":
            line += f" (got {_short(err['input'])})"
        out.append(line)
    return out


def _allowed_methods(request: Request) -> str:
    """Every method some route accepts on this path (Starlette names only the first route's)."""
    allowed = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        scope = dict(request.scope, method=method)
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            allowed.append(method)
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and exc.detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; see /docs for the API's routes"
    elif exc.status_code == 405:
        allowed = _allowed_methods(request) or "see /docs"
        headers["Allow"] = allowed
        detail = f"method {request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    else:
        detail = str(exc.detail)
    return error_response(exc.status_code, detail, headers=headers or None)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = validation_problems(list(exc.errors()))
    n = len(problems)
    detail = f"invalid request: {problems[0]}" if n == 1 else f"invalid request: {n} problems"
    if n > 1:
        detail += f"; first: {problems[0]}"
    return error_response(422, detail, problems)


async def _job_spec_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JobSpecError)
    n = len(exc.problems)
    first = exc.problems[0] if exc.problems else ""
    detail = f"invalid job spec ({n} problem{'s' if n != 1 else ''}): {first}"
    if n > 1:
        detail += f"; and {n - 1} more in 'problems'"
    return error_response(422, detail, list(exc.problems))


async def _not_found(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc))


async def _conflict(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, str(exc))


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("storage error on %s %s: %s", request.method, request.url.path, exc)
    if isinstance(exc, SchemaOutdatedError):
        return error_response(503, str(exc))
    return error_response(
        503,
        "the database is unavailable or refused the operation; check that it is up and that "
        "MLAFLEET_DB_URL points at it, then retry",
    )


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, str(exc))


async def _unexpected(request: Request, _exc: Exception) -> JSONResponse:
    ref = uuid.uuid4().hex[:12]
    logger.exception("unhandled error %s on %s %s", ref, request.method, request.url.path)
    return error_response(
        500, f"internal error (reference {ref}); the server log has the details, please report it"
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (most specific exception first)."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(JobSpecError, _job_spec_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(JobStateError, _conflict)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(MlafleetError, _domain_error)
    app.add_exception_handler(Exception, _unexpected)


__all__ = ["error_response", "install_error_handlers", "validation_problems"]
