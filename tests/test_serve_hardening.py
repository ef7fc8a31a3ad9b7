"""The server read as an attacker would: each hostile or odd request gets a 4xx with one
line of JSON, and the server answers /healthz after it. Plus the stops and the reads that
must not harm a run: SIGTERM, a default checkpoint that disappears, --host 0.0.0.0."""

import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.request

import pytest

from transformer.serving.server import serve
from transformer.serving.service import TranslationService

from serve_helpers import TEXT, TIMEOUT, assert_error, raw_exchange


def exchange(server, head: str, body: bytes = b"") -> tuple[int, dict]:
    """(status, JSON body) of raw request bytes: `head` lines, then the blank line and body."""
    answer = raw_exchange(server.port, head.encode("utf-8") + b"\r\n\r\n" + body)
    status_line, _, rest = answer.partition(b"\r\n")
    payload = json.loads(rest.partition(b"\r\n\r\n")[2])
    return int(status_line.split()[1]), payload


def post(server, body: bytes, **headers) -> tuple[int, dict]:
    fields = {"Host": f"127.0.0.1:{server.port}", "Content-Type": "application/json",
              "Content-Length": str(len(body)), **headers}
    head = "POST /api/translate HTTP/1.1\r\n" + "\r\n".join(f"{k}: {v}" for k, v in fields.items()
                                                          if v is not None)
    return exchange(server, head, body)


def still_serves(server) -> None:
    status, _, payload = server.request("/healthz")
    assert status == 200 and payload == {"status": "ok"}


BODY = json.dumps({"text": TEXT}).encode()


@pytest.mark.parametrize("length,named", [("²", "Content-Length"), ("9" * 5000, "Content-Length"),
                                          ("-1", "Content-Length"), ("1e3", "Content-Length")])
def test_a_content_length_that_is_not_ascii_digits_is_400(live_server, length, named):
    status, payload = post(live_server, BODY, **{"Content-Length": length})
    assert_error(status, payload, 400, named)
    still_serves(live_server)


def test_json_nested_too_deeply_is_400(live_server):
    body = b"[" * 30_000 + b"]" * 30_000  # 60 KB: under the size limit
    status, payload = post(live_server, body)
    assert_error(status, payload, 400, "nested too deeply")
    still_serves(live_server)


@pytest.mark.parametrize("body,named", [
    (b'{"text": "a dog \\ud800 runs"}', '"text"'),
    (b'{"texts": ["fine", "\\udfff"]}', '"texts"[1]'),
])
def test_a_lone_surrogate_is_400(live_server, body, named):
    status, payload = post(live_server, body)
    assert_error(status, payload, 400, named, "lone surrogate")
    still_serves(live_server)


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_415_and_read(live_server, content_type):
    # text/plain is what a page elsewhere may post without a preflight
    status, payload = post(live_server, BODY, **{"Content-Type": content_type})
    assert_error(status, payload, 415, "application/json")
    still_serves(live_server)


def test_another_origin_is_403(live_server):
    status, payload = post(live_server, BODY, Origin="http://evil.example")
    assert_error(status, payload, 403, "evil.example")
    status, _ = post(live_server, BODY, Origin=f"http://localhost:{live_server.port}")
    assert status == 200  # the server's own page
    still_serves(live_server)


def test_another_host_is_421(live_server):
    status, payload = post(live_server, BODY, Host=f"evil.example:{live_server.port}")
    assert_error(status, payload, 421, "evil.example")  # DNS rebinding reads nothing
    status, payload = exchange(live_server,
                               f"GET /api/info HTTP/1.1\r\nHost: rebound.example:{live_server.port}")
    assert_error(status, payload, 421, "rebound.example")
    still_serves(live_server)


def test_sigterm_stops_the_server_cleanly(trained_translation_run, capsys):
    seen = {}

    def ready(url: str) -> None:
        def ask_then_terminate() -> None:
            with urllib.request.urlopen(url + "healthz", timeout=TIMEOUT) as response:
                seen["status"] = response.status
            os.kill(os.getpid(), signal.SIGTERM)  # what a service manager sends

        threading.Thread(target=ask_then_terminate, daemon=True).start()

    assert serve(trained_translation_run, port=0, quiet=True, ready=ready) == 0
    assert seen["status"] == 200 and "stopped" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back


def test_all_interfaces_warn_that_there_is_no_authentication(trained_translation_run, capsys):
    def ready(url: str) -> None:
        threading.Thread(target=lambda: os.kill(os.getpid(), signal.SIGTERM), daemon=True).start()

    assert serve(trained_translation_run, host="0.0.0.0", port=0, quiet=True, ready=ready) == 0
    assert "no authentication" in capsys.readouterr().err


def test_a_default_checkpoint_that_disappears_is_picked_again(trained_translation_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_translation_run, run_dir)
    service = TranslationService(run_dir)
    gone = service.default.name
    shutil.rmtree(service.default)  # keep_last, or a user, deleted it
    answer = service.translate({"text": TEXT})
    assert answer["checkpoint"] != gone and answer["translation"]


@pytest.mark.parametrize("body,named", [
    ({"texts": ["a dog .", "a cat ."], "attention": True}, "one text per request"),
    ({"texts": ["a dog ."] * 64, "beam": 16}, "the limit is 256"),
])
def test_the_work_and_the_payload_of_one_request_are_bounded(live_server, body, named):
    status, _, payload = live_server.request("/api/translate", body)
    assert_error(status, payload, 400, named)
    still_serves(live_server)


def test_attention_weights_are_sent_with_three_decimals(live_server):
    status, _, raw = live_server.request("/api/translate", {"text": TEXT, "attention": True})
    assert status == 200
    def numbers(tree):
        return [x for item in tree for x in numbers(item)] if isinstance(tree, list) else [tree]

    weights = [x for maps in raw["attention"].values() for x in numbers(maps)]
    assert weights and max(len(json.dumps(x)) for x in weights) <= len("0.123")
    # not 0.004000000189989805: a float32 turned into JSON


def test_one_connection_too_many_is_503_at_once(live_server, monkeypatch):
    monkeypatch.setattr(live_server.httpd, "max_connections", 2)
    idle = [socket.create_connection(("127.0.0.1", live_server.port)) for _ in range(2)]
    try:
        idle[0].sendall(b"GET /healthz HTTP/1.1\r\n")  # and then nothing: they hold their threads
        time.sleep(0.3)
        answer = raw_exchange(live_server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        assert b"2 connections are open" in answer
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    still_serves(live_server)


def test_a_client_that_sends_a_byte_at_a_time_loses_its_thread(live_server, monkeypatch):
    monkeypatch.setattr(live_server.httpd, "read_deadline", 1.0)
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=TIMEOUT) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n":  # never the blank line
            try:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
            except OSError:
                closed = True
                break
            if time.monotonic() - started > 5:
                break
        if not closed:  # the server closed its side: a read sees the end (or the answer)
            sock.settimeout(2)
            try:
                closed = sock.recv(1024) is not None
            except OSError:
                closed = True
    assert closed and time.monotonic() - started < 6
    still_serves(live_server)
