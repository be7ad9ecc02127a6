"""Malformed, hostile and oversized requests: each refused with a reason, none a 5xx, and
SQL-looking strings kept as plain data."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import httpx
import pytest
from api_support import LiveServer

SPEC = {
    "name": "ok",
    "kernel": "mla_decode",
    "workloads": {"batch": [1], "seqlen": [64], "heads": [16]},
}


def post_raw(client: httpx.Client, body: bytes | Iterator[bytes], ctype: str) -> httpx.Response:
    return client.post("/v1/jobs", content=body, headers={"Content-Type": ctype})


def test_body_over_the_limit_is_413(authed: httpx.Client) -> None:
    big = json.dumps({**SPEC, "name": "x" * (2 << 20)}).encode()
    r = post_raw(authed, big, "application/json")
    assert r.status_code == 413
    assert r.json()["detail"] == (
        f"request body of {len(big)} bytes is over the limit of 1048576 bytes "
        "(MLAFLEET_MAX_BODY_BYTES); send a smaller request, e.g. split the job"
    )


def test_chunked_body_over_the_limit_is_413(authed: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536  # 2.5 MiB of JSON whitespace, no Content-Length

    r = post_raw(authed, chunks(), "application/json")
    assert r.status_code == 413
    assert r.json()["detail"].startswith("request body of more than 1048576 bytes is over")


@pytest.mark.parametrize(
    ("body", "ctype", "status", "problem"),
    [
        (
            b"{",
            "application/json",
            422,
            "body: not valid JSON (Expecting property name enclosed in double quotes: line 1 "
            "column 2 (char 1)); send a job spec",
        ),
        (b"[1, 2]", "application/json", 422, "expected a mapping"),
        (b"\xff\xfe", "application/json", 422, None),
        (b"[" * 200_000 + b"]" * 200_000, "application/json", 422, None),
        (b"a: &a [1]\nb: *a\n", "application/yaml", 422, None),
        (b"key: [unclosed", "application/yaml", 422, None),
        (b"- " * 50_000 + b"x", "application/yaml", 422, None),
        (b"!!python/object/apply:os.system ['echo hi']", "application/yaml", 422, None),
        (b"name: ok", "text/plain", 415, None),
    ],
)
def test_malformed_bodies(
    authed: httpx.Client, body: bytes, ctype: str, status: int, problem: str | None
) -> None:
    r = post_raw(authed, body, ctype)
    assert r.status_code == status, r.text
    got = r.json()
    assert got["detail"]
    if problem is not None:
        assert len(got["problems"]) == 1
        assert got["problems"][0].startswith(problem)


def test_yaml_alias_bomb_is_refused_before_expansion(authed: httpx.Client) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    r = post_raw(authed, "\n".join(lines).encode(), "application/yaml")
    assert r.status_code == 422
    assert "YAML aliases (*name) are not accepted in job specs" in r.json()["problems"][0]


def test_nul_characters_are_refused(authed: httpx.Client) -> None:
    r = authed.post("/v1/jobs", json={**SPEC, "name": "a\x00b"})
    assert r.status_code == 422
    assert r.json()["problems"] == ["name: NUL characters (\\u0000) are not accepted; remove them"]


def test_bad_content_length_is_400(server: LiveServer) -> None:
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
        reply = sock.recv(4096).decode(errors="replace")
    assert reply.split()[1] in ("400", "413")  # h11 itself may refuse the header first


def test_sql_looking_strings_are_plain_data(
    authed: httpx.Client, client: httpx.Client, db_url: str
) -> None:
    evil = "x'); DROP TABLE jobs; --"
    r = authed.post("/v1/jobs", json={**SPEC, "name": evil})
    assert r.status_code == 201
    job_id = r.json()["id"]
    assert client.get(f"/v1/jobs/{job_id}").json()["name"] == evil
    for path, params in (
        ("/v1/results", {"arch": "sm_90' OR '1'='1"}),
        ("/v1/bundle", {"arch": "sm_90; DELETE FROM trials"}),
        ("/v1/jobs", {"status": "queued' --"}),
    ):
        assert client.get(path, params=params).status_code == 422
    assert client.get("/v1/jobs").json()["total"] == 1
    metrics = client.get("/metrics").text
    assert "DROP TABLE" not in metrics
    assert "DELETE FROM" not in metrics
    path = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert {"jobs", "trials", "recommendations"} <= tables
        names = [row[0] for row in conn.execute("SELECT name FROM jobs")]
        assert names == [evil]
        stored_elsewhere = conn.execute(
            "SELECT count(*) FROM tasks WHERE problem LIKE '%DROP TABLE%' OR message LIKE "
            "'%DROP TABLE%'"
        ).fetchone()[0]
        assert stored_elsewhere == 0
