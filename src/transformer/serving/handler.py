"""One HTTP request of `transformer serve`: routed, checked, answered (server.py runs them).

    POST /api/translate   the service's answer (service.py), or {"error": "one line"}
    GET  /api/info, /healthz, /, /static/NAME

Every answer is JSON except the explorer's files; every mistake in a request is a 4xx
with {"error": "one line"} (never a traceback), and an unexpected exception a 500
{"error": "internal error"} with its traceback on stderr, the server running on. Before
anything else a request must name this server in its Host (DNS rebinding) and come from
no other Origin; a body must be declared JSON, with a Content-Length of ASCII digits, and
arrive whole within the server's read deadline. A translation that cannot wait its turn
(the queue is full, or its deadline passes) is a 503 with Retry-After; one whose client
hangs up while it waits is dropped, unanswered.
"""

from __future__ import annotations

import json
import mimetypes
import re
import select
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import UserError, one_line
from .batcher import Busy

EXPLORER_DIR = Path(__file__).resolve().parent / "explorer"
MAX_BODY = 64 * 1024  # bytes of JSON: thousands of words, far more than a model can read
DRAIN_LIMIT = 1024 * 1024  # a too-large body up to this is read and dropped, so the client
# gets its 413 (closing a socket with unread data resets it, and the client sees only that)
SOCKET_TIMEOUT = 30  # seconds a client may stall mid-request before its thread gives up
CONTENT_LENGTH = re.compile(r"[0-9]{1,12}")  # ASCII digits only; 12 of them is a terabyte
TEXT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
              ".json": "application/json", ".svg": "image/svg+xml"}


