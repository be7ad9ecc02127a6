"""The dashboard's only client of the mlafleet API (HTTP, read mostly).

Pages call the functions here and get DataFrames (or plain values) back; nothing else in the
dashboard opens a connection. The ``httpx.Client`` is cached per API URL with
``st.cache_resource``; reads are cached with ``st.cache_data(ttl=...)`` keyed by the API URL
and their filters. Failures raise ``ApiUnreachableError`` (nothing answers at the URL) or
``ApiError`` (the API answered with an error); ``ui.api_guard`` turns both into a message.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import httpx
import pandas as pd
import streamlit as st
from pydantic import BaseModel, ValidationError

from mlafleet.orchestrator.api.schemas import (
    MAX_PAGE_SIZE,
    ArchSummary,
    BucketSummary,
    ConfigBundle,
    JobPublic,
    RecommendationPublic,
    ResultsSummary,
    TrialPublic,
)

from .flatten import (
    ARCH_COLUMNS,
    JOB_COLUMNS,
    PROGRESS_COLUMNS,
    RECOMMENDATION_COLUMNS,
    TRIAL_COLUMNS,
    archs_frame,
    jobs_frame,
    progress_frame,
    recommendations_frame,
    trial_row,
    trials_frame,
)
from .summaries import BUCKET_COLUMNS, SUMMARY_COLUMNS, buckets_frame, summary_frame

M = TypeVar("M", bound=BaseModel)

API_URL_ENV = "MLAFLEET_API_URL"
DEFAULT_API_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 10.0
RESULTS_PAGE_SIZE = MAX_PAGE_SIZE
RESULTS_MAX_ROWS = 50_000
"""``workload_results`` pages through ``/v1/results`` up to this many trials, then says so."""

__all__ = [
    "ARCH_COLUMNS",
    "BUCKET_COLUMNS",
    "JOB_COLUMNS",
    "PROGRESS_COLUMNS",
    "RECOMMENDATION_COLUMNS",
    "SUMMARY_COLUMNS",
    "TRIAL_COLUMNS",
    "ApiError",
    "ApiUnreachableError",
    "api_url",
    "archs",
    "buckets",
    "bundle",
    "cancel_job",
    "config_summary",
    "health",
    "job_progress",
    "jobs",
    "recommendations",
    "results",
    "submit_job",
    "trial",
    "workload_results",
]


class ApiUnreachableError(Exception):
    """Nothing answered at the API URL."""

    def __init__(self, url: str, cause: str) -> None:
        self.url = url
        super().__init__(
            f"API unreachable at {url} ({cause}): start it with `mlafleet serve`, or point the "
            f"dashboard elsewhere with `mlafleet dashboard --api URL`"
        )


class ApiError(Exception):
    """The API answered with an error status; ``message`` is its JSON detail."""

    def __init__(self, status_code: int, message: str) -> None:
        self.status_code = status_code
        self.message = message
        super().__init__(f"API error {status_code}: {message}")


def api_url() -> str:
    """The API base URL: ``MLAFLEET_API_URL`` or the default, without a trailing slash."""
    return (os.environ.get(API_URL_ENV) or DEFAULT_API_URL).rstrip("/")


@st.cache_resource(show_spinner=False)
def _client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=TIMEOUT_S, follow_redirects=True)


def _detail(response: httpx.Response) -> str:
    """The error message of an API response (its JSON ``detail``/``message``, else the text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("problems"), list) and body["problems"]:
        return f"{body.get('detail', '')}: " + "; ".join(str(p) for p in body["problems"])
    if isinstance(body, dict):
        detail = body.get("detail", body.get("message", body))
        if isinstance(detail, list):  # FastAPI validation errors: one line per problem
            return "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', item)}"
                if isinstance(item, dict)
                else str(item)
                for item in detail
            )
        return str(detail)
    return str(body)


