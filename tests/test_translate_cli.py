"""`transformer translate` as people use it, and `transformer score`.

    translate --scores           TEXT<TAB>LOGPROB<TAB>NORMALISED per line
    translate --n-best K         SCORE<TAB>TEXT blocks (+ <TAB>LOGPROB<TAB>NORMALISED)
    translate --sample           random samples: --temperature, --top-k, --seed
    translate, reading stdin     one answer per line, printed as soon as the line is read
    score --src F --tgt F        LOGPROB per pair (--tokens: each token's too)

The run is the small trained translation run of conftest.py (read, never changed).
"""

from __future__ import annotations

import io
import os
import queue
import subprocess
import sys
import threading

import pytest
import torch

from transformer.decoding.beam import gnmt_length_penalty
from transformer.decoding.sampling import row_generators, sample_decode
from transformer.decoding.scoring import score_pairs
from transformer.run.rundir import load_run

from kit import assert_user_error, run_main

SENTENCES = ["a dog eats the ball .", "the cat likes a book .", "my friend holds the red car ."]
LONG = " ".join(["the red car"] * 40)  # past the run's max_len of 32


def ok(capsys, *args) -> list[str]:
    """The stdout lines of a successful `transformer ARGS`."""
    code, out, err = run_main(capsys, list(args))
    assert code == 0, err
    return out.split("\n")[:-1]


def write(folder, name: str, lines: list[str]):
    path = folder / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def stdin(monkeypatch):
    """Replace stdin with these bytes."""
    return lambda data: monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


# --- --scores -------------------------------------------------------------------------------

def test_scores_add_the_log_prob_and_the_normalised_score(trained_translation_run, tmp_path, capsys):
    run = trained_translation_run
    plain = ok(capsys, "translate", run, SENTENCES[0], "", SENTENCES[1])
    scored = ok(capsys, "translate", run, "--scores", SENTENCES[0], "", SENTENCES[1])
    assert scored[1] == ""  # an empty line stays an empty line: nothing was decoded
    _run = load_run(run)
    model, tokenizer = _run.model, _run.source
    saved = _run.settings
    alpha = saved.train.length_penalty
    for line, text, source in zip((scored[0], scored[2]), (plain[0], plain[2]), SENTENCES):
        out, log_prob, normalised = line.split("\t")
        assert out == text  # the same translation, two columns more
        target = tokenizer.encode(text)
        [expected] = score_pairs(model, [(tokenizer.encode(source), target)], 1, 2)
        assert float(log_prob) == pytest.approx(sum(expected), abs=1e-4)
        assert float(normalised) == pytest.approx(
            sum(expected) / gnmt_length_penalty(len(target) + 1, alpha), abs=1e-4)
    # ... and `transformer score` of the translation says the same
    src = write(tmp_path, "src.txt", [SENTENCES[0], SENTENCES[1]])
    tgt = write(tmp_path, "tgt.txt", [plain[0], plain[2]])
    assert ok(capsys, "score", run, "--src", src, "--tgt", tgt) == \
        [scored[0].split("\t")[1], scored[2].split("\t")[1]]


def test_n_best_with_scores_appends_the_same_columns(trained_translation_run, capsys):
    run = trained_translation_run
    blocks = ok(capsys, "translate", run, "--beam", "3", "--n-best", "3", "--scores", SENTENCES[0], "")
    assert blocks[3:] == ["", ""]  # the block's end, and the empty sentence's empty block
    rows = [line.split("\t") for line in blocks[:3]]
    without = ok(capsys, "translate", run, "--beam", "3", "--n-best", "3", SENTENCES[0])
    assert [row[:2] for row in rows] == [line.split("\t") for line in without[:3]]
    for score, _, log_prob, normalised in rows:
        assert float(score) == pytest.approx(float(normalised), abs=2e-4)  # ended with <eos>
        assert float(log_prob) <= float(normalised) < 0  # the penalty divides by >= 1
    assert [float(r[0]) for r in rows] == sorted((float(r[0]) for r in rows), reverse=True)


