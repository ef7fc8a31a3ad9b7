"""Translating real input: sentences past the model's limit, symbols the vocabulary lacks,
n-best lists, and the BLEU evaluation of a training run on such data.

Runs are trained in seconds on the made-up corpus of test_cli_errors.py.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from pathlib import Path

import pytest

from transformer.training.config import TrainConfig

from kit import MAX_LEN, evaluations, run_main, train_translation_run, write_corpus

LIMIT = MAX_LEN - 1  # tokens a source may have (collate adds <eos>)
LONG = " ".join(["the red car"] * MAX_LEN)  # >= 3 * MAX_LEN tokens
CLEAN = "my friend holds the red car ."
# The same sentence with an emoji, a CJK character and symbols the corpus never had (as
# <unk>, they change this sentence's translation).
WITH_UNKNOWN = "my friend 猫 holds 🧒🧒 the red car → € ."


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """60 steps with a short warmup: enough to translate the corpus's sentences."""
    folder = tmp_path_factory.mktemp("trained")
    train_translation_run(folder / "run", *write_corpus(folder), "--steps", 60,
                          "--set", "warmup=20")
    return folder / "run"


def translate(capsys, run_dir: Path, *args) -> tuple[list[str], list[str]]:
    """(stdout lines, the notes and warnings on stderr) of a successful `transformer translate`."""
    code, out, err = run_main(capsys, ["translate", run_dir, "--beam", "2", *args])
    assert code == 0, err
    return out.split("\n")[:-1], [line for line in err.splitlines()
                                   if line.startswith(("note: ", "warning: "))]


def test_long_truncate_cuts_each_long_line_and_warns_once_per_line(trained, tmp_path, capsys):
    lines = ["a dog eats the ball .", LONG, "the cat likes a book .", LONG]
    text = tmp_path / "input.txt"
    text.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    out, err = translate(capsys, trained, "--long", "truncate", "--input", text)
    assert len(out) == 4 and out[1] and out[3]  # line-aligned, the long lines translated too
    assert len(err) == 2, err
    assert err[0].startswith("warning: input line 2: ") and err[0].endswith(f"cut to {LIMIT}")
    assert err[1].startswith("warning: input line 4: ")
    alone, _ = translate(capsys, trained, lines[0], lines[2])
    assert alone == [out[0], out[2]]  # the other lines are untouched


def test_unknown_symbols_do_not_cost_the_sentence(trained, capsys):
    out, err = translate(capsys, trained, WITH_UNKNOWN, CLEAN)
    assert out[0] and out[0] == out[1], out  # as if the symbols were not there
    assert err == ["note: input line 1: 5 unknown symbols dropped (猫, 🧒, →, €)"]


def test_n_best_prints_scored_hypotheses_per_sentence(trained, capsys):
    sentences = ["a dog eats the ball .", "", "the cat likes a book ."]
    out, _ = translate(capsys, trained, "--beam", "3", "--n-best", "3", *sentences)
    blocks: list[list[str]] = [[]]
    for line in out:  # an empty line ends each sentence's block
        if line:
            blocks[-1].append(line)
        else:
            blocks.append([])
    assert blocks[-1] == [] and len(blocks) == 4
    assert blocks[1] == []  # an empty sentence has no hypotheses
    best, _ = translate(capsys, trained, "--beam", "3", *sentences)
    for block, plain in zip((blocks[0], blocks[2]), (best[0], best[2])):
        rows = [line.split("\t") for line in block]
        assert len(rows) == 3 and all(len(row) == 2 for row in rows)
        scores = [float(score) for score, _ in rows]
        assert scores == sorted(scores, reverse=True)
        assert rows[0][1] == plain  # the first is the translation translate prints


# --- training-time BLEU on validation data the model cannot hold whole ----------------------

@pytest.fixture(scope="module")
def long_validation_run(tmp_path_factory) -> tuple[Path, str]:
    """(run dir, what training printed): a validation file with a line past max_len=16,
    evaluations every 2 steps of 4, bleu_every=0."""
    folder = tmp_path_factory.mktemp("long-valid")
    src, tgt = write_corpus(folder)
    (folder / "valid.en").write_text(f"a dog sees the ball .\n{LONG}\n", encoding="utf-8")
    (folder / "valid.de").write_text("ein hund sieht den ball .\ndas rote auto .\n",
                                     encoding="utf-8")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train_translation_run(folder / "run", src, tgt, "--valid-src", folder / "valid.en",
                              "--valid-tgt", folder / "valid.de",
                              "--set", "max_len=16", "eval_every=2", "bleu_every=0")
    return folder / "run", printed.getvalue()


def test_bleu_evaluation_cuts_a_validation_sentence_past_max_len(long_validation_run):
    run_dir, printed = long_validation_run  # the run finished (exit 0)
    assert "bleu" in evaluations(run_dir)[-1]
    # Said once, at the start, not at every evaluation.
    assert printed.count("sentences cut to 15 tokens: 1,") == 1, printed


def test_bleu_every_zero_means_at_every_evaluation(long_validation_run):
    run_dir, _ = long_validation_run
    evals = evaluations(run_dir)
    assert [r["step"] for r in evals] == [2, 4] and all("bleu" in r for r in evals)
    documented = next(line for line in inspect.getsource(TrainConfig).splitlines()
                      if "bleu_every:" in line)
    assert "0 = at every evaluation" in documented
