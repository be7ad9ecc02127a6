"""Column types with explicit stored forms: enums as their text values, UTC datetimes, and JSON
documents in which NaN and +/-inf survive (SQLite turns a NaN REAL into NULL and PostgreSQL's
JSON rejects NaN, so non-finite floats are stored as tagged objects ``{"$float": "nan"}``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

_TAG = "$float"
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_floats(value: Any) -> Any:
    """Replace non-finite floats (at any depth) by ``{"$float": "nan" | "inf" | "-inf"}``."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return {_TAG: "nan"}
        return {_TAG: "inf" if value > 0 else "-inf"}
    if isinstance(value, dict):
        return {k: encode_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_floats(v) for v in value]
    return value


def decode_floats(value: Any) -> Any:
    """Inverse of ``encode_floats``."""
    if isinstance(value, dict):
        if len(value) == 1 and _TAG in value and value[_TAG] in _NONFINITE:
            return _NONFINITE[value[_TAG]]
        return {k: decode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_floats(v) for v in value]
    return value


def stable_hash(data: Any) -> str:
    """sha256 (hex, 32 chars) of the canonical JSON of ``data``: config and problem keys."""
    text = json.dumps(encode_floats(data), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ExactJSON(TypeDecorator[Any]):
    """JSON (JSONB on PostgreSQL) that keeps NaN/inf through the tagged form."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:  # noqa: ARG002
        return None if value is None else encode_floats(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:  # noqa: ARG002
        return None if value is None else decode_floats(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite returns naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class EnumText(TypeDecorator[enum.Enum]):
    """A str enum stored as its value in a VARCHAR (no database enum type to migrate)."""

    impl = String(32)
    cache_ok = True

    def __init__(self, enum_cls: type[enum.Enum]) -> None:
        super().__init__()
        self.enum_cls = enum_cls

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:  # noqa: ARG002
        if value is None:
            return None
        return str(self.enum_cls(value).value)

    def process_result_value(self, value: Any, dialect: Dialect) -> enum.Enum | None:  # noqa: ARG002
        return None if value is None else self.enum_cls(value)


def utcnow() -> datetime:
    return datetime.now(UTC)