# --- --sample -------------------------------------------------------------------------------

def test_samples_are_reproducible_with_a_seed(trained_translation_run, tmp_path, capsys, stdin):
    run = trained_translation_run
    args = ["translate", run, "--sample", "--temperature", "2", "--n-best", "4"]
    first = ok(capsys, *args, "--seed", "1", *SENTENCES)
    assert ok(capsys, *args, "--seed", "1", *SENTENCES) == first
    assert ok(capsys, *args, "--seed", "2", *SENTENCES) != first
    assert len(first) == 3 * 5 and first[4::5] == ["", "", ""]  # 4 samples, then "", per line
    samples = [line.split("\t")[1] for line in first[:4]]
    assert len(set(samples)) > 1  # one sentence, different samples
    # Line by line from stdin, each line samples as in the batched file: line N's draws
    # come from (seed, N), whatever else is in its batch.
    stdin("".join(s + "\n" for s in SENTENCES).encode())
    assert ok(capsys, *args, "--seed", "1") == first
    assert ok(capsys, *args, "--seed", "1", "--input", write(tmp_path, "in.txt", SENTENCES)) == first


def test_samples_without_a_seed_vary_and_say_their_seed(trained_translation_run, capsys):
    args = ["translate", trained_translation_run, "--sample", "--temperature", "3", *SENTENCES]
    code, out, err = run_main(capsys, args)
    assert code == 0
    seed = err.split("--seed ")[1].split()[0]  # "note: sampled with seed N (--seed N draws ...)"
    assert ok(capsys, *args, "--seed", seed) == out.split("\n")[:-1]
    outputs = {tuple(ok(capsys, *args)) for _ in range(3)}
    assert len(outputs) > 1


def test_sample_scores_are_under_the_model(trained_translation_run, capsys):
    run = trained_translation_run
    [line] = ok(capsys, "translate", run, "--sample", "--top-k", "1", "--scores", SENTENCES[1])
    [greedy] = ok(capsys, "translate", run, "--beam", "1", "--scores", SENTENCES[1])
    assert line == greedy  # top-k 1 draws what greedy picks, and scores it alike
    # The same draws by hand: sample k of input line 1 comes from the seed (3, 1, k). Their
    # scores are under the model itself, at temperature 1, whatever they were drawn at.
    block = ok(capsys, "translate", run, "--sample", "--temperature", "4", "--n-best", "3",
               "--scores", "--seed", "3", SENTENCES[1])
    _run = load_run(run)
    model, tokenizer = _run.model, _run.source
    saved = _run.settings
    options = saved.train.decoding
    src = torch.tensor([tokenizer.encode(SENTENCES[1]) + [tokenizer.eos_id]] * 3)
    drawn = sample_decode(model, src, 1, 2, temperature=4.0, max_len_a=options.max_len_a,
                          max_len_b=options.max_len_b, generators=row_generators(3, [(1, k) for k in range(3)]))
    forced = score_pairs(model, [(src[0, :-1].tolist(), tokens) for tokens in drawn], 1, 2)
    for line, tokens, scores in zip(block, drawn, forced):
        score, text, log_prob, normalised = line.split("\t")
        assert text == tokenizer.decode(tokens) and score == normalised
        assert float(log_prob) == pytest.approx(sum(scores), abs=1e-4)
        lp = gnmt_length_penalty(len(tokens) + 1, saved.train.length_penalty)
        assert float(normalised) == pytest.approx(sum(scores) / lp, abs=1e-4)


TRANSLATE_FLAG_CASES = {
    "--sample with --beam": (["--sample", "--beam", "2"], ["--sample", "--beam"]),
    "--temperature 0": (["--sample", "--temperature", "0"], ["--temperature", "0"]),
    "--temperature -1": (["--sample", "--temperature", "-1"], ["--temperature", "-1"]),
    "--temperature nan": (["--sample", "--temperature", "nan"], ["--temperature", "nan"]),
    "--temperature warm": (["--sample", "--temperature", "warm"], ["--temperature", "warm"]),
    "--top-k -1": (["--sample", "--top-k", "-1"], ["--top-k", "-1"]),
    "--top-k without --sample": (["--top-k", "3"], ["--top-k", "--sample"]),
    "--temperature without --sample": (["--temperature", "2"], ["--temperature", "--sample"]),
    "--seed without --sample": (["--seed", "1"], ["--seed", "--sample"]),
    "--n-best above --beam": (["--beam", "2", "--n-best", "3"], ["--n-best 3", "--beam 2"]),
}


