"""Settings of the orchestrator, API, CLI and dashboard, from ``MLAFLEET_*`` environment variables.

One ``Settings`` model, reached through the cached ``get_settings()`` (tests call
``get_settings.cache_clear()`` after changing the environment). Nothing is read at import.
"""

from __future__ import annotations

import functools
from pathlib import Path

import platformdirs
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import SettingsError


def default_data_dir() -> Path:
    """Where the default SQLite database lives (the user's data folder)."""
    return Path(platformdirs.user_data_dir("mlafleet"))


def default_db_url() -> str:
    return f"sqlite:///{default_data_dir() / 'mlafleet.db'}"


class Settings(BaseSettings):
    """Every knob of a running mlafleet service; each field is ``MLAFLEET_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MLAFLEET_", extra="ignore")

    db_url: str = Field(default_factory=default_db_url, description="SQLAlchemy database URL")
    ray_address: str | None = Field(
        default=None, description="Ray cluster to join (ray://... or host:port); None starts one"
    )
    api_url: str = Field(default="http://127.0.0.1:8000", description="API base URL for clients")
    api_token: str | None = Field(
        default=None, description="bearer token required for POST/DELETE; None leaves them open"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    dashboard_port: int = Field(default=8501, ge=1, le=65535)
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="largest request body")
    max_workloads_per_job: int = Field(default=4096, ge=1)
    max_task_attempts: int = Field(default=3, ge=1, description="retries of a task whose node died")
    job_poll_s: float = Field(default=1.0, gt=0)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process.

    Raises:
        SettingsError: an environment variable holds a bad value (the message names it).
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MLAFLEET_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}; fix the environment variable") from None
