"""Bad input gets one clear line, never a traceback: the command line's error contract.

Every case runs `transformer.cli.main([...])` as the `transformer` command would and
checks the contract a user can rely on: exit code 2, exactly one line on stderr, starting with
"error:", no traceback, and the message names what is wrong and where (the file, the
line, the key). The translate cases use one small trained translation run, built once.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from kit import (
    MAX_LEN,
    TINY_MODEL,
    assert_user_error,
    run_main,
    train_translation_run,
    write_corpus,
)


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("translation")
    run_dir = folder / "run"
    train_translation_run(run_dir, *write_corpus(folder))
    return run_dir


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Good and bad input files, one of each kind a user might bring."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "two.en").write_text("a b\nc d\n", encoding="utf-8")
    (folder / "two.de").write_text("e f\ng h\n", encoding="utf-8")
    (folder / "one.de").write_text("e f\n", encoding="utf-8")
    (folder / "empty.en").write_bytes(b"")
    (folder / "latin1.en").write_bytes(b"first line\nna\xefve caf\xe9\nthird\n")  # not UTF-8
    (folder / "three.de").write_text("x\ny\nz\n", encoding="utf-8")
    (folder / "typo.toml").write_text('task = "copy"\nd_modle = 64\n', encoding="utf-8")
    (folder / "broken.toml").write_text('task = "copy"\nd_model = = 64\n', encoding="utf-8")
    (folder / "empty-run").mkdir()
    return folder


@dataclasses.dataclass
class Case:
    args: object  # (files folder, fresh out dir) -> argv
    names: object  # (files folder, fresh out dir) -> strings the message must contain


def train_parallel(src: str, tgt: str, *sets: str):
    return lambda f, out: ["train", "parallel", "--src", f / src, "--tgt", f / tgt, "--out", out,
                           "--set", *TINY_MODEL, *sets]


def train_copy(*sets: str):
    return lambda f, out: ["train", "copy", "--steps", "1", "--out", out, "--set", *sets]


TRAIN_CASES = {
    "missing --src file": Case(train_parallel("nowhere.en", "two.de"),
                               lambda f, out: [f / "nowhere.en", "no such file"]),
    "empty parallel file": Case(train_parallel("empty.en", "two.de"),
                                lambda f, out: [f / "empty.en", "empty"]),
    "line counts differ": Case(train_parallel("two.en", "one.de"),
                               lambda f, out: [f / "two.en", f / "one.de", "2", "1"]),
    "undecodable bytes": Case(train_parallel("latin1.en", "three.de"),
                              lambda f, out: [f"{f / 'latin1.en'}:2:", "UTF-8"]),
    "unknown --set key": Case(train_copy("d_modle=64"), lambda f, out: ["d_modle"]),
    "ill-typed --set value": Case(train_copy("d_model=abc"), lambda f, out: ["d_model", "abc"]),
    "--set without =": Case(train_copy("d_model"), lambda f, out: ["d_model", "KEY=VALUE"]),
    "n_heads does not divide d_model": Case(train_copy("d_model=32", "n_heads=3"),
                                            lambda f, out: ["n_heads=3", "d_model=32"]),
    "dropout out of range": Case(train_copy("dropout=1.5"), lambda f, out: ["dropout=1.5"]),
    "bad model value, translation task": Case(train_parallel("two.en", "two.de", "n_heads=5"),
                                              lambda f, out: ["n_heads=5"]),
    "unknown key in a recipe": Case(lambda f, out: ["train", "--config", f / "typo.toml", "--out", out],
                                    lambda f, out: [f / "typo.toml", "d_modle"]),
    "invalid TOML": Case(lambda f, out: ["train", "--config", f / "broken.toml", "--out", out],
                         lambda f, out: [f / "broken.toml", "line 2"]),
    "missing recipe file": Case(lambda f, out: ["train", "--config", f / "none.toml", "--out", out],
                                lambda f, out: [f / "none.toml"]),
    "parallel without --src": Case(lambda f, out: ["train", "parallel", "--out", out],
                                   lambda f, out: ["--src"]),
    "unknown task": Case(lambda f, out: ["train", "cpoy", "--out", out], lambda f, out: ["cpoy"]),
    "--resume of a folder that is no run": Case(
        lambda f, out: ["train", "--resume", f / "empty-run"],
        lambda f, out: [f / "empty-run" / "config.json"]),
    "--device cuda without CUDA": Case(lambda f, out: ["train", "copy", "--device", "cuda", "--out", out],
                                       lambda f, out: ["--device cuda", "CUDA"]),
    "--device of an unknown kind": Case(lambda f, out: ["train", "copy", "--device", "tpu", "--out", out],
                                        lambda f, out: ["tpu"]),
}


@pytest.mark.parametrize("case", TRAIN_CASES.values(), ids=TRAIN_CASES.keys())
def test_train_rejects_bad_input(case, files, tmp_path, capsys):
    if torch.cuda.is_available() and "cuda" in str(case.args(files, tmp_path)):
        pytest.skip("this machine has CUDA, so --device cuda is not an error here")
    out = tmp_path / "run"
    code, _, err = run_main(capsys, case.args(files, out))
    assert_user_error(code, err, *case.names(files, out))
    # Nothing half-made is left behind to get in the way of the corrected command.
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_resume_of_a_run_without_checkpoints(files, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_main(capsys, ["train", "copy", "--steps", "1", "--out", run_dir,
                                     "--set", *TINY_MODEL])
    assert code == 0, err  # config.json written; its checkpoint is removed below
    assert (run_dir / "config.json").is_file()
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    code, _, err = run_main(capsys, ["train", "--resume", run_dir])
    assert_user_error(code, err, run_dir, "no checkpoint")


def test_resume_of_a_run_with_a_damaged_config(files, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"model": {"d_model": 32}}\n', encoding="utf-8")
    code, _, err = run_main(capsys, ["train", "--resume", run_dir])
    assert_user_error(code, err, run_dir / "config.json")
    (run_dir / "config.json").write_text('{"model": {}, "train": {"stpes": 5}}\n', encoding="utf-8")
    code, _, err = run_main(capsys, ["train", "--resume", run_dir])
    assert_user_error(code, err, run_dir / "config.json", "stpes")


# --- commands on a trained run ---------------------------------------------------------

def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the shared run, for a test that damages it."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def truncate_weights(run_dir: Path, keep) -> list[Path]:
    files = sorted(run_dir.glob("checkpoints/*/model.safetensors"))
    assert files
    for file in files:
        data = file.read_bytes()
        file.write_bytes(data[: keep(len(data))])
    return files


@pytest.mark.parametrize("command", ["translate", "evaluate"])
@pytest.mark.parametrize("cut", ["half", "last bytes"])
def test_truncated_checkpoint_names_the_file(command, cut, translation_run, tmp_path, capsys):
    run_dir = copy_run(translation_run, tmp_path)
    damaged = truncate_weights(run_dir, (lambda n: n // 2) if cut == "half" else (lambda n: n - 64))
    args = [command, run_dir, "a dog"] if command == "translate" else [command, run_dir]
    code, _, err = run_main(capsys, args)
    line = assert_user_error(code, err, "model.safetensors")
    named = Path(line.removeprefix("error: ").split(": ")[0])
    assert named in damaged


def test_config_json_that_does_not_match_the_checkpoint(translation_run, tmp_path, capsys):
    run_dir = copy_run(translation_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    config["model"]["d_ff"] *= 2
    (run_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    code, _, err = run_main(capsys, ["translate", run_dir, "a dog"])
    assert_user_error(code, err, run_dir, "d_ff")


def test_translate_without_a_run_directory(tmp_path, capsys):
    code, _, err = run_main(capsys, ["translate", tmp_path / "no-such-run", "a dog"])
    assert_user_error(code, err, tmp_path / "no-such-run")


def test_translate_a_run_without_checkpoints(translation_run, tmp_path, capsys):
    run_dir = copy_run(translation_run, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    code, _, err = run_main(capsys, ["translate", run_dir, "a dog"])
    assert_user_error(code, err, run_dir, "no checkpoint")


def test_sentence_longer_than_max_len_names_its_line(translation_run, tmp_path, capsys):
    long = " ".join(["the red car"] * MAX_LEN)  # >= 3 * MAX_LEN tokens
    text = tmp_path / "input.txt"
    text.write_text(f"a dog eats the ball .\n{long}\n", encoding="utf-8")
    code, out, err = run_main(capsys, ["translate", translation_run, "--input", text])
    assert_user_error(code, err, "line 2", f"max_len={MAX_LEN}")
    assert out == ""  # nothing half-translated


def test_empty_input_line_gives_an_empty_output_line(translation_run, tmp_path, capsys):
    text = tmp_path / "input.txt"
    text.write_text("a dog eats the ball .\n\nthe cat likes a book .\n", encoding="utf-8")
    code, out, err = run_main(capsys, ["translate", translation_run, "--beam", "2", "--input", text])
    assert code == 0, err
    lines = out.split("\n")
    assert len(lines) == 4 and lines[3] == ""  # three lines, each ended by a newline
    assert lines[1] == ""
    # The empty line changes nothing around it: the same sentences alone translate the same.
    code, alone, err = run_main(capsys, ["translate", translation_run, "--beam", "2",
                                         "a dog eats the ball .", "the cat likes a book ."])
    assert code == 0, err
    assert alone.split("\n")[:2] == [lines[0], lines[2]]


def test_sentences_may_follow_the_options(translation_run, capsys):
    code, out, err = run_main(capsys, ["translate", translation_run, "--beam", "2", "a dog ."])
    assert code == 0, err
    assert len(out.splitlines()) == 1


def test_translate_on_cuda_without_cuda(translation_run, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda is not an error here")
    code, _, err = run_main(capsys, ["translate", translation_run, "a dog", "--device", "cuda"])
    assert_user_error(code, err, "--device cuda")


@pytest.mark.parametrize("last", ["0", "-2"])
def test_average_needs_at_least_one_checkpoint(last, translation_run, capsys):
    code, _, err = run_main(capsys, ["average", translation_run, "--last", last])
    assert_user_error(code, err, f"--last {last}")
    assert not (translation_run / "checkpoints" / "averaged").exists()


def test_unknown_command_and_option_are_one_line_too(capsys):
    code, _, err = run_main(capsys, ["trian", "copy"])
    assert_user_error(code, err, "trian")
    code, _, err = run_main(capsys, ["train", "copy", "--stpes", "5"])
    assert_user_error(code, err, "--stpes")


# --- training values out of range: stopped before a run directory is made ----------------

RANGE_CASES = {
    "steps 0 (--set)": (["--set", "steps=0"], ["steps"]),
    "label smoothing 1": (["--set", "label_smoothing=1"], ["label_smoothing"]),
    "precision fp16": (["--set", "precision=fp16"], ["precision", "fp16"]),
    "unknown schedule": (["--set", "schedule=cosine"], ["schedule", "cosine"]),
    "cooldown past the budget": (["--set", "cooldown=1.5"], ["cooldown", "1.5"]),
    "device cuda:x": (["--set", "device=cuda:x"], ["device", "cuda:x"]),
    "warmup 0": (["--set", "warmup=0"], ["warmup"]),
    "batch_size 0": (["--set", "batch_size=0"], ["batch_size"]),
    "batch_tokens 0": (["--set", "batch_tokens=0"], ["batch_tokens"]),
    "eval_every 0": (["--set", "eval_every=0"], ["eval_every"]),
    "save_every 0": (["--set", "save_every=0"], ["save_every"]),
    "log_every 0": (["--set", "log_every=0"], ["log_every"]),
    "keep_last 0": (["--set", "keep_last=0"], ["keep_last"]),
    "accum_steps 0": (["--set", "accum_steps=0"], ["accum_steps"]),
    "beam_size 0": (["--set", "beam_size=0"], ["beam_size"]),
    "negative length_penalty": (["--set", "length_penalty=-1"], ["length_penalty"]),
    "negative max_minutes": (["--set", "max_minutes=-5"], ["max_minutes"]),
    "negative threads": (["--set", "threads=-1"], ["threads"]),
    "negative bleu_every": (["--set", "bleu_every=-1"], ["bleu_every"]),
    "target_exact_match above 1": (["--set", "target_exact_match=2"], ["target_exact_match"]),
    "min_length above max_length": (["--set", "min_length=9", "max_length=4"],
                                    ["min_length", "max_length"]),
    "num_symbols 0": (["--set", "num_symbols=0"], ["num_symbols"]),
    "--steps 0": (["--steps", "0"], ["--steps", "0"]),
    "--steps -3": (["--steps", "-3"], ["--steps", "-3"]),
}


@pytest.mark.parametrize("args,names", RANGE_CASES.values(), ids=RANGE_CASES.keys())
def test_training_values_out_of_range(args, names, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(capsys, ["train", "copy", "--out", out, *args])
    assert_user_error(code, err, *names)
    assert not out.exists()


@pytest.mark.parametrize("line,names", [('precision = "fp16"', ["precision", "fp16"]),
                                        ('task = "translate"', ["task", "translate"])])
def test_out_of_range_value_in_a_recipe_names_the_key(line, names, tmp_path, capsys):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(line + "\n", encoding="utf-8")
    code, _, err = run_main(capsys, ["train", "--config", recipe, "--out", tmp_path / "run"])
    assert_user_error(code, err, *names)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("beam", ["0", "-1"])
def test_evaluate_beam_below_one(beam, translation_run, capsys):
    code, _, err = run_main(capsys, ["evaluate", translation_run, "--beam", beam])
    assert_user_error(code, err, "--beam", beam)


# --- translate: input past the model's limit, numeric flags out of range -------------------

def test_every_line_longer_than_max_len_is_named(translation_run, tmp_path, capsys):
    long = " ".join(["the red car"] * MAX_LEN)
    text = tmp_path / "input.txt"
    text.write_text(f"a dog .\n{long}\na cat .\n{long}\n{long}\n", encoding="utf-8")
    code, out, err = run_main(capsys, ["translate", translation_run, "--input", text])
    assert_user_error(code, err, "input lines 2, 4, 5:", f"limit of {MAX_LEN - 1} tokens",
                      f"max_len={MAX_LEN}", "--long truncate")
    assert out == ""  # checked before any decoding: nothing half-translated


TRANSLATE_FLAG_CASES = {
    "--beam 0": (["--beam", "0"], ["--beam", "0"]),
    "--beam -3": (["--beam", "-3"], ["--beam", "-3"]),
    "--beam two": (["--beam", "two"], ["--beam", "two"]),
    "--n-best 0": (["--n-best", "0"], ["--n-best", "0"]),
    "--n-best -1": (["--n-best", "-1"], ["--n-best", "-1"]),
    "--n-best above --beam": (["--beam", "2", "--n-best", "3"], ["--n-best 3", "--beam 2"]),
    "--n-best above the default beam": (["--n-best", "5"], ["--n-best 5", "--beam 4"]),
    "--long of an unknown kind": (["--long", "cut"], ["--long", "cut"]),
}


@pytest.mark.parametrize("args,names", TRANSLATE_FLAG_CASES.values(),
                         ids=TRANSLATE_FLAG_CASES.keys())
def test_translate_flags_out_of_range(args, names, translation_run, capsys):
    code, out, err = run_main(capsys, ["translate", translation_run, *args, "a dog ."])
    assert_user_error(code, err, *names)
    assert out == ""