class HttpError(Exception):
    """A request answered with `status` and {"error": message}, plus any `headers`."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Handler(BaseHTTPRequestHandler):
    timeout = SOCKET_TIMEOUT
    server_version = "transformer-serve"

    def handle_one_request(self) -> None:
        # The whole request must arrive within the deadline: past it the socket's reading
        # side is shut, so a read waiting for a slow sender returns, and the thread is free.
        # Once the body is in (_read_json) the timer stops: the translation may take longer.
        self.read_timer = threading.Timer(self.server.read_deadline, self._stop_reading)
        self.read_timer.daemon = True
        self.read_timer.start()
        try:
            super().handle_one_request()
        finally:
            self.read_timer.cancel()

    def _stop_reading(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def _answer(self, method: str) -> None:
        """Route, run, and answer one request; no exception leaves here."""
        path = urlsplit(self.path).path
        try:
            self._check_host_and_origin()
            action, allowed = self._route(path)
            if method not in allowed:
                raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed on {path}",
                                {"Allow": ", ".join(sorted(allowed))})
            status, body, content_type = action()
        except HttpError as error:
            status, message, headers = error.status, error.message, error.headers
        except UserError as error:
            status, message, headers = HTTPStatus.BAD_REQUEST, str(error), {}
        except Busy as error:
            status, message, headers = HTTPStatus.SERVICE_UNAVAILABLE, str(error), {"Retry-After": "1"}
        except ConnectionError:  # the client hung up while its translation waited: no answer
            self.close_connection = True
            return
        except Exception:  # a bug: logged in full, answered in one line, the server runs on
            sys.stderr.write(f"error: {method} {path}\n{traceback.format_exc()}")
            status, message, headers = HTTPStatus.INTERNAL_SERVER_ERROR, "internal error", {}
        else:
            self._send(status, body, content_type, {})
            return
        self._send(status, error_body(message), "application/json", headers)

    def _route(self, path: str):
        """(the action for `path`, the methods it allows); HttpError 404 if there is none."""
        service = self.server.service
        routes = {
            "/api/translate": (lambda: _json(service.translate(self._read_json(),
                                                               self._client_gone)), {"POST"}),
            "/api/info": (lambda: _json(service.info()), {"GET"}),
            "/healthz": (lambda: _json({"status": "ok"}), {"GET"}),
            "/": (lambda: _explorer_file("index.html"), {"GET"}),
        }
        if path in routes:
            return routes[path]
        if path.startswith("/static/"):
            return (lambda: _explorer_file(path.removeprefix("/static/"))), {"GET"}
        raise HttpError(HTTPStatus.NOT_FOUND, f"no such path: {path}")

    def _check_host_and_origin(self) -> None:
        """Refuse what a web page elsewhere could make a browser send here: a Host other
        than the bound address or localhost (DNS rebinding: 421), an Origin other than this
        server's own (403). A server bound to every interface (--host 0.0.0.0) checks no Host."""
        names = self.server.host_names
        host = self.headers.get("Host")
        if names and host is not None and host.lower() not in names:
            self.close_connection = True
            raise HttpError(HTTPStatus.MISDIRECTED_REQUEST, f"Host {host!r} is not this server "
                                                            f"({', '.join(sorted(names))})")
        origin = self.headers.get("Origin")
        if origin is not None and names and origin.lower().removeprefix("http://") not in names:
            self._drain()
            raise HttpError(HTTPStatus.FORBIDDEN, f"Origin {origin!r} may not use this server; "
                                                  "only its own pages may")

    def _drain(self) -> None:
        """Read and drop a refused request's body (up to DRAIN_LIMIT), so that the client
        gets the answer rather than a reset connection."""
        self.close_connection = True
        length = self.headers.get("Content-Length") or ""
        if CONTENT_LENGTH.fullmatch(length) and int(length) <= DRAIN_LIMIT:
            self._read_body(int(length))

    def _read_json(self):
        """The request body, parsed; HttpError for a missing, oversized or malformed one."""
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None:
            self.close_connection = True
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if not CONTENT_LENGTH.fullmatch(length):  # ASCII digits: "²" is a digit to isdigit()
            self.close_connection = True
            raise HttpError(HTTPStatus.BAD_REQUEST, f"Content-Length {length[:20]!r} is not a "
                                                    "number of bytes")
        if self.headers.get_content_type() != "application/json":
            self._drain()
            raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            "the body must be JSON, sent as Content-Type: application/json")
        size = int(length)
        if size > MAX_BODY:
            self.close_connection = True
            if size <= DRAIN_LIMIT:
                self._read_body(size)
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"request body of {size} bytes; the limit is {MAX_BODY // 1024} KiB")
        data = self._read_body(size)
        if len(data) < size:  # the client sent less than it announced, then hung up
            self.close_connection = True
            raise HttpError(HTTPStatus.BAD_REQUEST, "incomplete request body")
        self.read_timer.cancel()
        try:
            return json.loads(data)
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError alike
            raise HttpError(HTTPStatus.BAD_REQUEST, f"malformed JSON: {one_line(error)}") from None
        except RecursionError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "JSON nested too deeply") from None

    def _client_gone(self) -> bool:
        """True once the client has closed the connection: what is left to read is its end.
        (Bytes waiting there, a next request on a kept-alive connection, mean it is still on.)"""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):  # reset, or closed on our side
            return True

    def _read_body(self, size: int) -> bytes:
        try:
            return self.rfile.read(size)
        except (TimeoutError, ConnectionError):  # a client that stalled, or reset the connection
            self.close_connection = True
            raise HttpError(HTTPStatus.REQUEST_TIMEOUT, "the request body did not arrive") from None

    def _send(self, status: int, body: bytes, content_type: str, headers: dict) -> None:
        """Write the response; a client that has gone away is not an error."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", _with_charset(content_type))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")  # a new checkpoint, a new answer
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # What http.server itself refuses (a malformed request line, an unknown method):
        # JSON like every other answer, not its HTML page.
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # what a garbled request line is taken for:
            self.request_version = "HTTP/1.0"  # answer with a status line all the same
        phrase = message or HTTPStatus(code).phrase
        self._send(code, b"" if self.command == "HEAD" else error_body(phrase),
                   "application/json", {})

    def log_message(self, format: str, *args) -> None:
        if not self.server.quiet:  # one line per request, on stderr
            super().log_message(format, *args)


def _json(answer) -> tuple[int, bytes, str]:
    return HTTPStatus.OK, json.dumps(answer, ensure_ascii=False).encode("utf-8"), "application/json"


def error_body(message: str) -> bytes:
    return json.dumps({"error": one_line(Exception(message), limit=500)},
                      ensure_ascii=False).encode("utf-8")


def _with_charset(content_type: str) -> str:
    text = content_type.startswith("text/") or content_type == "application/json"
    return f"{content_type}; charset=utf-8" if text else content_type


def _explorer_file(name: str) -> tuple[int, bytes, str]:
    """A file of the explorer folder by its bare name: only names listed there are served
    (so no path ever reaches outside it)."""
    files = {p.name: p for p in EXPLORER_DIR.glob("[!.]*") if p.is_file()}  # none without the folder
    if name not in files:
        if name == "index.html":
            raise HttpError(HTTPStatus.NOT_FOUND, "the explorer page is not installed")
        raise HttpError(HTTPStatus.NOT_FOUND, f"no such file: {name}")
    content_type = (TEXT_TYPES.get(files[name].suffix.lower()) or mimetypes.guess_type(name)[0]
                    or "application/octet-stream")
    return HTTPStatus.OK, files[name].read_bytes(), content_type
