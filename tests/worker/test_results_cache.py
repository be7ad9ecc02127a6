"""The local results cache: identity of a measurement, the file, resume from the caller."""

from __future__ import annotations

from pathlib import Path

from worker_factories import make_device, make_trial

from mlafleet.kernels.bundle import Software
from mlafleet.worker.results_cache import ResultsCache


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "trials.jsonl"
    cache = ResultsCache(path)
    trial = make_trial(median_us=12.5)
    cache.add(trial)
    again = ResultsCache(path)
    assert len(again) == 1
    hit = again.get(trial.kernel, trial.problem, trial.config, trial.device)
    assert hit == trial


def test_other_environment_or_gpu_is_a_miss() -> None:
    trial = make_trial()
    cache = ResultsCache(None, known=[trial])
    assert cache.get(trial.kernel, trial.problem, trial.config, trial.device) == trial
    other_sw = make_device(
        software=Software(driver="590", cuda="13.0", torch="2.11.0", triton="3.6.0")
    )
    assert cache.get(trial.kernel, trial.problem, trial.config, other_sw) is None
    other_gpu = make_device(name="NVIDIA H100")
    assert cache.get(trial.kernel, trial.problem, trial.config, other_gpu) is None
    # the same GPU model on another host is the same environment
    assert cache.get(trial.kernel, trial.problem, trial.config, make_device(host="b")) == trial
    assert (
        cache.get(trial.kernel, {**trial.problem, "batch": 2}, trial.config, trial.device) is None
    )


def test_unreadable_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    good = make_trial()
    path.write_text("{not json\n" + good.model_dump_json() + "\n\n", encoding="utf-8")
    cache = ResultsCache(path)
    assert len(cache) == 1
    assert cache.skipped_lines == 1


def test_remember_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    cache = ResultsCache(path)
    cache.remember(make_trial())
    assert len(cache) == 1
    assert not path.exists()
