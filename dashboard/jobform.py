"""The Jobs page's form -> a job spec, validated exactly as the API validates it.

Pure (no Streamlit, no HTTP): ``spec_from_form`` turns the form's text fields into a spec
mapping, and ``check_spec`` runs the orchestrator's own ``parse_job_spec`` on it so the form
lists every problem at once, before anything is sent.
"""

from __future__ import annotations

from typing import Any

from mlafleet.orchestrator.errors import JobSpecError
from mlafleet.orchestrator.jobspec import JobSpec, parse_job_spec


def int_list(text: str, *, field: str, problems: list[str]) -> list[int] | None:
    """``"1, 64"`` -> ``[1, 64]``; an unreadable entry is added to ``problems``; empty -> None."""
    values: list[int] = []
    for raw in text.replace(";", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            values.append(int(item))
        except ValueError:
            problems.append(
                f"workloads.{field}: expected whole numbers separated by commas, got {item!r}"
            )
    return values or None


def spec_from_form(
    *,
    kind: str,
    name: str,
    kernel: str,
    batch: str,
    seqlen: str,
    heads: str,
    s_q: str,
    dtypes: list[str],
    page_size: str,
    archs: str,
    strategy: str,
    budget_trials: int,
    budget_minutes: float,
    validate: bool,
) -> tuple[dict[str, Any], list[str]]:
    """A job spec mapping from the form's fields, and the problems found reading them.

    Zero budgets mean "no limit"; ``archs`` is ``all`` or a comma-separated list; the decode-only
    axes (``s_q``, ``page_size``) are left out when empty.
    """
    problems: list[str] = []
    workloads: dict[str, Any] = {}
    for field, text in (("batch", batch), ("seqlen", seqlen), ("heads", heads)):
        values = int_list(text, field=field, problems=problems)
        if values is None:
            problems.append(f"workloads.{field}: give at least one value, e.g. 1, 64")
        else:
            workloads[field] = values
    for field, text in (("s_q", s_q), ("page_size", page_size)):
        values = int_list(text, field=field, problems=problems)
        if values is not None:
            workloads[field] = values
    workloads["dtype"] = list(dtypes)
    arch_text = archs.strip()
    arch_value: str | list[str] = (
        "all"
        if arch_text in ("", "all")
        else [a.strip() for a in arch_text.split(",") if a.strip()]
    )
    budget: dict[str, Any] = {}
    if budget_trials > 0:
        budget["trials"] = int(budget_trials)
    if budget_minutes > 0:
        budget["minutes"] = float(budget_minutes)
    spec: dict[str, Any] = {
        "kind": kind,
        "name": name.strip(),
        "kernel": kernel,
        "archs": arch_value,
        "strategy": strategy,
        "budget": budget,
        "validate": validate,
    }
    if kind == "tune" or any(workloads.get(f) for f in ("batch", "seqlen", "heads")):
        spec["workloads"] = workloads
    return spec, problems


def check_spec(spec: dict[str, Any] | str) -> tuple[JobSpec | None, list[str]]:
    """``parse_job_spec`` (the API's own validation): the spec, or every problem with it."""
    try:
        return parse_job_spec(spec), []
    except JobSpecError as exc:
        return None, list(exc.problems)
