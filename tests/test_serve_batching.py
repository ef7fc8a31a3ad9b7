"""The server's model worker (serving/batcher.py): requests' texts gathered into batched
calls, grouped by what they ask; a bounded queue; work for clients that left skipped.

The worker is held at a gate where the order of events matters, so that what gets
gathered together is decided by the test, not by thread timing.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from transformer.decoding.analyze import analyze
from transformer.run.rundir import load_run
from transformer.serving.batcher import Batcher, Busy, Job

from serve_helpers import TIMEOUT, assert_error, assert_same_answer, raw_exchange


class GatedDecode:
    """A decode function that records its calls and, while `gate` is clear, holds the
    worker inside its first call (so that later jobs pile up in the queue)."""

    def __init__(self, inner=None) -> None:
        self.calls: list[list] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.inner = inner or (lambda key, jobs: [(key, job.source) for job in jobs])

    def __call__(self, key, jobs):
        self.calls.append([(key, job.source) for job in jobs])
        self.entered.set()
        self.gate.wait(TIMEOUT)
        return self.inner(key, jobs)


def later(seconds: float = TIMEOUT) -> float:
    return time.monotonic() + seconds


def in_thread(function, *args):
    """Run `function(*args)` in a thread; returns (thread, box): box[0] its result or error."""
    box = [None]

    def run():
        try:
            box[0] = function(*args)
        except Exception as error:  # noqa: BLE001 - the test reads it
            box[0] = error
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


@pytest.fixture
def gated():
    decode = GatedDecode()
    batcher = Batcher(decode, gather_s=0.0, max_rows=8, max_queued=6)
    yield batcher, decode
    decode.gate.set()
    batcher.close(TIMEOUT)


def hold_worker(batcher: Batcher, decode: GatedDecode) -> Job:
    """A first job that keeps the worker inside `decode` until the gate opens."""
    first = Job("hold", "first", rows=1)
    batcher.submit([first])
    assert decode.entered.wait(TIMEOUT)
    return first


def test_waiting_texts_are_decoded_together_grouped_by_key(gated):
    batcher, decode = gated
    hold_worker(batcher, decode)
    jobs = [Job(key, source, rows=1) for key, source in
            [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5)]]
    batcher.submit(jobs)
    decode.gate.set()
    assert batcher.wait(jobs, later()) == [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5)]
    assert decode.calls[1:] == [[("a", 1), ("a", 3), ("a", 5)], [("b", 2), ("b", 4)]]


def test_a_batch_stops_gathering_at_its_rows(gated):
    batcher, decode = gated
    hold_worker(batcher, decode)
    jobs = [Job("a", i, rows=3) for i in range(4)]  # 12 rows; a batch takes up to 8 (and 1 past)
    batcher.submit(jobs)
    decode.gate.set()
    batcher.wait(jobs, later())
    assert [len(call) for call in decode.calls[1:]] == [3, 1]


def test_a_full_queue_refuses_the_whole_request(gated):
    batcher, decode = gated
    hold_worker(batcher, decode)
    batcher.submit([Job("a", i, rows=1) for i in range(4)])
    with pytest.raises(Busy, match="4 texts are waiting"):
        batcher.submit([Job("a", i, rows=1) for i in range(3)])  # 3 more do not fit in 6
    batcher.submit([Job("a", 9, rows=1) for _ in range(2)])  # 2 do: none of the 3 went in


def test_the_jobs_of_a_client_that_left_are_skipped(gated):
    batcher, decode = gated
    hold_worker(batcher, decode)
    left, stays = Job("a", "left", rows=1), Job("a", "stays", rows=1)
    batcher.submit([left])
    batcher.submit([stays])
    with pytest.raises(ConnectionError):
        batcher.wait([left], later(), gone=lambda: True)
    decode.gate.set()
    assert batcher.wait([stays], later()) == [("a", "stays")]
    assert all(source != "left" for call in decode.calls for _, source in call)


def test_a_request_past_its_deadline_is_busy_and_cancelled(gated):
    batcher, decode = gated
    hold_worker(batcher, decode)
    job = Job("a", "late", rows=1)
    batcher.submit([job])
    with pytest.raises(Busy, match="in time"):
        batcher.wait([job], later(0.1))
    assert job.cancelled


def test_an_error_reaches_every_job_of_its_call_and_the_worker_goes_on():
    def decode(key, jobs):
        if key == "bad":
            raise RuntimeError("a bug")
        return [job.source for job in jobs]
    batcher = Batcher(decode)
    try:
        bad = [Job("bad", i, rows=1) for i in range(2)]
        batcher.submit(bad)
        for job in bad:
            with pytest.raises(RuntimeError, match="a bug"):
                batcher.wait([job], later())
        good = Job("good", "fine", rows=1)
        batcher.submit([good])
        assert batcher.wait([good], later()) == ["fine"]
    finally:
        batcher.close(TIMEOUT)


def test_close_finishes_the_call_in_progress_and_refuses_the_rest(gated):
    batcher, decode = gated
    first = hold_worker(batcher, decode)
    waiting = Job("a", "waiting", rows=1)
    batcher.submit([waiting])
    closing, _ = in_thread(batcher.close, TIMEOUT)
    time.sleep(0.1)
    decode.gate.set()
    closing.join(TIMEOUT)
    assert batcher.wait([first], later()) == [("hold", "first")]  # finished, not dropped
    with pytest.raises(Busy, match="shutting down"):
        batcher.wait([waiting], later())
    with pytest.raises(Busy, match="shutting down"):
        batcher.submit([Job("a", "after", rows=1)])
    assert not batcher.thread.is_alive()


# --- through the server ---------------------------------------------------------------------

TEXTS = ["a dog sees the ball .", "the man eats some bread .", "a cat runs .",
         "the woman sees a dog .", "two men play .", "a child eats ."]


def gate_the_worker(service) -> GatedDecode:
    decode = GatedDecode(inner=service.batcher.decode)
    service.batcher.decode = decode
    return decode


def test_concurrent_requests_share_a_call_and_get_the_answers_of_one_by_one(live_server):
    service = live_server.httpd.service
    model = load_run(service.run_dir, str(service.default)).model
    decode = gate_the_worker(service)
    try:
        first, first_box = in_thread(live_server.request, "/api/translate", {"text": TEXTS[0]})
        assert decode.entered.wait(TIMEOUT)
        asks = [in_thread(live_server.request, "/api/translate", {"text": text, "beam": 3})
                for text in TEXTS[1:]]
        deadline = later()
        while service.batcher.queue.qsize() < len(TEXTS) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        decode.gate.set()
        for thread, _ in [(first, first_box), *asks]:
            thread.join(TIMEOUT)
    finally:
        decode.gate.set()
        service.batcher.decode = decode.inner
    assert [len(call) for call in decode.calls] == [1, len(TEXTS) - 1]  # the five in one call
    for text, (_, box) in zip(TEXTS[1:], asks):
        status, _, answer = box[0]
        assert status == 200 and answer["batch"] == len(TEXTS) - 1
        expected = analyze(model, service.source, text, service.settings.train.decoding, beam=3)
        assert_same_answer(answer, dict(expected, checkpoint=answer["checkpoint"],
                                        ms=None, batch=None))


def test_a_full_queue_is_a_503_with_retry_after(live_server, monkeypatch):
    service = live_server.httpd.service
    decode = gate_the_worker(service)
    try:
        holder, _ = in_thread(live_server.request, "/api/translate", {"text": TEXTS[0]})
        assert decode.entered.wait(TIMEOUT)
        monkeypatch.setattr(service.batcher.queue, "maxsize", 2)
        status, headers, payload = live_server.request("/api/translate", {"texts": TEXTS[:3]})
        assert_error(status, payload, 503, "waiting")
        assert headers["Retry-After"] == "1"
    finally:
        decode.gate.set()
        service.batcher.decode = decode.inner
    holder.join(TIMEOUT)
    monkeypatch.undo()
    assert live_server.request("/healthz")[0] == 200
    assert live_server.translate({"text": TEXTS[1]})["translation"]


def wait_for(condition, what: str) -> None:
    deadline = later()
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_client_that_hangs_up_while_waiting_costs_no_decoding(live_server):
    service = live_server.httpd.service
    decode = gate_the_worker(service)
    try:
        holder, _ = in_thread(live_server.request, "/api/translate", {"text": TEXTS[0]})
        assert decode.entered.wait(TIMEOUT)
        body = json.dumps({"text": TEXTS[2]}).encode()
        raw_exchange(live_server.port, b"POST /api/translate HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (live_server.port, len(body), body), read=False)  # sent, then closed
        wait_for(lambda: service.batcher.queue.qsize() == 1, "the request to be queued")
        job = service.batcher.queue.queue[0]
        wait_for(lambda: job.cancelled, "the handler to see its client gone")
    finally:
        decode.gate.set()
        service.batcher.decode = decode.inner
    holder.join(TIMEOUT)
    wait_for(job.done.is_set, "the worker to drop the job")
    assert len(decode.calls) == 1  # the held request's call only: the other was skipped
    assert live_server.translate({"text": TEXTS[2]})["translation"]


def test_a_batch_waits_for_the_clients_it_just_answered():
    decode = GatedDecode()
    batcher = Batcher(decode, gather_s=TIMEOUT, max_rows=64)
    try:
        hold_worker(batcher, decode)
        queued = [Job("a", i, rows=1) for i in range(3)]
        batcher.submit(queued)
        decode.gate.set()  # answered: its client and the three waiting are expected next
        time.sleep(0.2)
        back = Job("a", "back", rows=1)  # the answered client, asking again
        batcher.submit([back])
        batcher.wait([*queued, back], later())
        assert decode.calls[1] == [("a", 0), ("a", 1), ("a", 2), ("a", "back")]
    finally:
        decode.gate.set()
        batcher.close(TIMEOUT)


def test_a_lone_client_is_never_kept_waiting():
    batcher = Batcher(lambda key, jobs: [job.source for job in jobs], gather_s=TIMEOUT)
    try:
        for i in range(3):  # each batch answers one text, so the next expects one
            started = time.monotonic()
            job = Job("a", i, rows=4)
            batcher.submit([job])
            assert batcher.wait([job], later()) == [i]
            assert time.monotonic() - started < TIMEOUT / 3
    finally:
        batcher.close(TIMEOUT)
