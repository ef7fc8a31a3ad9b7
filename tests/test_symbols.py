"""A synthetic run's vocabulary: numbered symbols as text, through translate, serve, explore.

`copy_run` trains a one-layer copy model until it copies every held-out sequence (about
200 steps, a few seconds): `transformer translate RUN "3 4 5"` must then print "3 4 5",
and its cross-attention must show the diagonal a learner should see first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from transformer.data.symbols import SymbolVocabulary
from transformer.errors import UserError
from transformer.run.rundir import load_run
from transformer.training.tasks import SyntheticTask

from explorer_helpers import embedded_data
from kit import assert_user_error, run_main, train_copy_run
from serve_helpers import Server, assert_error

NUM_SYMBOLS = 8


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory) -> Path:
    """A copy run of 8 symbols, lengths 3 to 6, stopped once exact match reaches 100%."""
    run_dir = tmp_path_factory.mktemp("copy") / "run"
    code = train_copy_run(run_dir, "--steps", 400, "--set", f"num_symbols={NUM_SYMBOLS}",
                          "max_length=6", "batch_size=32", "warmup=60", "lr_factor=1.0",
                          "eval_every=20", "eval_examples=40", "save_every=1000",
                          "target_exact_match=1.0")
    assert code == 0
    return run_dir


def edited_copy(run_dir: Path, folder: Path, **train) -> Path:
    """A copy of `run_dir` whose config.json has the `train` keys changed."""
    copied = Path(shutil.copytree(run_dir, folder / "edited"))
    config = json.loads((copied / "config.json").read_text(encoding="utf-8"))
    config["train"].update(train)
    (copied / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return copied


# --- the vocabulary ---------------------------------------------------------------------------

def test_symbols_are_the_numbers_training_prints():
    vocab = SymbolVocabulary(16)
    assert vocab.vocab_size == 20 and (vocab.pad_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2)
    assert vocab.encode("3 7 1 12") == [7, 11, 5, 16]
    assert vocab.decode([7, 11, 5, 16]) == "3 7 1 12"
    assert vocab.encode("  3\t7\n") == [7, 11] and vocab.encode("") == []
    # The examples printed during training are this text: each reads back to its ids.
    task = SyntheticTask("copy", 16, 3, 12, batch_size=4, seed=0, eval_examples=20)
    for src, _ in task.eval_pairs:
        assert vocab.decode(src) == task.to_text(src)
        assert vocab.encode(task.to_text(src)) == src


def test_special_tokens_are_named_and_left_out_of_the_text():
    vocab = SymbolVocabulary(16)
    assert [vocab.token(i) for i in (0, 1, 2, 3, 4, 19)] == ["<pad>", "<bos>", "<eos>", "<unk>",
                                                           "0", "15"]
    assert vocab.decode([1, 7, 3, 2, 0]) == "3"
    with pytest.raises(ValueError, match="20"):
        vocab.token(20)


@pytest.mark.parametrize("word", ["x", "-1", "16", "3.0", "+3", "\u0663", "<eos>"])
def test_a_word_that_is_no_symbol_is_refused_by_name(word):
    vocab = SymbolVocabulary(16)
    with pytest.raises(UserError) as info:
        vocab.encode(f"3 {word} 4")
    assert str(info.value) == (f"{word!r} is not a symbol of this run; "
                               "its symbols are the numbers 0 to 15")


def test_encode_known_names_the_line_and_leaves_nothing_out():
    vocab = SymbolVocabulary(16)
    assert vocab.encode_known(["3 4", "15"]) == ([[7, 8], [19]], [[], []])
    with pytest.raises(UserError, match="^input line 2: '16' is not a symbol"):
        vocab.encode_known(["3 4", "16", "x"])
    with pytest.raises(UserError, match="^'16' is not a symbol"):  # one text: no line to name
        vocab.encode_known(["16"])


# --- the run directory ------------------------------------------------------------------------

def test_load_run_gives_a_synthetic_run_its_symbols(copy_run):
    _run = load_run(copy_run)
    model, vocab = _run.model, _run.source
    assert isinstance(vocab, SymbolVocabulary) and vocab.num_symbols == NUM_SYMBOLS
    assert vocab.vocab_size == model.cfg.src_vocab_size == model.cfg.tgt_vocab_size


def test_load_run_refuses_symbols_that_do_not_fit_the_model(copy_run, tmp_path):
    with pytest.raises(UserError, match=r"config\.json: num_symbols=9 does not fit the model's "
                                        r"vocabulary of 12 ids"):
        load_run(edited_copy(copy_run, tmp_path, num_symbols=9))


def test_load_run_of_a_translation_run_needs_its_tokenizer(copy_run, tmp_path):
    with pytest.raises(UserError, match=r"tokenizer\.json: no such file \(a translation run"):
        load_run(edited_copy(copy_run, tmp_path, task="parallel"))


# --- translate, serve, explore ----------------------------------------------------------------

def test_translate_copies_the_symbols(copy_run, capsys):
    code, out, err = run_main(capsys, ["translate", copy_run, "3 4 5", "0 7 1 6 2"])
    assert code == 0, err
    assert out.splitlines() == ["3 4 5", "0 7 1 6 2"]


def test_translate_refuses_a_word_that_is_no_symbol(copy_run, capsys):
    code, _, err = run_main(capsys, ["translate", copy_run, "3 8"])
    assert_user_error(code, err, "'8' is not a symbol", "0 to 7")
    code, _, err = run_main(capsys, ["translate", copy_run, "3 4", "three"])
    assert_user_error(code, err, "input line 2", "'three'")


def test_evaluate_a_copy_run_needs_files_of_its_symbols(copy_run, tmp_path, capsys):
    code, _, err = run_main(capsys, ["evaluate", copy_run])
    assert_user_error(code, err, "no Multi30k split", "--src FILE --ref FILE")
    src = tmp_path / "src.txt"
    src.write_text("3 4 5\n0 7 1 6 2\n", encoding="utf-8")
    code, out, err = run_main(capsys, ["evaluate", copy_run, "--src", src, "--ref", src])
    assert code == 0, err
    assert "BLEU = 100.00" in out


def test_serve_answers_in_symbols_with_the_diagonal_cross_attention(copy_run):
    running = Server(copy_run)
    try:
        answer = running.translate({"text": "3 4 5 1", "attention": True, "beam": 2})
        status, _, payload = running.request("/api/translate", {"texts": ["3", "3 9"]})
        assert_error(status, payload, 400, "texts[1]", "'9'", "0 to 7")
        status, _, info = running.request("/api/info")
    finally:
        running.stop()
    assert answer["translation"] == "3 4 5 1"
    assert answer["source_tokens"] == answer["target_tokens"] == ["3", "4", "5", "1", "<eos>"]
    assert answer["decoder_input_tokens"] == ["<bos>", "3", "4", "5", "1"]
    assert {alt["token"] for row in answer["alternatives"] for alt in row} <= \
        {str(k) for k in range(NUM_SYMBOLS)} | {"<eos>", "<unk>"}
    maps = answer["attention"]  # [L][H][rows][columns]: one layer a stack, two heads; S = T = 5
    assert [[len(head), len(head[0])] for head in maps["encoder"][0]] == [[5, 5]] * 2
    assert [[len(head), len(head[0])] for head in maps["decoder"][0]] == [[5, 5]] * 2
    assert [[len(head), len(head[0])] for head in maps["cross"][0]] == [[5, 5]] * 2
    # To write its t-th symbol, the copy model looks at the t-th source symbol: some head's
    # cross-attention peaks on the diagonal for every symbol.
    peaks = [[max(range(5), key=row.__getitem__) for row in head[:4]] for head in maps["cross"][-1]]
    assert [0, 1, 2, 3] in peaks, peaks
    assert info["languages"] == "copy" and info["symbols"] == NUM_SYMBOLS


def test_explore_writes_a_page_of_symbols(copy_run, tmp_path, capsys):
    out = tmp_path / "copy.html"
    code, stdout, err = run_main(capsys, ["explore", copy_run, "3 4 5", "--out", out,
                                          "--beam", 2])
    assert code == 0, err
    assert stdout.strip() == str(out)
    data = embedded_data(out.read_text(encoding="utf-8"))
    assert data["info"]["symbols"] == NUM_SYMBOLS and data["text"] == "3 4 5"
    assert [entry["checkpoint"] for entry in data["results"]] == \
        [path.name for path in sorted((copy_run / "checkpoints").iterdir())
         if path.name.startswith("step-")] + ["best"]
    final = data["results"][-1]["result"]
    assert final["translation"] == "3 4 5"
    assert final["source_tokens"] == final["target_tokens"] == ["3", "4", "5", "<eos>"]
    assert len(final["attention"]["cross"][0][0]) == 4
