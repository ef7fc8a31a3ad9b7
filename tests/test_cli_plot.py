"""`transformer plot RUN_DIR [--attention SENTENCE]`: learning curves and attention maps
as PNG files in RUN_DIR/plots, through the command line, for a synthetic and a
translation run.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from transformer.cli.main import main

from kit import run_main

TINY_MODEL = ["d_model=32", "n_heads=2", "d_ff=64", "n_encoder_layers=1", "n_decoder_layers=1"]
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
    torch.set_num_threads(1)
    code = main(["train", "copy", "--config", "copy", "--quiet",
                 "--steps", "6", "--out", str(run_dir), "--set", *TINY_MODEL, "batch_size=8",
                 "eval_examples=10", "log_every=1", "eval_every=3", "target_exact_match=0"])
    assert code == 0
    return run_dir


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("translation")
    animals = ["cat", "dog", "bird", "horse", "fish"]
    tiere = ["katze", "hund", "vogel", "pferd", "fisch"]
    colours = ["red", "blue", "green", "small", "big"]
    farben = ["rote", "blaue", "grüne", "kleine", "große"]
    en, de = [], []
    for i in range(100):
        a, c = i % 5, i // 5 % 5
        en.append(f"the {colours[c]} {animals[a]} runs .")
        de.append(f"die {farben[c]} {tiere[a]} läuft .")
    (folder / "train.en").write_text("\n".join(en) + "\n", encoding="utf-8")
    (folder / "train.de").write_text("\n".join(de) + "\n", encoding="utf-8")
    run_dir = folder / "run"
    torch.set_num_threads(1)
    code = main(["train", "parallel", "--src", str(folder / "train.en"), "--tgt",
                 str(folder / "train.de"), "--out", str(run_dir), "--steps", "3", "--quiet",
                 "--set", *TINY_MODEL, "vocab_size=120", "max_len=24", "batch_tokens=256",
                 "eval_every=1000", "bleu_every=1000", "beam_size=1", "max_len_b=5",
                 "log_every=1"])
    assert code == 0
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
    code, out, err = run_main(capsys, ["plot", translation_run, "--attention", "the red cat runs ."])
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