def _request(
    base_url: str,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    json: Any = None,
    token: str | None = None,
) -> Any:
    """One request; returns the decoded JSON body.

    Raises:
        ApiUnreachableError: connection refused, DNS failure, timeout.
        ApiError: a 4xx/5xx answer (with the API's message).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
    try:
        response = _client(base_url).request(method, path, params=clean, json=json, headers=headers)
    except httpx.TransportError as exc:
        raise ApiUnreachableError(base_url, type(exc).__name__) from None
    if response.status_code >= 400:
        raise ApiError(response.status_code, _detail(response))
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise ApiError(response.status_code, f"expected JSON from {path}") from None


def _items(body: Any) -> list[Any]:
    """The list inside a list response (``[...]`` or a page ``{"items": [...]}``)."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        return list(body["items"])
    raise ApiError(200, f"expected a list or a page with items, got {type(body).__name__}")


def _parse(model: type[M], body: Any, *, path: str) -> M:
    """Validate one API object with the orchestrator's own model.

    Raises:
        ApiError: the answer does not match the model (API and dashboard versions differ).
    """
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(
            200,
            f"unexpected answer from {path} ({model.__name__}.{where}: {first['msg']}); "
            "are the API and the dashboard the same mlafleet version?",
        ) from None


@st.cache_data(ttl=5, show_spinner=False)
def health(base_url: str) -> dict[str, Any]:
    """``GET /healthz``."""
    body = _request(base_url, "GET", "/healthz")
    return body if isinstance(body, dict) else {"status": str(body)}


def _jobs(base_url: str) -> list[JobPublic]:
    body = _request(base_url, "GET", "/v1/jobs", params={"limit": 200})
    return [_parse(JobPublic, item, path="/v1/jobs") for item in _items(body)]


@st.cache_data(ttl=10, show_spinner=False)
def jobs(base_url: str) -> pd.DataFrame:
    """``GET /v1/jobs``: one row per job (``JOB_COLUMNS``)."""
    return jobs_frame(_jobs(base_url))


@st.cache_data(ttl=10, show_spinner=False)
def job_progress(base_url: str) -> pd.DataFrame:
    """Progress per job and architecture (``PROGRESS_COLUMNS``), from ``GET /v1/jobs``."""
    return progress_frame(_jobs(base_url))


@st.cache_data(ttl=30, show_spinner=False)
def archs(base_url: str) -> pd.DataFrame:
    """``GET /v1/archs``: one row per architecture of the fleet (``ARCH_COLUMNS``)."""
    body = _request(base_url, "GET", "/v1/archs")
    return archs_frame(_parse(ArchSummary, item, path="/v1/archs") for item in _items(body))


@st.cache_data(ttl=30, show_spinner=False)
def bundle(base_url: str, arch: str | None, kernel: str | None) -> tuple[str, int]:
    """``GET /v1/bundle``: the bundle as JSON text (for download) and its number of entries."""
    body = _request(base_url, "GET", "/v1/bundle", params={"arch": arch, "kernel": kernel})
    parsed = _parse(ConfigBundle, body, path="/v1/bundle")
    return parsed.model_dump_json(indent=2), len(parsed.entries)


@st.cache_data(ttl=30, show_spinner=False)
def recommendations(base_url: str, kernel: str) -> pd.DataFrame:
    """Every recommendation of ``kernel``, withdrawn ones included (``RECOMMENDATION_COLUMNS``).

    ``GET /v1/recommendations?kernel=...&include_withdrawn=true``.
    """
    body = _request(
        base_url,
        "GET",
        "/v1/recommendations",
        params={"kernel": kernel, "include_withdrawn": "true"},
    )
    return recommendations_frame(
        _parse(RecommendationPublic, item, path="/v1/recommendations") for item in _items(body)
    )


@st.cache_data(ttl=120, show_spinner="Reading trial results from the API…")
def results(base_url: str, filters: tuple[tuple[str, Any], ...]) -> tuple[pd.DataFrame, int]:
    """``GET /v1/results``, page by page, flattened (``TRIAL_COLUMNS``).

    Args:
        base_url: the API URL.
        filters: query parameters as sorted ``(name, value)`` pairs (hashable for the cache).

    Returns:
        ``(trials, total)``: at most ``RESULTS_MAX_ROWS`` trials, and how many matched.
    """
    trials: list[TrialPublic] = []
    offset = 0
    total = 0
    while len(trials) < RESULTS_MAX_ROWS:
        params = {**dict(filters), "limit": RESULTS_PAGE_SIZE, "offset": offset}
        body = _request(base_url, "GET", "/v1/results", params=params)
        page = [_parse(TrialPublic, item, path="/v1/results") for item in _items(body)]
        trials.extend(page)
        total = int(body.get("total", len(trials))) if isinstance(body, dict) else len(trials)
        offset += len(page)
        if not page or offset >= total:
            break
    return trials_frame(trials), max(total, len(trials))


