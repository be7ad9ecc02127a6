"""Cached recommendations for ``GET /v1/configs`` (the route served at 1000+ requests/s).

The active recommendations of a kernel are read from the database at most once per
``ttl_s``; a stale copy keeps being served while one background thread refreshes it, so no
request waits on the database except the very first of a kernel. Answers are memoized per
query until the next refresh. Results are at most ``ttl_s`` (plus one refresh) old.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlafleet.kernels.bundle import BundleEntry
from mlafleet.orchestrator.bundle_export import entry_of
from mlafleet.orchestrator.db import repo
from mlafleet.orchestrator.db.models import Recommendation
from mlafleet.orchestrator.db.session import session_scope
from mlafleet.orchestrator.schemas import RecommendationPublic

logger = logging.getLogger(__name__)

_MAX_MEMO = 16384


@dataclass
class _Snapshot:
    recs: list[RecommendationPublic]
    entries: list[BundleEntry]
    loaded_at: float
    rec_of: dict[int, RecommendationPublic] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)
    responses: dict[bytes, bytes] = field(default_factory=dict)
    stamp: tuple[Any, ...] = ()


def _version(snap: _Snapshot) -> list[tuple[int, Any, bool]]:
    """What identifies a snapshot's content: each recommendation's id, update time, state."""
    return [(r.id, r.updated_at, r.withdrawn) for r in snap.recs]


class RecommendationCache:
    """Per-kernel snapshots of the active recommendations, refreshed in the background."""

    def __init__(self, factory: sessionmaker[Session], *, ttl_s: float = 1.0) -> None:
        self._factory = factory
        self._ttl_s = ttl_s
        self._snapshots: dict[str, _Snapshot] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def _stamp(session: Session, kernel: str) -> tuple[Any, ...]:
        """One aggregate row that changes whenever a recommendation of ``kernel`` is added,
        updated or withdrawn: lets a refresh skip reloading (and re-validating) every row."""
        rec = Recommendation
        row = session.execute(
            select(
                func.count(rec.id),
                func.max(rec.id),
                func.max(rec.updated_at),
                func.max(rec.withdrawn_at),
                func.sum(rec.withdrawn.cast(Integer)),
            ).where(rec.kernel == kernel)
        ).one()
        return tuple(row)

    def _load(self, kernel: str, *, unless_stamp: tuple[Any, ...] = ()) -> _Snapshot | None:
        """A fresh snapshot, or None when the database's stamp still equals ``unless_stamp``."""
        with session_scope(self._factory) as session:
            stamp = self._stamp(session, kernel)
            if unless_stamp and stamp == unless_stamp:
                return None
            recs = repo.get_recommendations(session, kernel=kernel)
        entries = [entry_of(r) for r in recs]
        snap = _Snapshot(recs=recs, entries=entries, loaded_at=time.monotonic(), stamp=stamp)
        snap.rec_of = {id(e): r for e, r in zip(entries, recs, strict=True)}
        return snap

    async def _refresh(self, kernel: str) -> None:
        try:
            old = self._snapshots.get(kernel)
            stamp = old.stamp if old is not None else ()
            new = await asyncio.to_thread(self._load, kernel, unless_stamp=stamp)
            if new is None:
                if old is not None:
                    old.loaded_at = time.monotonic()  # unchanged: keep the memoized answers
            elif old is not None and _version(old) == _version(new):
                old.loaded_at, old.stamp = new.loaded_at, new.stamp
            else:
                self._snapshots[kernel] = new
        except Exception:  # keep serving the stale copy; /healthz reports the database
            logger.exception("refreshing the recommendations of %s failed", kernel)
        finally:
            self._refreshing.discard(kernel)

    async def snapshot(self, kernel: str) -> _Snapshot:
        """The current snapshot of ``kernel`` (loaded on first use).

        Raises:
            StorageError: the first load of this kernel failed.
        """
        snap = self.current(kernel)
        if snap is None:
            loaded = await asyncio.to_thread(self._load, kernel)
            assert loaded is not None  # no stamp given: always loads
            snap = loaded
            self._snapshots[kernel] = snap
        return snap

    def current(self, kernel: str) -> _Snapshot | None:
        """The loaded snapshot of ``kernel`` (None before the first load); when it is older
        than the TTL a background refresh is started and the stale copy returned meanwhile.
        Call from the event loop."""
        snap = self._snapshots.get(kernel)
        if (
            snap is not None
            and time.monotonic() - snap.loaded_at > self._ttl_s
            and kernel not in self._refreshing
        ):
            self._refreshing.add(kernel)
            task = asyncio.get_running_loop().create_task(self._refresh(kernel))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return snap

    async def answer(self, kernel: str, key: Any, compute: Callable[[_Snapshot], Any]) -> Any:
        """``compute(snapshot)`` memoized per ``key`` until the snapshot is replaced."""
        snap = await self.snapshot(kernel)
        hit = snap.memo.get(key)
        if hit is None:
            hit = compute(snap)
            if len(snap.memo) >= _MAX_MEMO:
                snap.memo.clear()
            snap.memo[key] = hit
        return hit

    def invalidate(self) -> None:
        """Forget every snapshot (the next request reloads)."""
        self._snapshots.clear()


_ROUTE_PREFIX = "/v1/configs/"


class _RouteLabel:
    """Stands in for the matched route in ``scope["route"]`` (read by the metrics middleware)."""

    path = "/v1/configs/{kernel}"


class FastConfigLookups:
    """Serve repeated ``GET /v1/configs/{kernel}?...`` requests from cached response bytes.

    The first request of a (path, query string) goes through FastAPI (validation, lookup,
    serialization); a 200 response's body is kept on the current recommendation snapshot.
    Later identical requests are answered here while that snapshot is current; when it is
    older than the TTL a background refresh replaces it (with an empty response cache), and
    the stale answers are served until then. Errors are never cached.
    """

    def __init__(self, app: ASGIApp, *, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        cache: RecommendationCache | None = getattr(self.state, "rec_cache", None)
        if (
            scope["type"] != "http"
            or scope.get("method") != "GET"
            or not path.startswith(_ROUTE_PREFIX)
            or cache is None
        ):
            await self.app(scope, receive, send)
            return
        kernel = path[len(_ROUTE_PREFIX) :]
        snap = cache.current(kernel)
        key = scope.get("query_string", b"")
        body = snap.responses.get(key) if snap is not None else None
        if body is not None:
            scope["route"] = _RouteLabel
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        status = 0
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        current = cache.current(kernel)
        if status == 200 and current is not None and len(current.responses) < _MAX_MEMO:
            current.responses[key] = b"".join(chunks)


__all__ = ["FastConfigLookups", "RecommendationCache"]
