"""FastAPI dependencies: settings, database sessions, and the bearer-token check.

Routes get a session through ``SessionDep`` (one transaction per request, committed at the
end, rolled back and turned into ``StorageError`` on a database error) and settings through
``SettingsDep``. ``require_token`` guards every route that changes something.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from mlafleet.orchestrator.config import Settings
from mlafleet.orchestrator.db.session import session_scope


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_session_factory(request: Request) -> sessionmaker[Session]:
    """The app's session factory (bound to ``settings.db_url``)."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def get_session(
    factory: Annotated[sessionmaker[Session], Depends(get_session_factory)],
) -> Iterator[Session]:
    """One transaction for the request.

    Raises:
        StorageError: the database failed; the transaction was rolled back.
    """
    with session_scope(factory) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# scope="function": commit (or roll back) before the response is sent, so a failed commit
# becomes a 503 instead of a 2xx for a change that did not happen.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(
    auto_error=False,
    description="MLAFLEET_API_TOKEN of the server; needed for POST and DELETE when it is set",
)


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse a change without the server's bearer token (when one is configured).

    Raises:
        HTTPException: 401 with a message saying which header to send.
    """
    expected = settings.api_token
    if not expected:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(
            401,
            "this request changes data and needs the header 'Authorization: Bearer <token>' "
            "with the server's MLAFLEET_API_TOKEN (the CLI reads MLAFLEET_API_TOKEN too)",
            headers=challenge,
        )
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(
            401,
            "bearer token not accepted; use the MLAFLEET_API_TOKEN the server was started with",
            headers=challenge,
        )


TokenDep = Depends(require_token)

__all__ = [
    "SessionDep",
    "SettingsDep",
    "TokenDep",
    "get_app_settings",
    "get_session",
    "get_session_factory",
    "require_token",
]
