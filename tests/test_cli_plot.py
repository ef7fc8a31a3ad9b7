"""`transformer plot RUN_DIR [--attention SENTENCE]`: learning curves and attention maps
as PNG files in RUN_DIR/plots, through the command line, for a synthetic and a
translation run.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from transformer.cli import experiments as experiments_commands
from transformer.serving.service import TranslationService

from kit import run_main, train_copy_run

ATTENTION_FILES = {"attention-encoder-layer1.png", "attention-decoder-self-layer1.png",
                   "attention-cross-layer1.png"}  # one map per kind and layer; one layer each


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file; fails unless the file starts like one."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND", f"{path} is cut short"
    return struct.unpack(">II", data[16:24])


def assert_pictures(paths: list[Path], min_bytes: int = 3000) -> None:
    for path in paths:
        width, height = png_size(path)
        assert width >= 200 and height >= 200, (path, width, height)
        # A figure with axes, ticks and a curve or heatmap on it is several KB;
        # an empty canvas compresses to far less.
        assert path.stat().st_size >= min_bytes, (path, path.stat().st_size)


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("copy") / "run"
    assert train_copy_run(run_dir) == 0
    return run_dir


@pytest.fixture(scope="module")
def translation_run(trained_translation_run, tmp_path_factory) -> Path:
    """The shared trained run, copied: plotting writes into its folder."""
    run_dir = tmp_path_factory.mktemp("translation") / "run"
    shutil.copytree(trained_translation_run, run_dir)
    return run_dir


def test_plot_writes_the_learning_curves(copy_run, capsys):
    code, out, err = run_main(capsys, ["plot", copy_run])
    assert code == 0, err
    plots = copy_run / "plots"
    expected = {plots / name for name in ("loss.png", "lr.png", "exact_match.png")}
    assert {Path(line) for line in out.split()} == expected  # prints what it wrote
    assert_pictures(sorted(expected))
    assert not (plots / "bleu.png").exists()  # a synthetic run has no BLEU to draw


def test_plot_attention_of_a_synthetic_run(copy_run, capsys):
    code, out, err = run_main(capsys, ["plot", copy_run, "--attention", "3 1 4 1 5"])
    assert code == 0, err
    written = {Path(line).name for line in out.split()}
    assert ATTENTION_FILES <= written
    assert_pictures([copy_run / "plots" / name for name in ATTENTION_FILES])


def test_plot_attention_of_a_translation_run(translation_run, capsys):
    code, out, err = run_main(capsys, ["plot", translation_run, "--attention", "the cat sees a book ."])
    assert code == 0, err
    written = {Path(line).name for line in out.split()}
    assert {"loss.png", "lr.png"} | ATTENTION_FILES <= written
    assert_pictures([translation_run / "plots" / name for name in ATTENTION_FILES])


@pytest.mark.parametrize("sentence, named", [
    ("three one four", "three one four"),  # words for a run that knows numbers
    ("3 99", "99"),  # a symbol the run never had
    ("3 -5", "-5"),
    ("", "--attention"),
])
def test_bad_attention_sentence_for_a_synthetic_run(sentence, named, copy_run, capsys):
    code, _, err = run_main(capsys, ["plot", copy_run, "--attention", sentence])
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0]


def test_plot_of_a_folder_without_metrics(tmp_path, capsys):
    code, _, err = run_main(capsys, ["plot", tmp_path])
    assert code == 2
    assert err.startswith("error: ") and str(tmp_path / "metrics.jsonl") in err


def test_plot_draws_the_maps_the_explorer_shows(translation_run, capsys, monkeypatch):
    """One sentence, one set of maps: plot --attention decodes as the server and the
    explorer do (the same source ids, beam, hypothesis), so it draws what they show."""
    drawn = {}

    def capture(maps, src_tokens, tgt_tokens, out_dir):
        drawn.update(maps=maps, src=src_tokens, tgt=tgt_tokens)
        return []

    monkeypatch.setattr(experiments_commands, "plot_attention", capture)
    sentence = "the cat ⚽ sees a book ."  # with a symbol the vocabulary lacks: left out by both
    code, _, err = run_main(capsys, ["plot", translation_run, "--attention", sentence])
    assert code == 0, err
    shown = TranslationService(translation_run).translate({"text": sentence, "attention": True})
    assert drawn["src"] == shown["source_tokens"] and "<unk>" not in drawn["src"]
    assert drawn["tgt"] == shown["decoder_input_tokens"]
    for kind, key in (("encoder", "encoder"), ("decoder_self", "decoder"), ("cross", "cross")):
        assert [layer.tolist() for layer in drawn["maps"][kind]] == shown["attention"][key], kind
