"""Load test of `transformer serve`: many clients translating at once, timed end to end.

Starts the server in this process on 127.0.0.1 (a free port) for RUN_DIR, then `--clients`
threads send `--requests` POST /api/translate requests in all, each a sentence from
`--sentences FILE` (one per line) or from a built-in list, in turn. Clients stop taking
new requests after `--max-seconds`; one in flight then has up to `--timeout` seconds more.
One warm-up request goes first and is not counted.

The server's model worker decodes the texts that wait together in one batched call, so
more clients raise throughput until the cores are full, and latency after that: the
figures say both. Latency is measured by the client: connect, send, translate, read the
whole answer.

Prints requests/s, p50 and p99 latency in ms (of the successful requests), how many texts
the server decoded together on average (its answers' "batch"), and the errors
(count, by kind, with the first message of each), then one line `RESULT {...}` with the
same figures as JSON. A sentence the run cannot take (too long for its max_len, say) is
an error like any other: its 400 is counted.

`--threads` sets torch's intra-op threads (the model worker's).

    .venv/bin/python benchmarks/serve_load.py runs/multi30k
    .venv/bin/python benchmarks/serve_load.py RUN_DIR --clients 8 --requests 500 --attention
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # benchmark this checkout, installed or not

import torch  # noqa: E402

from transformer.errors import UserError
from transformer.serving.server import make_server

SENTENCES = [
    "A man is riding a bicycle down the street.",
    "Two dogs are playing in the snow.",
    "A woman in a red dress is walking on the beach.",
    "Children are playing football in the park.",
    "A group of people are standing in front of a building.",
    "The little girl is eating an apple.",
    "A man is playing the guitar on stage.",
    "Two men are sitting at a table and talking.",
    "A black dog runs across the grass.",
    "A woman is reading a book in a cafe.",
    "People are waiting for the bus.",
    "A boy jumps into the swimming pool.",
    "An old man is sleeping on a bench.",
    "A cat is sitting on the window sill.",
    "The workers are building a new house.",
    "A girl with a hat is taking a picture.",
    "Three friends are climbing a mountain.",
    "A chef is cooking in a busy kitchen.",
    "Two children are laughing at a clown.",
    "A man in a blue shirt is painting a wall.",
]


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile (p in 0..100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def client(url: str, bodies: list[bytes], deadline: float, timeout: float, take, record) -> None:
    """Send requests until `take()` gives None or the deadline has passed."""
    while time.monotonic() < deadline and (index := take()) is not None:
        body = bodies[index % len(bodies)]
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        error = None
        batch = None
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                batch = json.loads(response.read()).get("batch")  # texts decoded together
        except urllib.error.HTTPError as failure:
            error = (f"HTTP {failure.code}", _error_message(failure))
        except (OSError, ValueError) as failure:  # refused, reset, timed out
            error = (type(failure).__name__, str(failure))
        record((time.perf_counter() - start) * 1000, error, batch)


def _error_message(failure: urllib.error.HTTPError) -> str:
    """The server's {"error": ...} line, or what there is instead."""
    try:
        return json.loads(failure.read())["error"]
    except (OSError, ValueError, KeyError, TypeError):
        return failure.reason


def run(url: str, bodies: list[bytes], clients: int, requests: int, max_seconds: float,
        timeout: float) -> dict:
    """Fire the requests from `clients` threads; the figures as a dict."""
    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    batches: list[int] = []  # per answer, how many texts its batched call decoded
    errors: dict[str, int] = {}
    examples: dict[str, str] = {}  # the first message of each kind of error

    def take() -> int | None:
        with lock:
            if issued[0] >= requests:
                return None
            issued[0] += 1
            return issued[0] - 1

    def record(ms: float, error: tuple[str, str] | None, batch: int | None) -> None:
        with lock:
            if error is None:
                latencies.append(ms)
                if batch is not None:
                    batches.append(batch)
            else:
                errors[error[0]] = errors.get(error[0], 0) + 1
                examples.setdefault(*error)

    deadline = time.monotonic() + max_seconds
    threads = [threading.Thread(target=client, daemon=True,
                                args=(url, bodies, deadline, timeout, take, record))
               for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max_seconds + timeout + 5)  # a request in flight at the deadline may finish
    elapsed = time.perf_counter() - start
    done = len(latencies) + sum(errors.values())
    return {"clients": clients, "requests": done, "ok": len(latencies), "seconds": round(elapsed, 3),
            "requests_per_s": round(len(latencies) / elapsed, 2) if elapsed > 0 else None,
            "p50_ms": _rounded(percentile(latencies, 50)), "p99_ms": _rounded(percentile(latencies, 99)),
            "mean_batch": round(sum(batches) / len(batches), 2) if batches else None,
            "errors": sum(errors.values()), "errors_by_kind": errors, "error_examples": examples,
            "stopped_by_time": done < requests}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def read_sentences(path: str | None) -> list[str]:
    if path is None:
        return SENTENCES
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read ({error})") from None
    if not any(lines):
        raise UserError(f"{path}: no sentences")
    return [line for line in lines if line]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run directory (a translation run)")
    parser.add_argument("--checkpoint", help="a checkpoint folder (default: as translate picks)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (threads)")
    parser.add_argument("--requests", type=int, default=200, help="requests in all")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for one request")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--sentences", help="a file of sentences, one per line")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--attention", action="store_true", help="ask for the attention maps too")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    for name in ("clients", "requests", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("max_seconds", "timeout"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        sentences = read_sentences(args.sentences)
        server = make_server(args.run_dir, args.checkpoint, port=0, device=args.device, quiet=True)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/translate"
    bodies = [json.dumps({"text": s, "beam": args.beam, "attention": args.attention}).encode()
              for s in sentences]
    try:
        warm_up = run(url, bodies[:1], 1, 1, args.max_seconds, args.timeout)
        if warm_up["errors"]:
            print(f"error: the warm-up request failed ({warm_up['error_examples']})", file=sys.stderr)
            return 1
        result = run(url, bodies, args.clients, args.requests, args.max_seconds, args.timeout)
    finally:
        server.shutdown()
        server.server_close()
    result.update(run_dir=str(args.run_dir), beam=args.beam, attention=args.attention,
                  sentences=len(sentences), device=args.device, threads=torch.get_num_threads())
    print(f"{result['requests']} requests from {args.clients} clients in {result['seconds']:.1f} s "
          f"(beam {args.beam}, attention {'on' if args.attention else 'off'})")
    print(f"  throughput   {result['requests_per_s']} requests/s")
    print(f"  latency      p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    if result["mean_batch"] is not None:
        print(f"  batches      {result['mean_batch']} texts per batched call, on average per answer")
    print(f"  errors       {result['errors']}")
    for kind, count in result["errors_by_kind"].items():
        print(f"    {count} x {kind}, first: {result['error_examples'][kind]}")
    if result["stopped_by_time"]:
        print(f"  (stopped at --max-seconds {args.max_seconds:g})")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
