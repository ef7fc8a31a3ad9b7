"""Talking to the translation server in tests: a server in a thread, requests, the error contract.

The contract for a bad request: a 4xx (or 5xx) status and a body {"error": "one line"},
never a traceback.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

from transformer.serving.server import make_server

TIMEOUT = 30  # seconds, for any one request
TEXT = "a dog sees the ball ."


class Server:
    """A server on a free port in a thread; `stop()` shuts it down and waits for it."""

    def __init__(self, run_dir: Path) -> None:
        self.httpd = make_server(run_dir, port=0, quiet=True)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(TIMEOUT)

    def request(self, path: str, body=None, method: str | None = None, raw: bytes | None = None):
        """(status, headers, parsed JSON or raw bytes) of one request."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                status, headers, payload = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, payload = error.code, error.headers, error.read()
        if headers.get_content_type() == "application/json":
            payload = json.loads(payload.decode("utf-8"))
        return status, headers, payload

    def translate(self, body) -> dict:
        status, _, answer = self.request("/api/translate", body)
        assert status == 200, answer
        return answer


def assert_error(status: int, payload, expected_status: int, *names: str) -> str:
    assert status == expected_status, payload
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    message = payload["error"]
    assert "\n" not in message and "Traceback" not in message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"
    return message


def raw_exchange(port: int, data: bytes, read: bool = True) -> bytes:
    """Send bytes on a fresh connection; the whole answer (or nothing, read=False)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        if not read:
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def assert_same_answer(got, expected, tolerance: float = 1e-5, where: str = "answer") -> None:
    """Two answers for the same text: equal, but for the timing ("ms", "batch") and float
    rounding. Texts decoded in batches of other shapes go through other matrix shapes, which
    round differently in the last digits; tokens, texts and their order must not change."""
    if isinstance(got, float) or isinstance(expected, float):
        assert abs(got - expected) <= tolerance, (where, got, expected)
    elif isinstance(got, dict):
        assert got.keys() == expected.keys(), where
        for key in got.keys() - {"ms", "batch"}:
            assert_same_answer(got[key], expected[key], tolerance, f"{where}.{key}")
    elif isinstance(got, list):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same_answer(a, b, tolerance, f"{where}[{i}]")
    else:
        assert got == expected, (where, got, expected)
