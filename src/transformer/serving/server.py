"""`transformer serve RUN_DIR`: a trained run behind a small HTTP server, and its explorer page.

    POST /api/translate  {"text": str} or {"texts": [str]}, optional "beam" (1..16, 4),
                         "n_best" (1..beam, 1), "attention" (bool, false), "checkpoint"
                         (a checkpoint folder name of the run, e.g. "step-000400", "best")
                         -> analyze.py's answer + "checkpoint" + "ms", or {"results": [...]}
    GET  /api/info       the model, its checkpoints, languages, validation BLEU
    GET  /healthz        {"status": "ok"}
    GET  /               the attention explorer (explorer/index.html)
    GET  /static/NAME    the explorer's other files

A synthetic run (copy, reverse, sort) takes and gives its symbols as text, "3 7 1 12".

The standard library's `http.server` (one thread per connection) rather than a web
framework: a handful of routes need no routing library, and the project gains no
dependency.

This file is the server: its connections (at most MAX_CONNECTIONS at once; one more is
answered 503 at once), its start and its stop (Ctrl-C or SIGTERM, after the translation in
progress). One request is handler.py's; request bodies and the models are service.py's;
the one thread that runs the models, decoding many requests' texts in batched calls, is
batcher.py's.
"""

from __future__ import annotations

import signal
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from ..errors import UserError
from .handler import Handler, error_body
from .service import TranslationService

CLOSE_WAIT = 30  # seconds server_close waits for a translation in progress
MAX_CONNECTIONS = 32  # connections served at once; one more is answered 503 and closed
READ_DEADLINE = 60  # seconds a client has to send its whole request (a byte every 29 s
# would otherwise keep a thread for ever: the socket timeout counts per read)


class ExplorerServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that carries the service its handlers answer from."""

    daemon_threads = True  # a stuck connection never keeps the process alive
    request_queue_size = 64  # connections waiting to be accepted (socketserver says 5)
    max_connections = MAX_CONNECTIONS
    read_deadline = READ_DEADLINE

    def __init__(self, address: tuple[str, int], service: TranslationService, quiet: bool) -> None:
        self.service = service
        self.quiet = quiet
        super().__init__(address, Handler)
        host, port = address[0], self.server_address[1]
        # The Host headers a browser sends for this server; none checked when it listens
        # on every interface, where the user chose to be reached by any name.
        self.host_names = set() if host in ("0.0.0.0", "::", "") else \
            {f"{name}:{port}" for name in (host, "localhost", "127.0.0.1")}
        self.active = 0
        self.active_lock = threading.Lock()

    def process_request(self, request, client_address) -> None:
        """A thread for the connection, unless `max_connections` are open: then a 503 with
        Retry-After, sent at once, and the connection closed (no thread for it)."""
        with self.active_lock:
            full = self.active >= self.max_connections
            self.active += not full
        if full:
            body = error_body(f"{self.max_connections} connections are open; try again")
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                                b"Content-Type: application/json; charset=utf-8\r\n"
                                b"Connection: close\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.active_lock:
                self.active -= 1

    def server_close(self) -> None:
        super().server_close()
        self.service.close(CLOSE_WAIT)

    def handle_error(self, request, client_address) -> None:
        # A client that hung up or stalled is no error of ours: no traceback for it.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def make_server(run_dir: str | Path, checkpoint: str | None = None, host: str = "127.0.0.1",
                port: int = 8000, device: str = "cpu", quiet: bool = False) -> ExplorerServer:
    """The server, bound and listening but not yet serving (`serve_forever` does that).

    Loads the run first: a bad run directory or checkpoint is a UserError before any
    socket is opened. Port 0 takes a free port: `server.server_address[1]` says which.
    """
    service = TranslationService(run_dir, checkpoint, device)
    try:
        return ExplorerServer((host, port), service, quiet)
    except OSError as error:
        raise UserError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None


def serve(run_dir: str | Path, checkpoint: str | None = None, host: str = "127.0.0.1",
          port: int = 8000, device: str = "cpu", ready=None, quiet: bool = False) -> int:
    """Serve a run until Ctrl-C or SIGTERM; returns 0 (the exit code).

    Prints the URL once listening, then calls `ready(url)` if given (to open a browser,
    or for a test to start its requests). A stop waits for the translation in progress.
    """
    server = make_server(run_dir, checkpoint, host, port, device, quiet)
    url = f"http://{host}:{server.server_address[1]}/"
    if not server.host_names:
        print(f"warning: listening on {host}: anyone who can reach this machine can use the "
              "API, which has no authentication", file=sys.stderr, flush=True)
    print(f"serving {run_dir} at {url} (Ctrl-C to stop)", flush=True)
    # SIGTERM (a service manager, `kill`) stops as Ctrl-C does. shutdown() waits for the
    # serving loop, which runs in this thread: it is asked from another.
    previous = signal.signal(signal.SIGTERM, lambda *_: threading.Thread(
        target=server.shutdown, daemon=True).start())
    try:
        if ready is not None:
            ready(url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        print("stopped", flush=True)
    return 0
