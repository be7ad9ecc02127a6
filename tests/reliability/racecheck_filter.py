"""Sort compute-sanitizer racecheck reports into Gluon's warp_specialize prologue and the rest.

Every Gluon kernel built with ``gl.warp_specialize`` gets compiler code at entry that hands the
partitions their arguments through shared memory; racecheck reports a hazard there (a read at
the kernel's first instructions against writes attributed to the kernel's ``def`` line and its
``gl.warp_specialize(`` line). ``racecheck_probe.py``, a kernel that does nothing but one
mbarrier hand-off, gets exactly that report and no other. So a hazard whose accesses all sit on
those two lines of a warp-specialised kernel is the compiler's prologue; any other hazard (on a
line of our own code) is unexplained and fails the run.

    python tests/reliability/racecheck_filter.py racecheck.log kernels/*.py tests/reliability/*.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_ACCESS = re.compile(r"(?:Read|Write) access at \S+ in (?P<file>[^\s:]+):(?P<line>\d+)")


def prologue_lines(sources: list[Path]) -> set[tuple[str, int]]:
    """``(file name, line)`` of each warp-specialised kernel's ``def`` and its
    ``gl.warp_specialize(`` call, in the given Python sources."""
    found: set[tuple[str, int]] = set()
    for path in sources:
        lines = path.read_text().splitlines()
        def_line = None
        for number, text in enumerate(lines, start=1):
            if text.startswith("def "):
                def_line = number
            elif "gl.warp_specialize(" in text and def_line is not None:
                found.update({(path.name, def_line), (path.name, number)})
    return found


def hazards(log: str) -> list[list[tuple[str, int]]]:
    """Each reported race as the list of ``(file name, line)`` of its accesses."""
    reports: list[list[tuple[str, int]]] = []
    for text in log.splitlines():
        match = _ACCESS.search(text)
        if match is None:
            continue
        where = (Path(match["file"]).name, int(match["line"]))
        if "Race reported between" in text:
            reports.append([where])
        elif reports:
            reports[-1].append(where)
    return reports


def unexplained(log: str, sources: list[Path]) -> list[list[tuple[str, int]]]:
    """The reported races with an access outside the warp_specialize prologue lines."""
    allowed = prologue_lines(sources)
    return [race for race in hazards(log) if not set(race) <= allowed]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: racecheck_filter.py RACECHECK_LOG SOURCE.py [SOURCE.py ...]\n")
        return 2
    log = Path(argv[0]).read_text()
    races = hazards(log)
    left = unexplained(log, [Path(p) for p in argv[1:]])
    sys.stdout.write(
        f"racecheck: {len(races)} reported race(s), {len(races) - len(left)} in Gluon's "
        f"warp_specialize prologue, {len(left)} unexplained\n"
    )
    for race in left:
        sys.stdout.write("  unexplained: " + ", ".join(f"{f}:{n}" for f, n in race) + "\n")
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