@st.cache_data(ttl=30, show_spinner=False)
def buckets(base_url: str, kernel: str, arch: str | None) -> pd.DataFrame:
    """``GET /v1/buckets``: workload buckets with trials, per arch (``BUCKET_COLUMNS``);
    buckets where every config failed included."""
    body = _request(base_url, "GET", "/v1/buckets", params={"kernel": kernel, "arch": arch})
    return buckets_frame(_parse(BucketSummary, item, path="/v1/buckets") for item in _items(body))


@st.cache_data(ttl=60, show_spinner="Summarising trial results…")
def config_summary(
    base_url: str, kernel: str, arch: str | None, bucket: str | None
) -> tuple[pd.DataFrame, str]:
    """``GET /v1/results/summary``: one row per (arch, config), aggregated by the API.

    Returns:
        ``(summary, note)``: ``SUMMARY_COLUMNS`` rows, fastest first; ``note`` is empty, or
        says that the API left configs out (its row cap).
    """
    params = {"kernel": kernel, "arch": arch, "bucket": bucket}
    body = _request(base_url, "GET", "/v1/results/summary", params=params)
    parsed = _parse(ResultsSummary, body, path="/v1/results/summary")
    note = ""
    if parsed.truncated:
        note = (
            f"Showing the {len(parsed.items)} fastest of {parsed.configs} configs "
            f"({parsed.trials} trials); the slower ones are left out."
        )
    return summary_frame(parsed.items), note


@st.cache_data(ttl=300, show_spinner=False)
def trial(base_url: str, trial_id: int) -> dict[str, Any]:
    """``GET /v1/results/{id}``: one trial, flattened (``TRIAL_COLUMNS`` keys), samples
    included."""
    path = f"/v1/results/{int(trial_id)}"
    return trial_row(_parse(TrialPublic, _request(base_url, "GET", path), path=path))


def submit_job(base_url: str, spec: dict[str, Any], *, token: str | None) -> dict[str, Any]:
    """``POST /v1/jobs``; returns the API's answer (with the new job's id)."""
    body = _request(base_url, "POST", "/v1/jobs", json=spec, token=token)
    jobs.clear()
    job_progress.clear()
    return body if isinstance(body, dict) else {"id": body}


def cancel_job(base_url: str, job_id: str, *, token: str | None) -> dict[str, Any]:
    """``DELETE /v1/jobs/{id}``; returns the API's answer."""
    body = _request(base_url, "DELETE", f"/v1/jobs/{job_id}", token=token)
    jobs.clear()
    job_progress.clear()
    return body if isinstance(body, dict) else {"id": job_id}


def workload_results(
    base_url: str, *, kernel: str, arch: str | None, bucket: str | None
) -> tuple[pd.DataFrame, str]:
    """Every trial of ``kernel`` (on ``arch``, or on every arch), of one bucket or all.

    The raw trials, paged (cached per kernel, architecture and bucket); the pages use the
    aggregated ``config_summary`` instead, which stays fast on tens of thousands of trials.

    Returns:
        ``(trials, note)``: ``note`` is empty, or says that only the first
        ``RESULTS_MAX_ROWS`` trials were read.
    """
    filters = {"kernel": kernel, "arch": arch, "bucket": bucket}
    trials, total = results(
        base_url, tuple(sorted((k, v) for k, v in filters.items() if v is not None))
    )
    note = ""
    if total > len(trials):
        note = (
            f"Read the first {len(trials)} of {total} trials of {kernel}"
            f"{' on ' + arch if arch else ''}; this view may miss some."
        )
    return trials, note
