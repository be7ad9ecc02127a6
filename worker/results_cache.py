"""Local store of measured trials, so a resumed sweep never measures a config twice.

One JSON line per ``TrialResult`` (append-only) in the user's cache folder (or a given file).
A trial is identified by kernel, problem, config, and the device's architecture, name and
software environment (``DeviceFingerprint.env_key``): the same config on another GPU model or
another driver/CUDA/torch/Triton is measured again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .schemas import DeviceFingerprint, TrialResult

logger = logging.getLogger(__name__)


def default_cache_path() -> Path:
    """``<user cache dir>/mlafleet/trials.jsonl``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("mlafleet")) / "trials.jsonl"


def _canon(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), sort_keys=True, separators=(",", ":"), default=str)


def trial_key(
    kernel: str, problem: Mapping[str, Any], config: Mapping[str, Any], device: DeviceFingerprint
) -> str:
    """Identity of a measurement: what ran, on which kind of device, with which software."""
    return "|".join(
        (kernel, _canon(problem), _canon(config), device.arch, device.name, device.env_key)
    )


def key_of(trial: TrialResult) -> str:
    return trial_key(trial.kernel, trial.problem, trial.config, trial.device)


class ResultsCache:
    """Known trials, from a JSON-lines file and/or from the caller.

    Args:
        path: the JSON-lines file (created on first write); None keeps results in memory only.
        known: trials already measured elsewhere (e.g. by the orchestrator's database).
    """

    def __init__(self, path: Path | str | None = None, known: Iterable[TrialResult] = ()) -> None:
        self.path = Path(path) if path is not None else None
        self._trials: dict[str, TrialResult] = {}
        self.skipped_lines = 0
        if self.path is not None and self.path.exists():
            self._load(self.path)
        for trial in known:
            self.remember(trial)

    def _load(self, path: Path) -> None:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    trial = TrialResult.model_validate_json(line)
                except ValidationError as exc:
                    self.skipped_lines += 1
                    logger.warning(
                        "%s:%d: unreadable trial skipped (%s)", path, lineno, exc.errors()[0]["msg"]
                    )
                    continue
                self._trials[key_of(trial)] = trial

    def __len__(self) -> int:
        return len(self._trials)

    def get(
        self,
        kernel: str,
        problem: Mapping[str, Any],
        config: Mapping[str, Any],
        device: DeviceFingerprint,
    ) -> TrialResult | None:
        """The known trial of this config in this environment, or None."""
        return self._trials.get(trial_key(kernel, problem, config, device))

    def remember(self, trial: TrialResult) -> None:
        """Know ``trial`` for this session only (not written to the file)."""
        self._trials[key_of(trial)] = trial

    def add(self, trial: TrialResult) -> None:
        """Remember ``trial`` (and append it to the file, if there is one)."""
        self._trials[key_of(trial)] = trial
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(trial.model_dump_json() + "\n")
