"""The Recommendations page as a person sees it: `mlafleet dashboard` started as a real
process against the seeded API, rendered by headless Chromium; the DOM is checked for the
table's content and for no exception text, the PNG for being a non-blank page-sized image.
The screenshot is also saved to docs/img/recommendations.png (linked from docs/DASHBOARD.md).
"""

from __future__ import annotations

import html
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlafleet.dashboard.analysis import format_config
from mlafleet.kernels.bundle import bucket_of
from mlafleet.kernels.configs import DecodeProblem
from mlafleet.worker.schemas import TrialStatus

REPO = Path(__file__).resolve().parents[2]
DOC_IMAGE = REPO / "docs" / "img" / "recommendations.png"
WINDOW = (1400, 1000)
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "headless Chromium is not installed (looked for "
        f"{', '.join(CHROMIUM_NAMES)}); install it with `apt-get install -y chromium`"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chromium_args(binary: str, profile: Path) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=30000",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ]


def visible_text(dom: str) -> str:
    """The text a person reads: scripts, styles, head and the no-JavaScript notice removed."""
    body = re.sub(r"(?is)<(script|style|head|noscript)\b.*?</\1>", " ", dom)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct scanlines) of an 8-bit RGB(A) PNG, read with the stdlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8, f"expected 8-bit PNG, got {depth}-bit"
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    rows = {raw[i * stride + 1 : (i + 1) * stride] for i in range(height)}
    return width, height, len(rows)


def fastest_config(trials: list[Any]) -> str:
    ok = [t for t in trials if t.status is TrialStatus.OK and t.median_us is not None]
    validated = [t for t in ok if t.validation is not None and t.validation.passed]
    return format_config(min(validated or ok, key=lambda t: t.median_us).config)


@pytest.fixture
def dashboard_url(seeded_api: Any, tmp_path: Path) -> Any:
    """`mlafleet dashboard --api <seeded API> --port <free>` running as a child process."""
    port = free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlafleet.orchestrator.cli.main",
            "dashboard",
            "--api",
            seeded_api.url,
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not start within 90 s"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
    # `mlafleet dashboard` passed SIGTERM on: its Streamlit child is gone too
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/_stcore/health", timeout=2)


def test_recommendations_screenshot(seeded_api: Any, dashboard_url: str, tmp_path: Path) -> None:
    binary = chromium()
    expected = fastest_config(seeded_api.trials)
    bucket = bucket_of(DecodeProblem.from_dict(seeded_api.trials[0].problem)).key()
    # Streamlit renders client-side: poll until the table is in the DOM (cold starts are slow)
    text = ""
    for attempt in range(4):
        try:
            dom = subprocess.run(
                [*chromium_args(binary, tmp_path / f"dom{attempt}"), "--dump-dom", dashboard_url],
                capture_output=True,
                timeout=90,
                check=True,
            ).stdout.decode(errors="replace")
        except subprocess.TimeoutExpired:
            continue
        text = visible_text(dom)
        if expected in text:
            break
    assert "Recommended configs" in text
    assert expected in text, text[:2000]
    assert bucket in text
    assert "cpu-interpreter" in text
    for bad in ("Traceback", "Error", "Exception", "API unreachable"):
        assert bad not in text, f"{bad!r} on the page: {text[:2000]}"

    shot = tmp_path / "recommendations.png"
    data = b""
    # a loaded machine can stall a headless run, or let it shoot before Streamlit has drawn the
    # page (the DOM above was already complete): retry either, up to three runs
    for attempt in range(3):
        try:
            subprocess.run(
                [
                    *chromium_args(binary, tmp_path / f"shot{attempt}"),
                    f"--screenshot={shot}",
                    dashboard_url,
                ],
                capture_output=True,
                timeout=90,
                check=True,
            )
        except subprocess.TimeoutExpired:
            continue
        data = shot.read_bytes()
        if len(data) > 20_000 and png_facts(data)[2] > 100:
            break
    assert data, "no screenshot: every headless Chromium run timed out"
    width, height, distinct_rows = png_facts(data)
    assert (width, height) == WINDOW
    assert len(data) > 20_000, f"suspiciously small screenshot: {len(data)} bytes"
    assert distinct_rows > 100, f"a nearly blank screenshot: {distinct_rows} distinct rows"
    DOC_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, DOC_IMAGE)
