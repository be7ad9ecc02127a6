"""Domain errors of the orchestrator; the API and CLI turn them into clear messages."""

from __future__ import annotations


class MlafleetError(Exception):
    """Base of every orchestrator error; its message says what to do."""


class SettingsError(MlafleetError):
    """An ``MLAFLEET_*`` environment variable holds a bad value."""


class StorageError(MlafleetError):
    """A database operation failed; the transaction was rolled back."""


class SchemaOutdatedError(StorageError):
    """The database schema is behind the code: run ``mlafleet db upgrade``."""


class NotFoundError(MlafleetError):
    """A job, task or config that does not exist (the message names the id)."""


class JobSpecError(MlafleetError):
    """An invalid job spec; ``problems`` lists every problem at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid job spec:\n" + "\n".join(f"  - {p}" for p in problems))


class JobStateError(MlafleetError):
    """An operation the job's current state does not allow (e.g. cancelling a finished job)."""
