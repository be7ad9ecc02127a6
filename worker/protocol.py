"""Messages between the worker and its child processes (compile pool, timing process).

Sent over a ``multiprocessing`` pipe (pickled pydantic models). A request names one operation;
the child answers with zero or more ``progress`` replies and exactly one ``result`` reply, or
dies (the parent sees the pipe close) or hangs (the parent's timeout fires).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .schemas import TimingStats, TrialStatus, ValidationResult


class ChildRequest(BaseModel):
    """One operation for a child process.

    Attributes:
        op: ``compile``: run the config once (fills Triton's on-disk cache; on a GPU this is
            where compilation happens); ``trial``: validate, then time; ``ping``: liveness.
        spec: the ``KernelSpec`` (a frozen dataclass, pickled as is, so kernels registered in
            the parent only, e.g. by tests, work in the child).
        problem: the problem dataclass as a dict.
        config: the config dataclass as a dict.
        seed: seed of the validation inputs (timing uses the seeds after it).
        validate: compare with the reference before timing.
        measure: time the config (after validation passed).
        timing: ``TimingOptions`` fields.
        l2_bytes: the device's L2 size (input copies for timing).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    op: Literal["compile", "trial", "ping"]
    spec: Any = None
    problem: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    validate_output: bool = True
    measure: bool = True
    timing: dict[str, Any] = Field(default_factory=dict)
    l2_bytes: int = 0


class ChildReply(BaseModel):
    """A child's answer: ``ready`` (started), ``progress`` (launched: compile done), ``result``."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["ready", "progress", "result"]
    status: TrialStatus | None = None
    error: str = ""
    compile_s: float | None = None
    timing: TimingStats | None = None
    validation: ValidationResult | None = None
    fatal: bool = Field(
        default=False, description="the child's device context is unusable; it exits after this"
    )
    pid: int | None = None
