"""Process isolation: a pool of compile processes and a long-lived timing process per device.

Every kernel call of a sweep runs in a child process with a timeout. Children are forked from
a ``forkserver`` that has imported torch and Triton once (so a child starts in a fraction of a
second instead of re-importing them) but never touched CUDA: each child creates its own fresh
CUDA context. A child that hangs is killed at its deadline; one that dies
(``os._exit``, SIGKILL, a segfault) is noticed through its pipe and process sentinel; one whose
CUDA context is poisoned says so and exits. Each is replaced and the sweep goes on, with the
trial recorded as ``compile_timeout``, ``run_timeout``, ``compile_error`` or ``runtime_error``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from .child import child_main
from .protocol import ChildReply, ChildRequest
from .schemas import TrialStatus

logger = logging.getLogger(__name__)

_PRELOAD = ["torch", "triton", "mlafleet.worker.child"]


def _context() -> Any:
    """The ``forkserver`` context (``spawn`` where there is none), preloading torch/Triton."""
    try:
        ctx = mp.get_context("forkserver")
    except ValueError:  # pragma: no cover - platforms without fork (Windows)
        return mp.get_context("spawn")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


_CTX = _context()


class ChildStartError(RuntimeError):
    """A child process did not come up (it died or did not answer in time)."""


def _exit_text(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit code unknown"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class Child:
    """One child process and its pipe.

    Args:
        device_index: the GPU it uses.
        on_gpu: False on the CPU interpreter.
        start_timeout_s: how long ``start`` waits for the child's ``ready``.
    """

    def __init__(self, *, device_index: int, on_gpu: bool, start_timeout_s: float) -> None:
        self.device_index = device_index
        self.on_gpu = on_gpu
        self.start_timeout_s = start_timeout_s
        self.process: Any = None
        self.conn: Connection | None = None
        self.pid: int | None = None

    def spawn(self) -> None:
        """Start the process (without waiting for it to be ready)."""
        parent, child = _CTX.Pipe(duplex=True)
        self.process = _CTX.Process(
            target=child_main,
            args=(child, self.device_index, self.on_gpu),
            daemon=True,
            name=f"mlafleet-child-{self.device_index}",
        )
        self.process.start()
        child.close()
        self.conn = parent

    def wait_ready(self) -> None:
        """Wait for the child's ``ready``.

        Raises:
            ChildStartError: it died or stayed silent past ``start_timeout_s``.
        """
        assert self.conn is not None
        assert self.process is not None
        if not self.conn.poll(self.start_timeout_s):
            self.kill()
            raise ChildStartError(
                f"worker child process did not start within {self.start_timeout_s:.0f} s"
            )
        try:
            reply = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(1)
            raise ChildStartError(
                f"worker child process died while starting ({_exit_text(self.process.exitcode)})"
            ) from None
        self.pid = reply.pid

    def start(self) -> None:
        """Spawn and wait until ready."""
        self.spawn()
        self.wait_ready()

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def kill(self) -> None:
        """Kill the process now (SIGKILL) and reap it."""
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        if self.process is not None:
            self.process.join(10)
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def close(self) -> None:
        """Ask the child to exit, then kill it if it does not."""
        if self.conn is not None and self.alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.process.join(5)
        self.kill()

    def exit_text(self) -> str:
        if self.process is not None:
            self.process.join(1)
        return _exit_text(self.process.exitcode if self.process is not None else None)


@dataclass
class _Busy:
    index: int
    deadline: float
    phase: str
    started: float
    compile_s: float | None = None


def _synth(status: TrialStatus, error: str, compile_s: float | None = None) -> ChildReply:
    return ChildReply(kind="result", status=status, error=error, compile_s=compile_s)


class ChildPool:
    """``size`` children of one device, serving requests in parallel with per-call timeouts.

    Used with ``size`` = CPU cores for compiling, and with ``size`` = 1 as the timing process.

    Args:
        size: number of children.
        device_index: their GPU.
        on_gpu: False on the CPU interpreter.
        start_timeout_s: how long a child may take to start.
    """

    def __init__(
        self, *, size: int, device_index: int, on_gpu: bool, start_timeout_s: float = 120.0
    ) -> None:
        self.size = max(1, size)
        self.device_index = device_index
        self.on_gpu = on_gpu
        self.start_timeout_s = start_timeout_s
        self.children: list[Child] = []
        self._starting: list[Child] = []
        self.replaced = 0

    def _new_child(self) -> Child:
        return Child(
            device_index=self.device_index,
            on_gpu=self.on_gpu,
            start_timeout_s=self.start_timeout_s,
        )

    def begin(self) -> None:
        """Spawn the missing children without waiting for them (see ``start``)."""
        fresh = [self._new_child() for _ in range(self.size - len(self.children))]
        for child in fresh:
            child.spawn()
        self._starting = fresh

    def start(self) -> None:
        """Start every child (in parallel) and wait until all are ready.

        Raises:
            ChildStartError: a child did not come up.
        """
        if not self._starting:
            self.begin()
        starting, self._starting = self._starting, []
        for child in starting:
            child.wait_ready()
        self.children.extend(starting)

    def close(self) -> None:
        for child in self.children + self._starting:
            child.close()
        self.children = []
        self._starting = []

    def __enter__(self) -> ChildPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _replace(self, child: Child) -> Child:
        child.kill()
        self.replaced += 1
        fresh = self._new_child()
        fresh.start()
        self.children[self.children.index(child)] = fresh
        logger.info("replaced child process %s with %s", child.pid, fresh.pid)
        return fresh

    def run(
        self,
        requests: Sequence[ChildRequest],
        *,
        first_timeout_s: float,
        then_timeout_s: float,
        first_phase: str,
    ) -> list[ChildReply]:
        """Serve ``requests`` over the children; one ``result`` reply per request, in order.

        Args:
            requests: the operations.
            first_timeout_s: deadline of a call until its ``progress`` reply (compile phase).
            then_timeout_s: deadline after the ``progress`` reply (run phase).
            first_phase: ``compile`` or ``run``: names the phase before any progress.

        Returns:
            The children's results; a hang becomes ``compile_timeout``/``run_timeout``, a
            death ``compile_error``/``runtime_error`` (by phase), with the child replaced.
        """
        if not self.children:
            self.start()
        results: list[ChildReply | None] = [None] * len(requests)
        pending = deque(enumerate(requests))
        idle = list(self.children)
        busy: dict[int, tuple[Child, _Busy]] = {}
        while pending or busy:
            while idle and pending:
                child = idle.pop()
                index, req = pending.popleft()
                assert child.conn is not None
                now = time.monotonic()
                child.conn.send(req)
                busy[id(child)] = (child, _Busy(index, now + first_timeout_s, first_phase, now))
            nearest = min(state.deadline for _, state in busy.values())
            handles: list[Any] = []
            for child, _ in busy.values():
                handles += [child.conn, child.process.sentinel]
            wait(handles, timeout=max(0.0, nearest - time.monotonic()))
            for key, (child, state) in list(busy.items()):
                outcome = self._check(child, state, then_timeout_s)
                if outcome is None:
                    continue
                reply, usable = outcome
                results[state.index] = reply
                del busy[key]
                idle.append(child if usable else self._replace(child))
        return [r for r in results if r is not None]

    def _check(
        self, child: Child, state: _Busy, then_timeout_s: float
    ) -> tuple[ChildReply, bool] | None:
        """(result, child still usable) when the call ended, else None (still running)."""
        assert child.conn is not None
        try:
            while child.conn.poll():
                reply: ChildReply = child.conn.recv()
                if reply.kind == "progress":
                    state.phase = "run"
                    state.compile_s = reply.compile_s
                    state.deadline = time.monotonic() + then_timeout_s
                    continue
                return reply, not reply.fatal
        except (EOFError, OSError):
            pass
        if not child.alive():
            died = state.phase == "compile"
            status = TrialStatus.COMPILE_ERROR if died else TrialStatus.RUNTIME_ERROR
            where = "compiling" if died else "running"
            return (
                _synth(
                    status,
                    f"the worker process died while {where} this config "
                    f"({child.exit_text()}); replaced it",
                    state.compile_s,
                ),
                False,
            )
        if time.monotonic() >= state.deadline:
            waited = time.monotonic() - state.started
            if state.phase == "compile":
                status, what = TrialStatus.COMPILE_TIMEOUT, "compiling"
            else:
                status, what = TrialStatus.RUN_TIMEOUT, "running"
            return (
                _synth(
                    status,
                    f"still {what} after {waited:.1f} s: killed the worker process and replaced it",
                    state.compile_s,
                ),
                False,
            )
        return None
