"""The tests' one kit: the tiny model's keys, run factories, a made-up corpus, metrics
reading, and the command line run in-process with its error contract.

The contract for every mistake a user can make: exit code 2 and exactly one line on
stderr, starting with "error: " and naming what is wrong and where (file, line, key),
never a traceback. `run_main` runs `transformer ARGS` as the command would;
`assert_user_error` checks that contract.

Runs are real runs of the command line, kept as small as their claim allows: the tiny
model (TINY_MODEL), a made-up English -> German corpus from a tiny grammar
(write_corpus), a few steps. `torchrun` launches the command line as two processes, as
a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformer.cli.main import main
from transformer.training.metrics import METRICS_FILE, read_metrics

# One layer each side, d_model 32: a forward pass takes about a millisecond.
TINY_MODEL = ["d_model=32", "n_heads=2", "d_ff=64", "n_encoder_layers=1", "n_decoder_layers=1"]
MAX_LEN = 32

# 200 made-up English -> German sentence pairs from a tiny grammar: enough for a BPE
# vocabulary and a few training steps, nothing to download.
SUBJECTS = {"the cat": "die katze", "a dog": "ein hund", "the man": "der mann",
            "a woman": "eine frau", "the child": "das kind", "my friend": "mein freund"}
VERBS = {"sees": "sieht", "likes": "mag", "eats": "isst", "finds": "findet", "holds": "hält"}
OBJECTS = {"an apple": "einen apfel", "the ball": "den ball", "a book": "ein buch",
           "the red car": "das rote auto", "some bread": "etwas brot"}


# --- the command line ----------------------------------------------------------------------

def run_main(capsys, args: list) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `transformer ARGS`."""
    torch.set_num_threads(1)
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *names: str) -> str:
    """The contract: exit 2, one line "error: ...", no traceback, naming every `names`."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: ")
    for name in names:
        assert str(name) in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


# --- settings and runs -----------------------------------------------------------------------

def write_corpus(folder: Path, pairs: int = 200) -> tuple[Path, Path]:
    """Line-aligned en/de files of `pairs` sentences, walking the grammar in a fixed order."""
    subjects, verbs, objects = list(SUBJECTS), list(VERBS), list(OBJECTS)
    en, de = [], []
    for i in range(pairs):
        s, v, o = subjects[i % 6], verbs[i // 6 % 5], objects[i // 30 % 5]
        en.append(f"{s} {v} {o} .")
        de.append(f"{SUBJECTS[s]} {VERBS[v]} {OBJECTS[o]} .")
    src, tgt = folder / "train.en", folder / "train.de"
    src.write_text("\n".join(en) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(de) + "\n", encoding="utf-8")
    return src, tgt


def train_translation_run(run_dir: Path, src: Path, tgt: Path, *extra) -> None:
    """A few steps of `train parallel` with the tiny model: a run translate can load.

    `extra` arguments come last, so they win: e.g. "--steps", 60, "--set", "warmup=20"."""
    torch.set_num_threads(1)
    code = main(["train", "parallel", "--src", str(src), "--tgt", str(tgt), "--out", str(run_dir),
                 "--steps", "4", "--quiet", "--set", *TINY_MODEL, "vocab_size=200",
                 f"max_len={MAX_LEN}", "batch_tokens=512", "eval_every=1000", "bleu_every=1000",
                 "save_every=1000", "beam_size=2", "max_len_b=10", *map(str, extra)])
    assert code == 0


def train_copy_run(run_dir: Path, *extra, quiet: bool = True) -> int:
    """Six steps of `train copy` (the copy recipe) on the tiny model; `extra` arguments last,
    so they win (e.g. "--steps", 3, "--set", "precision=bf16"). Returns the exit code."""
    torch.set_num_threads(1)
    return main(["train", "copy", "--config", "copy", *(["--quiet"] if quiet else []),
                 "--out", str(run_dir), "--steps", "6", "--set", *TINY_MODEL, "batch_size=8",
                 "eval_examples=10", "log_every=1", "eval_every=3", "target_exact_match=0",
                 *map(str, extra)])


# --- metrics.jsonl ---------------------------------------------------------------------------

def metrics(run_dir: Path) -> list[dict]:
    """Every record of the run's metrics.jsonl, in file order."""
    return read_metrics(Path(run_dir) / METRICS_FILE)


def evaluations(run_dir: Path) -> list[dict]:
    """The run's evaluation records, in file order."""
    return [r for r in metrics(run_dir) if r.get("kind") == "eval"]


def training_records(run_dir: Path) -> list[dict]:
    """The run's training records, in file order."""
    return [r for r in metrics(run_dir) if r.get("kind") == "train"]


def train_losses(run_dir: Path) -> dict[int, float]:
    """step -> training loss; a step logged twice (a resumed run repeats the steps after
    its last checkpoint) keeps its later record."""
    return {r["step"]: r["loss"] for r in training_records(run_dir)}


def write_metrics(run_dir, bleu=True, exact_match=False, truncated_tail=True):
    """A made-up metrics.jsonl of a 400-step run: train records every 10 steps, eval every
    100 (test_metrics.py reads it back, test_plots.py draws its curves)."""
    lines = []
    for step in range(10, 410, 10):
        lines.append({"kind": "train", "step": step, "loss": 5.0 / (1 + step / 100),
                      "lr": 1e-3 * min(step / 100, (100 / step) ** 0.5), "tokens_per_s": 5000.0})
        if step % 100 == 0:
            record = {"kind": "eval", "step": step, "loss": 4.0 / (1 + step / 100), "ppl": 20.0,
                      "accuracy": step / 1000}
            if bleu:
                record["bleu"] = step / 20
            if exact_match:
                record["exact_match"] = step / 400
            lines.append(record)
    text = "".join(json.dumps(record) + "\n" for record in lines)
    if truncated_tail:  # a run killed in the middle of writing a line
        text += '{"kind": "train", "step": 410, "lo'
    (run_dir / "metrics.jsonl").write_text(text)


# --- torchrun ------------------------------------------------------------------------------

WORLD = 2  # processes per launch


def torchrun(*args: str, env: dict | None = None, check: bool = True,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 ARGS...` (standalone: a free port of its own).

    `check`: the launch must succeed. Past `timeout` seconds the whole process group
    (torchrun's agent and its workers) is killed and the test fails: a hang, not a wait."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={WORLD}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(command)}: still running after {timeout} s\n{out}\n{err}")
    result = subprocess.CompletedProcess(command, proc.returncode, out, err)
    assert not check or result.returncode == 0, f"{' '.join(command)}\n{out}\n{err}"
    return result
