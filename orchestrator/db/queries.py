"""Read-side queries the HTTP API needs that the repo modules do not have.

Keyword-only functions on an open session; the job, trial, architecture and recommendation
reads are in ``repo_jobs``, ``repo_results`` and ``repo_fleet``.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session


def ping(*, session: Session) -> None:
    """Run ``SELECT 1`` (the health probe).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached (``session_scope``
            turns it into ``StorageError``).
    """
    session.execute(select(1)).scalar_one()


__all__ = ["ping"]
