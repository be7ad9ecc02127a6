"""``racecheck_filter``: which racecheck reports are Gluon's warp_specialize prologue (CPU only).

The log lines below are the H200 run's own (device run 9, the warp-specialised prefill kernel),
with line numbers pointed at a small source written here.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from racecheck_filter import hazards, main, prologue_lines, unexplained  # noqa: E402

SOURCE = """\
import x


@gluon.jit
def _helper(buf):
    buf.store(1)


@gluon.jit
def _ws_kernel(out_ptr):
    buf = gl.allocate_shared_memory(gl.float32, [64], layout)
    gl.warp_specialize(
        [(_helper, (buf,))],
        [4],
        [96],
    )
"""
PROLOGUE_RACE = """\
========= Error: Race reported between Read access at _ws_kernel+0x100 in /src/ws.py:10
=========     and Write access at _ws_kernel+0xacd0 in /src/ws.py:10 [73 hazards]
=========     and Write access at _ws_kernel+0x14a40 in /src/ws.py:12 [73 hazards]
=========
"""
DATA_RACE = """\
========= Error: Race reported between Write access at _ws_kernel+0xe470 in /src/ws.py:6
=========     and Read access at _ws_kernel+0x33e0 in /src/ws.py:12 [1280 hazards]
=========
"""


def _source(tmp_path: Path) -> Path:
    path = tmp_path / "ws.py"
    path.write_text(SOURCE)
    return path


def test_prologue_lines_are_the_kernel_def_and_its_warp_specialize_call(tmp_path: Path) -> None:
    assert prologue_lines([_source(tmp_path)]) == {("ws.py", 10), ("ws.py", 12)}


def test_races_are_parsed_with_every_access(tmp_path: Path) -> None:
    log = "racecheck probe: ok\n" + PROLOGUE_RACE + DATA_RACE
    assert hazards(log) == [
        [("ws.py", 10), ("ws.py", 10), ("ws.py", 12)],
        [("ws.py", 6), ("ws.py", 12)],
    ]


def test_only_races_off_the_prologue_are_unexplained(tmp_path: Path) -> None:
    source = _source(tmp_path)
    assert unexplained(PROLOGUE_RACE, [source]) == []
    assert unexplained(PROLOGUE_RACE + DATA_RACE, [source]) == [[("ws.py", 6), ("ws.py", 12)]]


def test_command_line_exit_status(tmp_path: Path, capsys) -> None:
    source = _source(tmp_path)
    clean = tmp_path / "clean.log"
    clean.write_text(PROLOGUE_RACE + "========= RACECHECK SUMMARY: 1 hazard displayed\n")
    dirty = tmp_path / "dirty.log"
    dirty.write_text(PROLOGUE_RACE + DATA_RACE)
    assert main([str(clean), str(source)]) == 0
    assert "1 in Gluon's warp_specialize prologue, 0 unexplained" in capsys.readouterr().out
    assert main([str(dirty), str(source)]) == 1
    assert "unexplained: ws.py:6, ws.py:12" in capsys.readouterr().out
    assert main([str(clean)]) == 2
