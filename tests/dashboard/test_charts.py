"""Pure functions of the dashboard: analysis (folk rule, heatmap cells) and Altair charts."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import pytest

from mlafleet.dashboard import charts
from mlafleet.dashboard.analysis import (
    compare_bars,
    folk_config,
    folk_vs_winner,
    format_config,
    heatmap_cells,
)
from mlafleet.dashboard.flatten import TRIAL_COLUMNS, trials_frame
from mlafleet.orchestrator.api.schemas import TrialPublic
from mlafleet.worker.schemas import TrialStatus

MakeTrial = Callable[..., TrialPublic]


@pytest.mark.parametrize(
    ("arch", "warps", "stages"),
    [
        ("sm_90", 8, 3),
        ("sm_80", 8, 3),
        ("sm_89", 8, 3),
        ("sm_75", 4, 2),
        ("sm_70", 4, 2),
        ("gfx942", 4, 2),
        ("cpu-interpreter", 4, 2),
    ],
)
def test_folk_config_per_arch(arch: str, warps: int, stages: int) -> None:
    assert folk_config(arch) == {
        "block_size_q": 128,
        "block_size_k": 128,
        "num_warps": warps,
        "num_stages": stages,
    }


def test_format_config_is_short_and_complete() -> None:
    text = format_config(
        {
            "block_size_q": 64,
            "block_size_k": 32,
            "num_warps": 4,
            "num_stages": 2,
            "num_kv_splits": 8,
        }
    )
    assert text == "q64 k32 w4 s2 splits=8"


def test_heatmap_cells_fold_splits_and_mark_failures(trials_df: pd.DataFrame) -> None:
    cells = heatmap_cells(trials_df[trials_df["arch"] == "sm_90"])
    assert len(cells) == 3
    by_knobs = cells.set_index(["block_size_q", "block_size_k", "num_warps", "num_stages"])
    # two splits of (64, 64, 4, 2): the faster one wins the cell
    assert by_knobs.loc[(64, 64, 4, 2), "median_us"] == 40.0
    assert by_knobs.loc[(64, 64, 4, 2), "trials"] == 2
    failed = by_knobs.loc[(128, 64, 8, 3)]
    assert failed["status"] == "out_of_resources"
    assert failed["label"] == "OOR"
    assert math.isnan(failed["median_us"])
    assert "shared memory" in failed["error"]


def test_heatmap_cells_empty_keeps_columns() -> None:
    cells = heatmap_cells(pd.DataFrame(columns=list(TRIAL_COLUMNS)))
    assert cells.empty
    assert {"block_size_q", "median_us", "status", "label"} <= set(cells.columns)


def test_heatmap_chart_facets_by_warps_and_stages(trials_df: pd.DataFrame) -> None:
    spec = charts.heatmap_chart(trials_df[trials_df["arch"] == "sm_90"], title="t").to_dict()
    assert spec["facet"]["row"]["field"] == "num_stages"
    assert spec["facet"]["column"]["field"] == "num_warps"
    layers = spec["spec"]["layer"]
    assert [layer["mark"]["type"] for layer in layers] == ["rect", "rect", "text"]
    assert layers[0]["encoding"]["x"]["field"] == "block_size_k"
    assert layers[0]["encoding"]["y"]["field"] == "block_size_q"
    assert layers[0]["encoding"]["color"]["scale"]["type"] == "log"
    rows = next(iter(spec["datasets"].values()))
    assert {r["label"] for r in rows} == {"", "OOR"}


def test_timing_distribution_chart_marks_median() -> None:
    samples = pd.DataFrame({"sample_us": [1.0, 2.0, 2.0, 3.0, 10.0]})
    spec = charts.timing_distribution_chart(samples, title="x").to_dict()
    hist, rule = spec["layer"]
    assert hist["mark"]["type"] == "bar"
    assert hist["encoding"]["x"]["bin"] == {"maxbins": 30}
    assert rule["mark"]["type"] == "rule"
    assert rule["transform"][0]["aggregate"][0]["op"] == "median"


def test_folk_vs_winner_measured_and_not_measured(trials_df: pd.DataFrame) -> None:
    table = folk_vs_winner(trials_df).set_index("arch")
    h100 = table.loc["sm_90"]
    assert h100["winner"] == "q64 k64 w4 s2 splits=4"
    assert h100["winner_us"] == 40.0
    assert h100["folk"] == "q128 k128 w8 s3"
    assert h100["folk_status"] == "ok"
    assert h100["folk_us"] == 60.0
    assert h100["slowdown"] == pytest.approx(1.5)
    assert h100["lost_pct"] == pytest.approx(50.0)
    a100 = table.loc["sm_80"]
    assert a100["folk_status"] == "not measured"
    assert math.isnan(a100["folk_us"])
    assert math.isnan(a100["lost_pct"])
    assert a100["winner_us"] == 90.0


def test_folk_vs_winner_failed_folk_config_names_the_kind(make_trial: MakeTrial) -> None:
    frame = trials_frame(
        [
            make_trial(arch="sm_90", q=64, k=64, warps=4, stages=2, median_us=10.0),
            make_trial(
                arch="sm_90", q=128, k=128, warps=8, stages=3, status=TrialStatus.RUN_TIMEOUT
            ),
        ]
    )
    row = folk_vs_winner(frame).iloc[0]
    assert row["folk_status"] == "run_timeout"
    assert math.isnan(row["slowdown"])


def test_folk_vs_winner_with_no_trial_that_ran(make_trial: MakeTrial) -> None:
    frame = trials_frame([make_trial(arch="sm_75", status=TrialStatus.COMPILE_ERROR)])
    row = folk_vs_winner(frame).iloc[0]
    assert row["winner"] == "none ran"
    assert row["folk_status"] == "not measured"


def test_compare_bars_drop_unknown_times(trials_df: pd.DataFrame) -> None:
    bars = compare_bars(folk_vs_winner(trials_df))
    assert sorted(zip(bars["arch"], bars["which"], strict=True)) == [
        ("sm_80", "measured winner"),
        ("sm_90", "folk rule"),
        ("sm_90", "measured winner"),
    ]
    spec = charts.compare_chart(bars, title="c").to_dict()
    assert spec["encoding"]["column"]["field"] == "arch"
    assert spec["encoding"]["y"]["field"] == "median_us"


def test_gpus_per_arch_chart() -> None:
    archs = pd.DataFrame(
        {
            "arch": ["sm_90", "sm_80"],
            "gpus": [8, 2],
            "gpu_names": ["H100", "A100"],
            "nodes": ["a", "b"],
        }
    )
    spec = charts.gpus_per_arch_chart(archs).to_dict()
    assert spec["encoding"]["x"]["field"] == "gpus"
    assert spec["mark"]["type"] == "bar"


def test_job_progress_chart_fraction_handles_zero_totals() -> None:
    progress = pd.DataFrame(
        {"job": ["#1 a", "#1 a"], "arch": ["sm_90", "sm_80"], "done": [3, 0], "total": [4, 0]}
    )
    spec = charts.job_progress_chart(progress).to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert [r["fraction"] for r in rows] == [0.75, 0.0]
    assert spec["encoding"]["x"]["scale"]["domain"] == [0, 1]


def test_speedup_chart_drops_missing_speedups() -> None:
    recs = pd.DataFrame(
        {
            "bucket": ["a", "b"],
            "speedup_vs_default": [1.5, float("nan")],
            "validated": [True, False],
        }
    )
    spec = charts.speedup_chart(recs).to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert [r["bucket"] for r in rows] == ["a"]
