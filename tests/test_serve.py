"""The translation server over real HTTP on 127.0.0.1: what it answers.

`live_server` (conftest.py: the small trained run on a free port, in a thread, shut down
after the module) answers most tests; every request has a timeout. Bad requests and rude
clients: test_serve_errors.py.
"""

from __future__ import annotations

import _thread
import json
import socket
import threading
import urllib.request
from pathlib import Path

import pytest

from transformer.cli.main import main
from transformer.decoding.analyze import analyze
from transformer.errors import UserError
from transformer.run.rundir import load_run
from transformer.serving.handler import EXPLORER_DIR
from transformer.serving.server import make_server, serve
from transformer.training.metrics import read_metrics

from kit import TINY_MODEL
from serve_helpers import TEXT, TIMEOUT, Server, assert_error

RESULT_FIELDS = {"translation", "hypotheses", "source_tokens", "target_tokens",
                 "decoder_input_tokens", "token_probs", "alternatives", "checkpoint", "ms",
                 "batch"}


@pytest.fixture(scope="module")
def default_model(live_server):
    """What the server uses by default, loaded here on its own."""
    service = live_server.httpd.service
    _run = load_run(service.run_dir, str(service.default))
    model, tokenizer = _run.model, _run.source
    return model, tokenizer


# --- the answers --------------------------------------------------------------------------

def test_healthz(live_server):
    assert live_server.request("/healthz")[::2] == (200, {"status": "ok"})


def test_translate_answers_what_analyze_does(live_server, default_model):
    answer = live_server.translate({"text": TEXT})
    assert set(answer) == RESULT_FIELDS
    assert answer["checkpoint"] == live_server.httpd.service.default.name
    assert isinstance(answer["ms"], float) and answer["ms"] >= 0
    assert answer["batch"] == 1  # nothing else was asked meanwhile
    model, vocab = default_model
    expected = analyze(model, vocab, TEXT, live_server.httpd.service.settings.train.decoding)
    assert answer["translation"] == expected["translation"]
    assert answer["target_tokens"] == expected["target_tokens"]
    assert answer["token_probs"] == pytest.approx(expected["token_probs"], abs=1e-6)


def test_batch(live_server):
    texts = [TEXT, "the cat likes an apple .", "my friend finds a book ."]
    answer = live_server.translate({"texts": texts, "beam": 2})
    assert set(answer) == {"results"} and len(answer["results"]) == 3
    for text, result in zip(texts, answer["results"]):
        assert set(result) == RESULT_FIELDS
        assert result["translation"] == live_server.translate({"text": text, "beam": 2})["translation"]


def test_attention_and_n_best(live_server):
    answer = live_server.translate({"text": TEXT, "beam": 3, "n_best": 3, "attention": True})
    assert len(answer["hypotheses"]) == 3
    cfg = live_server.httpd.service.settings.to_json()["model"]
    S, T = len(answer["source_tokens"]), len(answer["target_tokens"])
    shapes = {"encoder": (cfg["n_encoder_layers"], S, S), "decoder": (cfg["n_decoder_layers"], T, T),
              "cross": (cfg["n_decoder_layers"], T, S)}
    for kind, (layers, rows, cols) in shapes.items():
        maps = answer["attention"][kind]
        assert len(maps) == layers
        assert all(len(head) == rows and all(len(row) == cols for row in head)
                   for layer in maps for head in layer), kind
        assert len(maps[0]) == cfg["n_heads"]


def test_checkpoint_selection(live_server):
    run_dir = live_server.httpd.service.run_dir
    for name in ["step-000020", "step-000040", "best", "step-000020", None]:
        answer = live_server.translate({"text": TEXT, "checkpoint": name})
        used = name or live_server.httpd.service.default.name
        assert answer["checkpoint"] == used
        _run = load_run(run_dir, str(run_dir / "checkpoints" / used))
        model, tokenizer = _run.model, _run.source
        expected = analyze(model, tokenizer, TEXT, live_server.httpd.service.settings.train.decoding)
        assert answer["translation"] == expected["translation"]
    # The two steps really are different models: their probabilities differ.
    early, late = (live_server.translate({"text": TEXT, "checkpoint": name})
                   for name in ("step-000020", "step-000040"))
    assert early["token_probs"] != late["token_probs"]


