"""``/v1/jobs``: submit (JSON or YAML job spec), list, inspect and cancel fleet jobs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from mlafleet.orchestrator.db import repo
from mlafleet.orchestrator.errors import JobSpecError
from mlafleet.orchestrator.jobspec import JobSpec, parse_job_spec

from ..deps import SessionDep, SettingsDep, TokenDep
from ..schemas import MAX_PAGE_SIZE, ErrorBody, JobPublic, JobStatus, Page, TaskPublic, TaskStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_ID = 2**31 - 1  # ids are 32-bit INTEGER columns on PostgreSQL
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="job id")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="items to skip")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="items per page")]

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
_Responses = dict[int | str, dict[str, Any]]
_NOT_FOUND: _Responses = {404: {"model": ErrorBody, "description": "no such job"}}
_AUTH: _Responses = {401: {"model": ErrorBody, "description": "missing or wrong bearer token"}}


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: a "billion laughs" document cannot expand."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not accepted in job specs", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_body(raw: bytes, content_type: str) -> Any:
    """The body as Python data, by content type.

    Raises:
        HTTPException: 415 for another content type.
        JobSpecError: a body that is not valid JSON / YAML (422).
    """
    media = content_type.split(";")[0].strip().lower()
    if media in JSON_TYPES or media == "":
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise JobSpecError(
                [f"body: not valid JSON ({_first_line(exc)}); send a job spec"]
            ) from None
    if media in YAML_TYPES:
        try:
            return yaml.load(raw, Loader=_NoAliasLoader)
        except (yaml.YAMLError, RecursionError) as exc:
            raise JobSpecError([f"body: not valid YAML ({_first_line(exc)})"]) from None
    raise HTTPException(
        415,
        f"Content-Type {media!r} is not accepted; send the job spec as application/json "
        "or application/yaml",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


async def _spec_from_body(request: Request, settings: SettingsDep) -> JobSpec:
    """The request body parsed and validated as a job spec (every problem listed)."""
    raw = await request.body()
    data = parse_body(raw, request.headers.get("content-type", ""))
    where = _find_nul(data)
    if where is not None:
        raise JobSpecError([f"{where}: NUL characters (\\u0000) are not accepted; remove them"])
    return parse_job_spec(data, max_workloads=settings.max_workloads_per_job)


def _find_nul(data: Any) -> str | None:
    """Path of the first string (key or value) holding a NUL character (PostgreSQL refuses
    them in text), or None."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    return path or "body"
                stack.append((f"{path}.{key}" if path else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value))
    return None


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    dependencies=[TokenDep],
    responses={
        **_AUTH,
        415: {"model": ErrorBody, "description": "body neither JSON nor YAML"},
        422: {"model": ErrorBody, "description": "invalid job spec; every problem listed"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
                "application/yaml": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
            },
        }
    },
    summary="Submit a fleet tuning or validation job",
)
def submit_job(
    spec: Annotated[JobSpec, Depends(_spec_from_body)], session: SessionDep
) -> JobPublic:
    """Queue a job from a job spec (JSON, or YAML with ``Content-Type: application/yaml``).

    An invalid spec is refused with 422 and every problem in ``problems``.
    """
    return repo.create_job(session, spec=spec)


@router.get("", response_model=Page[JobPublic], summary="Jobs, newest first")
def list_jobs(
    session: SessionDep,
    status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> Page[JobPublic]:
    """Jobs with status and progress per architecture, newest first, paged."""
    return repo.list_jobs(session, status=status, offset=offset, limit=limit)


@router.get(
    "/{job_id}", response_model=JobPublic, responses=_NOT_FOUND, summary="One job with progress"
)
def get_job(job_id: JobId, session: SessionDep) -> JobPublic:
    """The job, its status, and its progress per architecture."""
    return repo.get_job_or_raise(session, job_id=job_id)


@router.get(
    "/{job_id}/tasks",
    response_model=Page[TaskPublic],
    responses=_NOT_FOUND,
    summary="The tasks of a job (workload x architecture)",
)
def list_tasks(
    job_id: JobId,
    session: SessionDep,
    arch: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")] = None,
    status: Annotated[TaskStatus | None, Query()] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> Page[TaskPublic]:
    """A job's tasks, paged, optionally of one architecture and/or status."""
    repo.get_job_or_raise(session, job_id=job_id)
    return repo.list_tasks(
        session, job_id=job_id, arch=arch, status=status, offset=offset, limit=limit
    )


@router.delete(
    "/{job_id}",
    response_model=JobPublic,
    dependencies=[TokenDep],
    responses={
        **_NOT_FOUND,
        **_AUTH,
        409: {"model": ErrorBody, "description": "the job already finished"},
    },
    summary="Cancel a job",
)
def cancel_job(job_id: JobId, session: SessionDep) -> JobPublic:
    """Cancel a job: at once if it has not started, else its tasks are stopped (``cancelling``)."""
    return repo.cancel_job(session, job_id=job_id)


__all__ = ["parse_body", "router"]
