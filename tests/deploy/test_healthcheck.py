"""orchestrator/deploy/healthcheck.py, the image's health check, without containers.

(Against live processes it runs in test_fleet_processes.py.)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from deploy_compose import command_argv, compose, load_healthcheck

healthcheck = load_healthcheck()


def _pid1_cmdline(argv: list[str]) -> str:
    """/proc/1/cmdline of a compose container with ``init: true`` running ``argv``."""
    return "\0".join(["/sbin/docker-init", "--", *argv]) + "\0"


@pytest.mark.parametrize(
    ("service", "role"),
    [("head", "api"), ("dashboard", "dashboard"), ("worker-cpu", "worker"), ("migrate", None)],
)
def test_auto_reads_the_role_from_each_service_command(service: str, role: str | None) -> None:
    argv = command_argv(compose()["services"][service]["command"])
    assert healthcheck.guess_role(_pid1_cmdline(argv)) == role


def test_a_container_without_mlafleet_counts_as_healthy(monkeypatch) -> None:
    monkeypatch.setattr(healthcheck, "guess_role", lambda _cmdline: None)
    assert healthcheck.main(["auto"]) == 0


def test_unknown_role_and_usage_errors_exit_2(capsys) -> None:
    assert healthcheck.main(["database"]) == 2
    assert "expected a role in" in capsys.readouterr().err
    assert healthcheck.main([]) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake_api() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server on loopback answering 200 on /healthz and 503 elsewhere."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            del args

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_api_role_follows_mlafleet_port(monkeypatch, fake_api, capsys) -> None:
    port, seen = fake_api
    monkeypatch.setenv("MLAFLEET_PORT", str(port))
    assert healthcheck.main(["api"]) == 0
    assert seen == ["/healthz"]
    monkeypatch.setenv("MLAFLEET_DASHBOARD_PORT", str(port))
    assert healthcheck.main(["dashboard"]) == 1  # /_stcore/health answers 503 here
    assert "unhealthy (dashboard)" in capsys.readouterr().err


def test_api_role_fails_when_nothing_listens(monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLAFLEET_PORT", str(_free_port()))
    assert healthcheck.main(["api"]) == 1
    assert "unreachable" in capsys.readouterr().err