def test_info(live_server):
    status, _, info = live_server.request("/api/info")
    assert status == 200
    service = live_server.httpd.service
    run_dir = service.run_dir
    assert info["model"] == json.loads((run_dir / "config.json").read_text())["model"]
    assert info["parameters"] == load_run(run_dir).model.num_parameters()
    assert info["max_len"] == 32 and info["languages"] == "en-de" and info["task"] == "parallel"
    assert info["checkpoints"] == [{"name": "step-000020", "step": 20},
                                   {"name": "step-000040", "step": 40}, {"name": "best", "step": 40}]
    assert info["checkpoint"] == service.default.name and info["step"] == 40
    bleu = [r for r in read_metrics(run_dir / "metrics.jsonl") if "bleu" in r][-1]
    assert info["valid_bleu"] == pytest.approx(bleu["bleu"]) and info["valid_bleu_step"] == 40
    assert info["symbols"] is None  # a translation run reads text, not numbered symbols


def test_explorer_page_and_its_files(live_server):
    if not (EXPLORER_DIR / "index.html").is_file():
        pytest.skip("no src/transformer/serving/explorer/index.html in this checkout")
    status, headers, page = live_server.request("/")
    assert status == 200 and headers.get_content_type() == "text/html"
    assert page == (EXPLORER_DIR / "index.html").read_bytes()
    for file in EXPLORER_DIR.iterdir():
        if file.is_file() and not file.name.startswith("."):
            status, _, payload = live_server.request(f"/static/{file.name}")
            assert status == 200
            if file.suffix != ".json":
                assert payload == file.read_bytes()


def test_static_names_outside_the_folder_are_not_found(live_server):
    for path in ["/static/", "/static/nothing.js", "/static/../serve.py", "/static/%2e%2e/serve.py",
                 "/static/..%2fserve.py", "/static//etc/passwd"]:
        status, _, payload = live_server.request(path)
        assert_error(status, payload, 404)


# --- other runs, the serve() loop --------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("copy") / "run"
    assert main(["train", "copy", "--steps", "1", "--out", str(run_dir), "--quiet",
                 "--set", *TINY_MODEL]) == 0
    return run_dir


def test_a_synthetic_run_is_served_in_its_symbols(synthetic_run):
    """One step of training copies nothing yet; what matters is the vocabulary: numbers in,
    numbers out (a trained copy run is served in test_symbols.py)."""
    running = Server(synthetic_run)
    try:
        answer = running.translate({"text": "4 5 6"})
        assert answer["source_tokens"] == ["4", "5", "6", "<eos>"]
        symbols = [t for t in answer["target_tokens"][:-1] if t.isdigit()]  # <unk> is left out
        assert answer["translation"] == " ".join(symbols)
        status, _, payload = running.request("/api/translate", {"text": "4 16"})
        assert_error(status, payload, 400, "'16'", "0 to 15")
        status, _, info = running.request("/api/info")
        assert status == 200 and info["languages"] == "copy" and info["symbols"] == 16
        assert info["valid_bleu"] is None
    finally:
        running.stop()


def test_make_server_refuses_a_bad_run_or_port(trained_translation_run, tmp_path, live_server):
    with pytest.raises(UserError, match="no such run directory"):
        make_server(tmp_path / "nowhere", port=0)
    with pytest.raises(UserError, match="cannot listen"):
        make_server(trained_translation_run, port=live_server.port)


def test_serve_stops_cleanly_on_ctrl_c(trained_translation_run, capsys):
    seen = {}

    def ready(url: str) -> None:
        def ask_then_interrupt() -> None:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=TIMEOUT) as response:
                    seen["status"] = response.status
            finally:
                _thread.interrupt_main()  # what Ctrl-C does

        seen["url"] = url
        threading.Thread(target=ask_then_interrupt, daemon=True).start()

    assert serve(trained_translation_run, port=0, quiet=True, ready=ready) == 0
    assert seen["status"] == 200
    assert seen["url"] in capsys.readouterr().out
    port = int(seen["url"].rstrip("/").rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):  # the socket is closed
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
