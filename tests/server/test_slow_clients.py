"""Slow and greedy clients on raw sockets against a real keyless server on 127.0.0.1: partial headers and a
stalled body are answered 408 and closed, past the connection cap a new connection gets 503.

The finding: a socket that sent partial headers, or declared `Content-Length: 1000` and sent 10 bytes,
got no reply and no close for over 35 s."""

from __future__ import annotations

import json
import socket
import time

import pytest

from memstream.config import load_settings


@pytest.fixture
def keyless(start_server, tmp_path):
    def start(**server):
        settings = load_settings(db_url=f"sqlite:///{tmp_path / 'slow.db'}", home=str(tmp_path / "home"),
                                 **{"agent.enrich": False, **{f"server.{k}": v for k, v in server.items()}})
        return start_server(settings)

    return start


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_all(sock: socket.socket, limit_s: float = 10) -> tuple[bytes, float]:
    """Everything until the server closes; and how long that took."""
    started, data = time.monotonic(), b""
    sock.settimeout(limit_s)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def status_and_error(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"]


def test_partial_headers_are_cut(keyless):
    server = keyless(header_timeout_s=0.5)
    sock = connect(server)
    sock.sendall(b"POST /v1/users/u1/import HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n")
    raw, took = read_all(sock)
    status, error = status_and_error(raw)
    assert status == 408 and error["code"] == "request_timeout" and "header_timeout_s" in error["message"]
    assert took < 5
    # A connection that sends nothing at all is closed too.
    silent = connect(server)
    raw, took = read_all(silent)
    assert status_and_error(raw)[0] == 408 and took < 5


def test_a_kept_alive_connection_gets_the_header_timeout_for_its_next_request(keyless):
    server = keyless(header_timeout_s=0.5)
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    sock.settimeout(5)
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127")
    raw, took = read_all(sock)
    assert status_and_error(raw)[0] == 408 and took < 5


def test_a_stalled_body_is_cut(keyless):
    server = keyless(body_timeout_s=0.5)
    sock = connect(server)
    sock.sendall(b"POST /v1/users/u1/import HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
                 b"Content-Length: 1000\r\n\r\n0123456789")
    raw, took = read_all(sock)
    status, error = status_and_error(raw)
    assert status == 408 and error["code"] == "request_timeout" and "body_timeout_s" in error["message"]
    assert took < 5


def test_past_the_connection_cap_a_new_connection_gets_503(keyless):
    server = keyless(max_connections=2, header_timeout_s=5)
    held = [connect(server) for _ in range(2)]
    time.sleep(0.2)
    extra = connect(server)
    raw, took = read_all(extra)
    status, error = status_and_error(raw)
    assert status == 503 and error["code"] == "too_many_connections" and took < 5
    for sock in held:
        sock.close()
    time.sleep(0.2)
    again = connect(server)
    again.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert read_all(again)[0].startswith(b"HTTP/1.1 200")