@pytest.mark.parametrize("args,names", TRANSLATE_FLAG_CASES.values(), ids=TRANSLATE_FLAG_CASES.keys())
def test_bad_translate_flags(args, names, trained_translation_run, capsys):
    code, out, err = run_main(capsys, ["translate", trained_translation_run, *args, "a dog ."])
    assert_user_error(code, err, *names)
    assert out == ""


# --- stdin, line by line --------------------------------------------------------------------

def test_a_co_process_gets_each_answer_before_it_sends_the_next_line(trained_translation_run, capsys):
    expected = ok(capsys, "translate", trained_translation_run, "--beam", "2", *SENTENCES[:2])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "transformer", "translate", str(trained_translation_run), "--beam", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
    reader.start()
    try:
        for sentence, answer in zip(SENTENCES, expected):
            process.stdin.write(sentence.encode() + b"\n")
            process.stdin.flush()  # stdin stays open: the answer must come without an EOF
            assert lines.get(timeout=60).decode().rstrip("\n") == answer
        process.stdin.close()
        assert process.wait(timeout=30) == 0
        reader.join(timeout=10)
        assert lines.empty()  # one line out per line in, nothing more
    finally:
        process.kill()
        process.wait()


def test_a_reader_that_goes_away_stops_translate_quietly(trained_translation_run, tmp_path):
    """`translate ... | head -1`: the pipe closes before the answers are written."""
    source = write(tmp_path, "in.txt", SENTENCES * 50)
    process = subprocess.Popen(
        [sys.executable, "-m", "transformer", "translate", str(trained_translation_run),
         "--beam", "1", "--input", str(source)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    process.stdout.close()  # long before the model is loaded and anything is printed
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_stdin_answers_as_the_batched_file_does(trained_translation_run, tmp_path, capsys, stdin):
    lines = [SENTENCES[0], "", SENTENCES[1], SENTENCES[2]]
    batched = ok(capsys, "translate", trained_translation_run, "--beam", "2", "--scores",
                 "--input", write(tmp_path, "in.txt", lines))
    stdin("".join(line + "\n" for line in lines).encode())
    assert ok(capsys, "translate", trained_translation_run, "--beam", "2", "--scores") == batched
    assert len(batched) == 4 and batched[1] == ""


def test_invalid_utf8_on_stdin_names_its_line_and_keeps_what_was_printed(
        trained_translation_run, capsys, stdin):
    stdin(SENTENCES[0].encode() + b"\nna\xefve caf\xe9\n" + SENTENCES[1].encode() + b"\n")
    code, out, err = run_main(capsys, ["translate", trained_translation_run, "--beam", "2"])
    assert_user_error(code, err, "<stdin>:2", "UTF-8")
    assert out.split("\n")[:-1] == ok(capsys, "translate", trained_translation_run, "--beam", "2",
                                      SENTENCES[0])


def test_a_long_line_on_stdin_is_named_by_its_line_number(trained_translation_run, capsys, stdin):
    stdin(f"{SENTENCES[0]}\n{SENTENCES[1]}\n{LONG}\n".encode())
    code, out, err = run_main(capsys, ["translate", trained_translation_run, "--beam", "1"])
    assert_user_error(code, err, "input line 3:", "max_len=32", "--long truncate")
    assert len(out.split("\n")[:-1]) == 2  # the two lines before it were answered


# --- score ----------------------------------------------------------------------------------

def test_score_prints_a_log_prob_per_pair_and_with_tokens_each_tokens(trained_translation_run,
                                                                     tmp_path, capsys):
    targets = ["ein hund isst den ball .", "die katze mag ein buch .", ""]
    src = write(tmp_path, "src.txt", SENTENCES)
    tgt = write(tmp_path, "tgt.txt", targets)
    totals = ok(capsys, "score", trained_translation_run, "--src", src, "--tgt", tgt)
    detailed = ok(capsys, "score", trained_translation_run, "--src", src, "--tgt", tgt, "--tokens")
    _run = load_run(trained_translation_run)
    model, tokenizer = _run.model, _run.source
    expected = score_pairs(model, [(tokenizer.encode(s), tokenizer.encode(t))
                                   for s, t in zip(SENTENCES, targets)], 1, 2)
    assert totals == [f"{sum(e):.4f}" for e in expected]
    for line, total, target, scores in zip(detailed, totals, targets, expected):
        first, numbers, pieces = line.split("\t")
        assert first == total
        assert [float(x) for x in numbers.split(" ")] == pytest.approx(scores, abs=1e-4)
        assert pieces.split(" ") == [tokenizer.token(i) for i in tokenizer.encode(target)] + ["<eos>"]
        assert sum(map(float, numbers.split(" "))) == pytest.approx(float(total), abs=1e-3)
    assert detailed[2].split("\t")[2] == "<eos>"  # an empty target: only the end is scored


SCORE_ERROR_CASES = {
    "line counts differ": (["a dog .", "a cat ."], ["ein hund ."], lambda s, t: [s, t, "2", "1"]),
    "source too long": (["a dog .", LONG], ["ein hund .", "x"], lambda s, t: [f"{s}:2:", "max_len=32"]),
    "target too long": (["a dog .", "a cat ."], ["ein hund .", LONG], lambda s, t: [f"{t}:2:", "max_len=32"]),
    "not UTF-8": (["a dog .", b"caf\xe9"], ["x", "y"], lambda s, t: [f"{s}:2:", "UTF-8"]),
}


@pytest.mark.parametrize("src_lines,tgt_lines,names", SCORE_ERROR_CASES.values(),
                         ids=SCORE_ERROR_CASES.keys())
def test_score_errors_name_the_file_and_line(src_lines, tgt_lines, names, trained_translation_run,
                                             tmp_path, capsys):
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in src_lines))
    write(tmp_path, "tgt.txt", tgt_lines)
    code, out, err = run_main(capsys, ["score", trained_translation_run, "--src", src, "--tgt", tgt])
    assert_user_error(code, err, *names(src, tgt))
    assert out == ""  # all checked before anything is printed


