"""The child-process side of isolation: run requests, classify what went wrong.

``child_main`` is the entry point of every compile and timing process (``spawn`` start method,
so each child has a fresh CUDA context). It answers ``ChildRequest``s with ``ChildReply``s until
its pipe closes. A kernel error is classified (``classify``) and returned; an error that leaves
the device context unusable (an illegal memory access) is returned with ``fatal=True`` and the
child exits, so the parent starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import time
from multiprocessing.connection import Connection
from typing import Any

from .protocol import ChildReply, ChildRequest
from .schemas import TrialStatus
from .timing import TimingOptions, measure
from .validate import validate_config

logger = logging.getLogger(__name__)

_ERROR_CHARS = 2000
_REFERENCES: dict[object, object] = {}  # inputs + reference outputs of recent validation seeds


def classify(exc: BaseException, *, default: TrialStatus) -> TrialStatus:
    """The trial status an exception from a kernel call stands for.

    Args:
        exc: what the call raised.
        default: the status of anything not recognised (``compile_error`` for the first call
            of a config, ``runtime_error`` after it compiled).
    """
    try:
        from triton.compiler.errors import CompilationError
        from triton.runtime.errors import InterpreterError, OutOfResources
    except ImportError:  # pragma: no cover - triton is a dependency
        CompilationError = InterpreterError = OutOfResources = ()  # noqa: N806
    if isinstance(exc, OutOfResources):
        return TrialStatus.OUT_OF_RESOURCES
    if isinstance(exc, CompilationError | InterpreterError):
        # the interpreter raises InterpreterError for what a GPU compile rejects
        # (static_assert, non power-of-two aranges, shape mismatches)
        return TrialStatus.COMPILE_ERROR
    text = f"{type(exc).__name__}: {exc}".lower()
    if "outofmemory" in text or "out of memory" in text or "out of resource" in text:
        return TrialStatus.OUT_OF_RESOURCES
    if "ptxas" in text or "compilation" in text:
        return TrialStatus.COMPILE_ERROR
    if isinstance(exc, ValueError | TypeError):
        # the launcher's own argument checks refused this config for this shape
        return TrialStatus.INVALID_CONFIG
    return default


def describe(exc: BaseException) -> str:
    """``Type: message``, cut to a readable length."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS] + " ..."


def _context_broken(on_gpu: bool) -> bool:
    """True when the CUDA context can no longer run work (e.g. after an illegal access)."""
    if not on_gpu:
        return False
    import torch

    try:
        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()
    except Exception:
        return True
    return False


def _failure(exc: BaseException, *, default: TrialStatus, on_gpu: bool, **extra: Any) -> ChildReply:
    return ChildReply(
        kind="result",
        status=classify(exc, default=default),
        error=describe(exc),
        fatal=_context_broken(on_gpu),
        **extra,
    )


def _compile(req: ChildRequest, conn: Connection, *, device: str, on_gpu: bool) -> ChildReply:
    """Run the config once: compiles it (Triton caches the binary on disk) and loads it."""
    spec = req.spec
    problem = spec.problem_from_dict(req.problem)
    config = spec.config_from_dict(req.config)
    inputs = spec.fn("make_inputs")(problem, device=device, seed=req.seed)
    start = time.perf_counter()
    try:
        spec.fn("run")(inputs, config)
    except Exception as exc:
        return _failure(exc, default=TrialStatus.COMPILE_ERROR, on_gpu=on_gpu)
    compile_s = time.perf_counter() - start
    conn.send(ChildReply(kind="progress", compile_s=compile_s))
    if on_gpu:
        import torch

        try:
            torch.cuda.synchronize()
        except Exception as exc:
            return _failure(exc, default=TrialStatus.RUNTIME_ERROR, on_gpu=on_gpu)
    return ChildReply(kind="result", status=TrialStatus.OK, compile_s=compile_s)


def _trial(req: ChildRequest, *, device: str, device_index: int, on_gpu: bool) -> ChildReply:
    """Validate on fresh inputs, then time (when validation passed)."""
    spec = req.spec
    problem = spec.problem_from_dict(req.problem)
    config = spec.config_from_dict(req.config)
    validation = None
    try:
        if req.validate_output:
            validation = validate_config(
                spec, problem, config, device=device, seed=req.seed, reference_cache=_REFERENCES
            )
            if not validation.passed:
                return ChildReply(
                    kind="result",
                    status=TrialStatus.WRONG_ANSWER,
                    error=validation.message,
                    validation=validation,
                    fatal=_context_broken(on_gpu),
                )
        if not req.measure:
            return ChildReply(kind="result", status=TrialStatus.OK, validation=validation)
        run = spec.fn("run")
        make = spec.fn("make_inputs")
        timing = measure(
            lambda inputs: run(inputs, config),
            lambda seed: make(problem, device=device, seed=seed),
            device_index=device_index,
            l2_bytes=req.l2_bytes,
            on_gpu=on_gpu,
            options=TimingOptions(**req.timing),
            seed=req.seed + 1,
        )
    except Exception as exc:
        return _failure(
            exc, default=TrialStatus.RUNTIME_ERROR, on_gpu=on_gpu, validation=validation
        )
    return ChildReply(kind="result", status=TrialStatus.OK, timing=timing, validation=validation)


def child_main(conn: Connection, device_index: int, on_gpu: bool) -> None:
    """Entry point of a child process: serve requests until the pipe closes.

    Args:
        conn: this child's end of the pipe.
        device_index: the GPU this child uses (ignored on the interpreter).
        on_gpu: False on the CPU interpreter.
    """
    device = f"cuda:{device_index}" if on_gpu else "cpu"
    import torch
    import triton  # noqa: F401 - imported before "ready", so no call's timeout pays for it

    if on_gpu:
        torch.cuda.set_device(device_index)
        torch.zeros(1, device=device)  # create the CUDA context now, not inside a timed call
    conn.send(ChildReply(kind="ready", pid=os.getpid()))
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        try:
            if req.op == "ping":
                reply = ChildReply(kind="result", status=TrialStatus.OK, pid=os.getpid())
            elif req.op == "compile":
                reply = _compile(req, conn, device=device, on_gpu=on_gpu)
            else:
                reply = _trial(req, device=device, device_index=device_index, on_gpu=on_gpu)
        except Exception as exc:  # inputs or config could not be built: still an answer
            reply = _failure(exc, default=TrialStatus.RUNTIME_ERROR, on_gpu=on_gpu)
        conn.send(reply)
        if reply.fatal:
            os._exit(3)  # the CUDA context is poisoned: the parent starts a fresh child
