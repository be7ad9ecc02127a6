"""Run-time config lookup for ``config=None`` calls, from a config bundle file.

``mla_decode(..., config=None)`` and ``mla_prefill(..., config=None)`` call
``config_for(kernel, problem, limits)``. It reads the bundle named by ``MLAFLEET_CONFIGS``
(default: ``<user cache dir>/mlafleet/configs.json``, where ``mlafleet pull`` writes it) and
walks a fallback chain (``select_entry``, shared with the API's ``GET /v1/configs``):

1. ``exact``: an entry of this architecture for the problem's workload bucket;
2. ``nearest_bucket``: same architecture, exact in heads, ``s_q``, dtype and page size, nearest
   in log2 batch + log2 sequence length;
3. ``arch_winner``: the architecture's most common winning config (for this kernel);
4. the same three levels over entries measured under another Triton or driver version than the
   running one, named ``exact_other_software``, ``nearest_bucket_other_software``,
   ``arch_winner_other_software``;
5. ``related_arch`` (then ``related_arch_other_software``): the levels above on a related
   architecture (``sm_90`` <-> ``sm_90a``, the ``sm_8x`` family, the ``gfx94x`` family, ...);
6. ``default``: the kernel's built-in default for the architecture (registry
   ``default_config``).

Entries that failed validation are never used; a fallback config the kernel says cannot run on
the problem (``why_invalid``) is skipped. Lookups are cached per (kernel, problem, arch); the
bundle file is re-read when its mtime or size changes, checked at most once per second. No
network, thread-safe; the level used is logged at DEBUG when a lookup is first computed.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .bundle import BundleEntry, ConfigBundle, Software, WorkloadBucket, bucket_of
from .configs import DecodeConfig, DecodeProblem, DeviceLimits, PrefillConfig, PrefillProblem
from .registry import get_kernel

logger = logging.getLogger(__name__)

ENV_VAR = "MLAFLEET_CONFIGS"
CHECK_INTERVAL_S = 1.0
_MAX_CACHED_LOOKUPS = 65536

LEVEL_EXACT = "exact"
LEVEL_NEAREST = "nearest_bucket"
LEVEL_ARCH_WINNER = "arch_winner"
LEVEL_RELATED_ARCH = "related_arch"
LEVEL_DEFAULT = "default"
OTHER_SOFTWARE = "_other_software"

LEVELS: tuple[str, ...] = (
    LEVEL_EXACT,
    LEVEL_NEAREST,
    LEVEL_ARCH_WINNER,
    LEVEL_EXACT + OTHER_SOFTWARE,
    LEVEL_NEAREST + OTHER_SOFTWARE,
    LEVEL_ARCH_WINNER + OTHER_SOFTWARE,
    LEVEL_RELATED_ARCH,
    LEVEL_RELATED_ARCH + OTHER_SOFTWARE,
    LEVEL_DEFAULT,
)
"""Every level ``select_entry`` can return, best first."""


# --------------------------------------------------------------------------------------------
# Architecture families and software matching
# --------------------------------------------------------------------------------------------


def _arch_family(arch: str) -> tuple[str, float] | None:
    """(family, position inside it) of an architecture name; None when it has no family."""
    if arch.startswith("sm_"):
        digits = arch[3:].rstrip("abf")  # sm_90a, sm_100f: same silicon as sm_90 / sm_100
        if not digits.isdigit():
            return None
        cc = int(digits)
        # sm_90 vs sm_90a sort next to each other (the suffix adds half a step)
        return f"sm_{cc // 10}x", cc + (0.5 if arch[3:] != digits else 0.0)
    if arch.startswith("gfx") and len(arch) >= 6:
        body = arch[3:]
        # gfx942 -> family gfx94, gfx90a -> gfx90, gfx1100 -> gfx110
        family = body[:3] if len(body) >= 4 else body[:2]
        pos = int(body[len(family) :], 16) if body[len(family) :].isalnum() else 0
        return f"gfx{family}x", float(pos)
    return None


def related_archs(arch: str, candidates: Iterable[str]) -> list[str]:
    """The architectures among ``candidates`` of ``arch``'s family, closest first.

    ``sm_90`` is related to ``sm_90a``; ``sm_86`` to ``sm_80``, ``sm_87``, ``sm_89``; ``gfx942``
    to ``gfx940``/``gfx941``. ``cpu-interpreter`` has no relatives.
    """
    own = _arch_family(arch)
    if own is None:
        return []
    scored: list[tuple[float, str]] = []
    for other in set(candidates):
        fam = _arch_family(other)
        if other != arch and fam is not None and fam[0] == own[0]:
            scored.append((abs(fam[1] - own[1]), other))
    return [name for _, name in sorted(scored)]


def same_software(entry: Software, running: Software | None) -> bool:
    """Whether a measurement made under ``entry`` counts as made under ``running``.

    Triton versions must be equal; driver versions must be equal when both are known.
    ``running=None`` (the caller does not say) matches everything.
    """
    if running is None:
        return True
    if entry.triton != running.triton:
        return False
    return entry.driver is None or running.driver is None or entry.driver == running.driver


# --------------------------------------------------------------------------------------------
# The fallback chain
# --------------------------------------------------------------------------------------------


def bucket_distance(a: WorkloadBucket, b: WorkloadBucket) -> float:
    """|log2 batch ratio| + |log2 seqlen ratio| (buckets exact in the other fields)."""
    return abs(math.log2(a.batch / b.batch)) + abs(math.log2(a.seqlen / b.seqlen))


def _same_class(a: WorkloadBucket, b: WorkloadBucket) -> bool:
    return (a.heads, a.s_q, a.dtype, a.page_size) == (b.heads, b.s_q, b.dtype, b.page_size)


def _recency(entry: BundleEntry) -> float:
    return entry.measured_at.timestamp() if entry.measured_at is not None else 0.0


def _preference(entry: BundleEntry, gpu_name: str | None) -> tuple[int, float, float]:
    """Sort key among equally good entries: same GPU first, then newest, then fastest."""
    return (
        0 if gpu_name is not None and entry.gpu_name == gpu_name else 1,
        -_recency(entry),
        entry.median_us if entry.median_us is not None else math.inf,
    )


def _config_key(entry: BundleEntry) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in entry.config.items()))


def _pick(
    pool: Sequence[BundleEntry], bucket: WorkloadBucket, gpu_name: str | None
) -> tuple[BundleEntry, str] | None:
    """Exact, else nearest bucket, else most common winner within ``pool`` (one arch)."""
    if not pool:
        return None
    exact = [e for e in pool if e.bucket == bucket]
    if exact:
        return min(exact, key=lambda e: _preference(e, gpu_name)), LEVEL_EXACT
    near = [e for e in pool if _same_class(e.bucket, bucket)]
    if near:
        best = min(
            near,
            key=lambda e: (
                bucket_distance(e.bucket, bucket),
                -e.bucket.seqlen,
                -e.bucket.batch,
                _preference(e, gpu_name),
            ),
        )
        return best, LEVEL_NEAREST
    counts = Counter(_config_key(e) for e in pool)
    top = max(counts.values())
    winners = {key for key, n in counts.items() if n == top}
    # among the most common configs, the entry whose bucket is closest in every field
    best = min(
        (e for e in pool if _config_key(e) in winners),
        key=lambda e: (
            e.bucket.heads != bucket.heads,
            e.bucket.dtype != bucket.dtype,
            e.bucket.s_q != bucket.s_q,
            e.bucket.page_size != bucket.page_size,
            bucket_distance(e.bucket, bucket),
            _preference(e, gpu_name),
        ),
    )
    return best, LEVEL_ARCH_WINNER


def select_entry(
    entries: Iterable[BundleEntry],
    *,
    kernel: str,
    arch: str,
    bucket: WorkloadBucket,
    software: Software | None,
    gpu_name: str | None = None,
    accept: Callable[[BundleEntry], bool] | None = None,
) -> tuple[BundleEntry | None, str]:
    """Walk the fallback chain (module docstring) and return the entry used and its level.

    Args:
        entries: bundle entries of any kernel/arch (others are ignored).
        kernel: ``mla_decode`` or ``mla_prefill``.
        arch: the running architecture, e.g. ``sm_90``.
        bucket: the workload bucket of the call (``bundle.bucket_of``).
        software: the running software; None accepts every entry as same-software.
        gpu_name: prefer entries measured on this GPU model among equally good ones.
        accept: extra filter, e.g. "the kernel can run this config on this problem".

    Returns:
        ``(entry, level)`` with ``level`` one of ``LEVELS``; ``(None, "default")`` when no
        entry applies (use the kernel's built-in default).
    """
    by_arch: dict[str, list[BundleEntry]] = {}
    for e in entries:
        if e.kernel == kernel and e.validated:
            by_arch.setdefault(e.arch, []).append(e)

    def split(pool: list[BundleEntry]) -> tuple[list[BundleEntry], list[BundleEntry]]:
        # ``accept`` may be costly (the kernel's pruning rules): only on the pools visited
        if accept is not None:
            pool = [e for e in pool if accept(e)]
        same = [e for e in pool if same_software(e.software, software)]
        return same, [e for e in pool if not same_software(e.software, software)]

    own_same, own_other = split(by_arch.get(arch, []))
    for pool, suffix in ((own_same, ""), (own_other, OTHER_SOFTWARE)):
        found = _pick(pool, bucket, gpu_name)
        if found is not None:
            return found[0], found[1] + suffix
    relatives = related_archs(arch, by_arch)
    for want_same, suffix in ((True, ""), (False, OTHER_SOFTWARE)):
        for other in relatives:
            pool = split(by_arch[other])[0 if want_same else 1]
            found = _pick(pool, bucket, gpu_name)
            if found is not None:
                return found[0], LEVEL_RELATED_ARCH + suffix
    return None, LEVEL_DEFAULT


# --------------------------------------------------------------------------------------------
# The running software and the bundle file
# --------------------------------------------------------------------------------------------


def _nvidia_driver_version() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for word in text.split():
        parts = word.split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts):
            return word
    return None


_SOFTWARE: Software | None = None


def running_software() -> Software:
    """The software this process runs with (torch, Triton, CUDA/ROCm, NVIDIA driver)."""
    global _SOFTWARE
    if _SOFTWARE is None:
        import torch
        import triton

        _SOFTWARE = Software(
            driver=_nvidia_driver_version(),
            cuda=torch.version.cuda,
            rocm=getattr(torch.version, "hip", None),
            torch=torch.__version__,
            triton=triton.__version__,
        )
    return _SOFTWARE


def bundle_path() -> Path:
    """The bundle file: ``$MLAFLEET_CONFIGS``, else ``<user cache dir>/mlafleet/configs.json``."""
    named = os.environ.get(ENV_VAR)
    if named:
        return Path(named).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mlafleet")) / "configs.json"


def load_bundle(path: Path) -> ConfigBundle:
    """Read and validate a bundle file.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a valid bundle (the message names the file and what is wrong).
    """
    try:
        return ConfigBundle.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise ValueError(
            f"{path}: not a valid mlafleet config bundle ({exc.error_count()} problem(s), "
            f"first at {where}: {first['msg']}); run `mlafleet pull` again or unset {ENV_VAR}"
        ) from None


@dataclass(frozen=True)
class Lookup:
    """What ``config_for`` decided for one (kernel, problem, arch), for introspection.

    Attributes:
        config: the config the kernel will use.
        level: one of ``LEVELS``.
        entry: the bundle entry it came from (None at level ``default``).
        bundle: the bundle file consulted (it may not exist).
    """

    config: DecodeConfig | PrefillConfig
    level: str
    entry: BundleEntry | None
    bundle: Path


class _Store:
    """The loaded bundle and the lookup cache of this process."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cache: dict[tuple[str, Any, str], Lookup] = {}
        self._entries: tuple[BundleEntry, ...] = ()
        self._path: Path | None = None
        self._stamp: tuple[int, int] | None = None
        self._next_check = 0.0

    def reset(self) -> None:
        with self._lock:
            self._cache = {}
            self._entries = ()
            self._path = None
            self._stamp = None
            self._next_check = 0.0

    def _refresh(self, now: float) -> None:
        """Reload the bundle if its path, mtime or size changed (called with the lock)."""
        self._next_check = now + CHECK_INTERVAL_S
        path = bundle_path()
        try:
            st = path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if path == self._path and stamp == self._stamp:
            return
        entries: tuple[BundleEntry, ...] = ()
        if stamp is not None:
            try:
                entries = tuple(load_bundle(path).entries)
            except (OSError, ValueError) as exc:
                logger.warning("config bundle ignored, built-in defaults used: %s", exc)
        else:
            logger.debug("no config bundle at %s; built-in defaults used", path)
        self._path, self._stamp, self._entries, self._cache = path, stamp, entries, {}

    def lookup(
        self, kernel: str, problem: DecodeProblem | PrefillProblem, limits: DeviceLimits
    ) -> Lookup:
        now = time.monotonic()
        if now >= self._next_check:
            with self._lock:
                if now >= self._next_check:
                    self._refresh(now)
        key = (kernel, problem, limits.arch)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        return self._compute(key, limits)

    def _compute(self, key: tuple[str, Any, str], limits: DeviceLimits) -> Lookup:
        kernel, problem, _ = key
        with self._lock:
            entries, path, cache = self._entries, self._path, self._cache
        result = _resolve(kernel, problem, limits, entries, path or bundle_path())
        with self._lock:
            if cache is self._cache:  # not reloaded meanwhile
                if len(cache) >= _MAX_CACHED_LOOKUPS:
                    cache.clear()
                cache[key] = result
        return result


def _resolve(
    kernel: str,
    problem: DecodeProblem | PrefillProblem,
    limits: DeviceLimits,
    entries: Sequence[BundleEntry],
    path: Path,
) -> Lookup:
    spec = get_kernel(kernel)
    arch = limits.arch
    try:
        why_invalid: Callable[..., str | None] | None = spec.fn("why_invalid")
    except (ImportError, AttributeError):
        why_invalid = None  # no pruning rule available: trust the validated entries

    def config_of(entry: BundleEntry) -> DecodeConfig | PrefillConfig | None:
        try:
            return spec.config_from_dict(entry.config)
        except (TypeError, ValueError):
            return None

    def accept(entry: BundleEntry) -> bool:
        config = config_of(entry)
        if config is None:
            return False
        return why_invalid is None or why_invalid(config, problem, limits) is None

    entry, level = (None, LEVEL_DEFAULT)
    if entries:
        entry, level = select_entry(
            entries,
            kernel=kernel,
            arch=arch,
            bucket=bucket_of(problem),
            software=running_software(),
            gpu_name=limits.extra.get("gpu_name") if limits.extra else None,
            accept=accept,
        )
    config = config_of(entry) if entry is not None else None
    if config is None:
        config = spec.fn("default_config")(problem, limits)
        level = LEVEL_DEFAULT
    logger.debug(
        "%s on %s, bucket %s: level %s (%s), config %s, bundle %s",
        kernel,
        arch,
        bucket_of(problem).key(),
        level,
        f"entry {entry.arch}/{entry.bucket.key()} on {entry.gpu_name}" if entry else "built-in",
        config,
        path,
    )
    return Lookup(config=config, level=level, entry=entry, bundle=path)


_STORE = _Store()


def lookup(kernel: str, problem: DecodeProblem | PrefillProblem, limits: DeviceLimits) -> Lookup:
    """``config_for`` with its reasons: the config, the level, the entry and the bundle file.

    Raises:
        ValueError: an unknown kernel name.
    """
    return _STORE.lookup(kernel, problem, limits)


def config_for(
    kernel: str,
    problem: DecodeProblem | PrefillProblem,
    limits: DeviceLimits,
) -> DecodeConfig | PrefillConfig:
    """The config ``kernel`` should use for ``problem`` on the device described by ``limits``.

    Args:
        kernel: ``mla_decode`` or ``mla_prefill``.
        problem: the call's shape.
        limits: the device (its ``arch`` picks the bundle entries; the limits prune them).

    Returns:
        The kernel's config dataclass: from the bundle, or the built-in default.

    Raises:
        ValueError: an unknown kernel name.
    """
    # the hot path of every config=None launch, inlined: one clock read, one dict lookup
    store = _STORE
    if time.monotonic() < store._next_check:
        hit = store._cache.get((kernel, problem, limits.arch))
        if hit is not None:
            return hit.config
    return store.lookup(kernel, problem, limits).config


def reset_cache() -> None:
    """Forget the loaded bundle and every cached lookup (tests; after rewriting the file)."""
    _STORE.reset()


__all__ = [
    "LEVELS",
    "Lookup",
    "bucket_distance",
    "bundle_path",
    "config_for",
    "load_bundle",
    "lookup",
    "related_archs",
    "reset_cache",
    "running_software",
    "same_software",
    "select_entry",
]