def test_score_notes_unknown_symbols(trained_translation_run, tmp_path, capsys):
    src = write(tmp_path, "src.txt", [SENTENCES[0], "a dog 🐕 eats the ball ."])
    tgt = write(tmp_path, "tgt.txt", ["ein hund 猫 isst den ball .", "ein hund isst den ball ."])
    code, out, err = run_main(capsys, ["score", trained_translation_run, "--src", src, "--tgt", tgt])
    assert code == 0
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: {src}:2: 1 unknown symbol dropped (🐕)",
                     f"note: {tgt}:1: symbols the vocabulary lacks, scored as <unk>"]
    with_unk, without_emoji = map(float, out.split())
    [clean] = ok(capsys, "score", trained_translation_run, "--src", write(tmp_path, "s", [SENTENCES[0]]),
                 "--tgt", write(tmp_path, "t", ["ein hund isst den ball ."]))
    assert without_emoji == float(clean)  # the source read as if the emoji were not there
    assert with_unk < float(clean)  # an <unk> the model never learnt to expect costs


def test_score_of_a_missing_file(trained_translation_run, tmp_path, capsys):
    tgt = write(tmp_path, "tgt.txt", ["x"])
    code, _, err = run_main(capsys, ["score", trained_translation_run, "--src", tmp_path / "none.txt",
                                     "--tgt", tgt])
    assert_user_error(code, err, str(tmp_path / "none.txt"), "no such file")
