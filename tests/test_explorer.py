"""The offline explorer page (explore.py): self-contained, safely escaped, and built from
real analyze() answers, one per checkpoint. The page in a browser: test_explorer_browser.py.
"""

from __future__ import annotations

import math
import re

import pytest

from transformer.serving.explorer_page import explore, render_page, script_json

from explorer_helpers import ablated_copy, embedded_data, expected_panels

# Strings that would break a page that inlined them carelessly.
TRICKY = "</script><script>alert(1)</script> <!-- &amp; \u2028 Stra\u00dfe \U0001F600"


def softmax_rows(rows: int, cols: int, causal: bool = False) -> list[list[float]]:
    """Made-up attention: each row a distribution peaked on one key."""
    out = []
    for i in range(rows):
        keys = range(min(i + 1, cols) if causal else cols)
        scores = [math.exp(-abs(i - j)) for j in keys]
        out.append([s / sum(scores) for s in scores] + [0.0] * (cols - len(scores)))
    return out


def hand_made_result(layers: int = 2, heads: int = 2) -> dict:
    """An analyze() answer by hand, with a sentence that tries to end the script."""
    source = ["\u2581the", "\u2581cat", "\u2581" + TRICKY, "<eos>"]
    target = ["\u2581die", "\u2581katze", "<eos>"]
    S, T = len(source), len(target)
    return {
        "translation": "die katze " + TRICKY,
        "hypotheses": [{"text": "die katze", "score": -0.5, "log_prob": -1.0, "tokens": target[:-1]}],
        "source_tokens": source, "target_tokens": target,
        "decoder_input_tokens": ["<bos>", *target[:-1]],
        "token_probs": [0.9, 0.6, 0.95],
        "alternatives": [[{"token": t, "prob": 0.5}] for t in target],
        "checkpoint": "step-000001", "ms": 12.5,
        "attention": {"encoder": [[softmax_rows(S, S)] * heads] * layers,
                      "decoder": [[softmax_rows(T, T, causal=True)] * heads] * layers,
                      "cross": [[softmax_rows(T, S)] * heads] * layers},
    }


def hand_made_data() -> dict:
    result = hand_made_result()
    return {"text": TRICKY, "info": {"model": {"d_model": 8}, "checkpoints": []},
            "results": [{"label": "step-000001", "checkpoint": "step-000001", "result": result}],
            "compare": None}


def test_page_is_self_contained():
    page = render_page(hand_made_data())
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(\w+:)?//""", page, re.I)
    assert not re.search(r"<link\b(?![^>]*href=\"data:)|<script\b[^>]*\bsrc=|@import|url\(",
                         page, re.I)
    assert "\"static/" not in page  # every asset was inlined
    assert page.count("<style>") == 1 and page.count("<script>") == 6


def test_sentence_cannot_end_the_script():
    page = render_page(hand_made_data())
    # Only the page's own six scripts open and close; the sentence's tags stay inside JSON.
    assert page.count("</script>") == page.count("<script>") == 6
    assert "<script>alert" not in page and "<!-- &amp;" not in page
    assert "\\u003c/script\\u003e" in page


def test_data_round_trips():
    data = hand_made_data()
    assert embedded_data(render_page(data)) == data


def test_script_json_refuses_nan():
    with pytest.raises(ValueError):
        script_json({"score": float("nan")})


@pytest.fixture(scope="module")
def runs(trained_translation_run, tmp_path_factory):
    """(the trained run of conftest.py, its copy marked as the mask-after-softmax variant)."""
    return trained_translation_run, ablated_copy(trained_translation_run,
                                                 tmp_path_factory.mktemp("ablated"))


def test_explore_one_result_per_checkpoint(runs, tmp_path):
    run, _ = runs
    out = explore(run, "the cat finds the ball .", tmp_path / "page.html", beam=2)
    data = embedded_data(out.read_text(encoding="utf-8"))
    assert [entry["checkpoint"] for entry in data["results"]] == [
        "step-000020", "step-000040", "best"]
    assert data["compare"] is None and data["text"] == "the cat finds the ball ."
    assert data["info"]["checkpoint"] == "best" and data["info"]["languages"] == "en-de"
    assert [c["step"] for c in data["info"]["checkpoints"]] == [20, 40, 40]
    for entry in data["results"]:
        result = entry["result"]
        assert result["checkpoint"] == entry["checkpoint"]
        assert len(expected_panels(result)) == 3 * 2  # one layer a stack, two heads, three kinds
        assert len(result["attention"]["cross"][0][0]) == len(result["target_tokens"])


def test_explore_compare_restores_the_ablation(runs, tmp_path):
    """The compare run is marked "mask-after-softmax": its decoder rows lose mass (the
    weights of future keys, zeroed after the softmax), the baseline's sum to 1."""
    run, ablated = runs
    out = explore(run, "the cat finds the ball .", tmp_path / "page.html", compare=ablated,
                  checkpoints="chosen")
    data = embedded_data(out.read_text(encoding="utf-8"))
    assert len(data["results"]) == 1 and len(data["compare"]) == 1
    assert data["compare"][0]["label"].startswith("mask-after-softmax")

    def row_sums(entry):
        return [sum(row) for row in entry["result"]["attention"]["decoder"][0][0]]

    assert all(abs(s - 1) < 0.01 for s in row_sums(data["results"][0]))
    assert min(row_sums(data["compare"][0])) < 0.99


def test_explore_refuses_unknown_checkpoints_choice(runs, tmp_path):
    from transformer.errors import UserError
    with pytest.raises(UserError, match="checkpoints"):
        explore(runs[0], "a dog", tmp_path / "page.html", checkpoints="some")


def test_the_explore_command_writes_one_offline_page(trained_translation_run, tmp_path, capsys):
    from kit import run_main
    out = tmp_path / "page.html"
    code, stdout, err = run_main(capsys, ["explore", trained_translation_run, "the cat finds the ball .",
                                          "--out", out, "--beam", 2])
    assert code == 0, err
    assert stdout.strip() == str(out)
    html = out.read_text(encoding="utf-8")
    assert "window.EXPLORER_DATA" in html and "the cat finds the ball ." in html


def test_serve_refuses_a_bad_port_in_one_line(trained_translation_run, capsys):
    from kit import assert_user_error, run_main
    code, _, err = run_main(capsys, ["serve", trained_translation_run, "--port", "-1"])
    assert_user_error(code, err, "--port")
