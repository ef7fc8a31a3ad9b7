"""The translation server's manners: bad requests, many clients, clients that hang up.

Every mistake in a request gets its status and a body {"error": "one line"}, never a
traceback, and the next request is answered as if nothing happened. `live_server`
(conftest.py) serves the module, on a free port of 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from transformer.serving.handler import MAX_BODY, Handler

from serve_helpers import (
    TEXT,
    TIMEOUT,
    Server,
    assert_error,
    assert_same_answer,
    raw_exchange,
)

# --- bad requests -----------------------------------------------------------------------

BAD_BODIES = {
    "malformed JSON": (b"{bad", ["malformed JSON"]),
    "not UTF-8": (b'{"text": "\xff"}', ["malformed JSON"]),
    "not an object": (b"[1, 2]", ["JSON object"]),
    "no text": ({}, ['"text"']),
    "text and texts": ({"text": "a", "texts": ["b"]}, ['"text"', '"texts"']),
    "text a number": ({"text": 5}, ['"text"', "string"]),
    "texts a string": ({"texts": "a dog"}, ['"texts"', "list"]),
    "texts empty": ({"texts": []}, ['"texts"']),
    "texts with a number": ({"texts": ["a dog", 3]}, ['"texts"', "strings"]),
    "empty text": ({"text": ""}, ["empty"]),
    "beam 0": ({"text": "a", "beam": 0}, ['"beam"', "1 to 16"]),
    "beam 17": ({"text": "a", "beam": 17}, ['"beam"', "17"]),
    "beam a string": ({"text": "a", "beam": "4"}, ['"beam"']),
    "beam true": ({"text": "a", "beam": True}, ['"beam"']),
    "beam 2.5": ({"text": "a", "beam": 2.5}, ['"beam"']),
    "n_best 0": ({"text": "a", "n_best": 0}, ['"n_best"']),
    "n_best above beam": ({"text": "a", "beam": 2, "n_best": 3}, ['"n_best"', "1 to 2"]),
    "attention a string": ({"text": "a", "attention": "yes"}, ['"attention"']),
    "attention 1": ({"text": "a", "attention": 1}, ['"attention"']),
    "unknown field": ({"text": "a", "beams": 2}, ["beams"]),
    "too long": ({"text": " ".join(["the red car"] * 20)}, ["limit of 31 tokens", "max_len=32"]),
    "too long in a batch": ({"texts": ["a dog", "the red car " * 20]}, ["texts[1]", "31"]),
    "unknown checkpoint": ({"text": "a", "checkpoint": "step-999999"}, ["step-999999", "best"]),
    "checkpoint outside the run": ({"text": "a", "checkpoint": "../../config.json"}, ["unknown"]),
    "checkpoint a number": ({"text": "a", "checkpoint": 20}, ['"checkpoint"']),
}


@pytest.mark.parametrize("body,names", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_request_is_400_with_one_line(live_server, body, names):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, payload = live_server.request("/api/translate", raw=raw)
    assert_error(status, payload, 400, *names)
    assert live_server.request("/healthz")[0] == 200


def test_body_over_the_limit_is_413(live_server):
    raw = json.dumps({"text": "a " * MAX_BODY}).encode()
    status, _, payload = live_server.request("/api/translate", raw=raw)
    assert_error(status, payload, 413, "64 KiB")
    assert live_server.translate({"text": TEXT})["translation"]


def test_unknown_path_is_404(live_server):
    for method, body in [("GET", None), ("POST", {"text": "a"})]:
        status, _, payload = live_server.request("/api/translat", body, method=method)
        assert_error(status, payload, 404, "/api/translat")


@pytest.mark.parametrize("method,path,allow", [
    ("GET", "/api/translate", "POST"), ("PUT", "/api/translate", "POST"),
    ("POST", "/api/info", "GET"), ("DELETE", "/healthz", "GET"), ("POST", "/", "GET"),
])
def test_wrong_method_is_405_with_allow(live_server, method, path, allow):
    body = {"text": "a"} if method in ("POST", "PUT") else None
    status, headers, payload = live_server.request(path, body, method=method)
    assert_error(status, payload, 405, method)
    assert headers["Allow"] == allow


def test_post_without_content_length_is_411(live_server):
    answer = raw_exchange(live_server.port, f"POST /api/translate HTTP/1.1\r\nHost: 127.0.0.1:{live_server.port}\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 411")
    assert_error(411, json.loads(body), 411, "Content-Length")


def test_malformed_request_line_is_json_too(live_server):
    answer = raw_exchange(live_server.port, b"NONSENSE\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400")
    assert set(json.loads(body)) == {"error"}


def test_unexpected_exception_is_500_and_logged(live_server, monkeypatch, capsys):
    def broken():
        raise RuntimeError("a bug")

    monkeypatch.setattr(live_server.httpd.service, "info", broken)
    status, _, payload = live_server.request("/api/info")
    assert_error(status, payload, 500)
    assert payload == {"error": "internal error"}
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err
    monkeypatch.undo()
    assert live_server.request("/api/info")[0] == 200


# --- many clients, rude clients -------------------------------------------------------------

def test_20_concurrent_requests_agree(live_server):
    # Four kinds of request, five of each. (With attention the model takes the readable
    # path, whose float rounding differs from the fused one's: compare like with like.)
    bodies = [{"text": text, "attention": attention}
              for text in (TEXT, "the man eats some bread .") for attention in (False, True)]
    answers: list = [None] * 20

    def ask(i: int) -> None:
        answers[i] = live_server.request("/api/translate", bodies[i % 4])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2 * TIMEOUT)
    assert all(answer is not None and answer[0] == 200 for answer in answers), answers
    for i in range(4):
        same = [answers[j][2] for j in range(i, 20, 4)]
        for answer in same[1:]:
            assert_same_answer(answer, same[0])


def test_a_client_that_hangs_up_early_harms_nothing(live_server):
    expected = live_server.translate({"text": TEXT})["translation"]
    body = json.dumps({"text": TEXT}).encode()
    head = (f"POST /api/translate HTTP/1.1\r\nHost: 127.0.0.1:{live_server.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    raw_exchange(live_server.port, head + body[: len(body) // 2], read=False)  # half a body, then gone
    raw_exchange(live_server.port, head + body, read=False)  # gone before the answer
    raw_exchange(live_server.port, b"GET /api/in", read=False)  # half a request line
    assert live_server.translate({"text": TEXT})["translation"] == expected
    connection = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=TIMEOUT)
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200
    connection.close()


def test_a_server_shutting_down_refuses_new_translations(trained_translation_run):
    running = Server(trained_translation_run)
    try:
        running.httpd.service.close(timeout=TIMEOUT)  # what server_close does first
        status, _, payload = running.request("/api/translate", {"text": TEXT})
        assert_error(status, payload, 503, "shutting down")
        assert running.request("/healthz")[0] == 200
    finally:
        running.stop()


def test_a_client_that_stalls_mid_body_gets_408(live_server, monkeypatch):
    monkeypatch.setattr(Handler, "timeout", 0.5)  # seconds; the server's own is 30
    body = json.dumps({"text": TEXT}).encode()
    head = (f"POST /api/translate HTTP/1.1\r\nHost: 127.0.0.1:{live_server.port}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    answer = raw_exchange(live_server.port, head + body[:5])  # then nothing more, the connection open
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 408")
    assert_error(408, json.loads(payload), 408, "did not arrive")
    assert live_server.translate({"text": TEXT})["translation"]
