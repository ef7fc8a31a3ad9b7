"""Stop and resume: a run killed part way and resumed ends exactly where an unbroken run does.

The runs that get stopped are real `python -m transformer train` processes receiving
real signals, because that is what a user does: press Ctrl-C, or let a scheduler send
SIGTERM. The runs that are not stopped (the reference, the resumes) call the same
`transformer.cli.main` in this process, which saves the seconds of a torch import each.

- SIGTERM -> the run saves at the next update boundary and exits with 130; `train
  --resume RUN_DIR` then continues, and every logged training loss (the one at the last
  step included) is bit-for-bit that of an uninterrupted run with the same settings.
  Dropout is on, so this only holds if the random number generators are restored too.
- A second SIGINT leaves at once, without waiting for the step to finish.
- A kill in the middle of writing a checkpoint leaves the previous one whole; resuming
  from it again reproduces the unbroken run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from transformer.checkpoint import format as ckpt
from transformer.checkpoint.catalogue import latest_checkpoint
from transformer.cli.main import main
from transformer.model.config import TransformerConfig
from transformer.model.transformer import Transformer
from transformer.training.schedule import NoamScheduler, adam

from kit import train_losses

CONFIG = "copy"
STEPS = 60  # long enough that a SIGTERM sent after the first few steps lands before the end
SETTINGS = [
    "d_model=32", "n_heads=2", "d_ff=64", "n_encoder_layers=1", "n_decoder_layers=1",
    "dropout=0.1",  # > 0: a resume that forgot the RNG state would draw other dropout masks
    "batch_size=16", "eval_examples=10",
    "log_every=1", "save_every=5", "eval_every=1000", "target_exact_match=0",
]
TIMEOUT = 120  # seconds; generous, the machine may be shared


def environment() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)  # never mistake this for a torchrun worker
    return env


def train_args(out: Path, steps: int = STEPS) -> list[str]:
    return ["train", "copy", "--config", str(CONFIG), "--set", *SETTINGS,
            "--steps", str(steps), "--out", str(out), "--quiet"]


def run_here(args: list[str]) -> int:
    """`transformer ARGS` in this process, on one thread as the subprocesses are."""
    torch.set_num_threads(1)
    return main(args)


def start_cli(args: list[str], driver: Path | None = None) -> subprocess.Popen:
    program = [str(driver)] if driver else ["-m", "transformer"]
    return subprocess.Popen([sys.executable, *program, *args], env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (code {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_text(encoding="utf-8").count('"kind": "train"') if path.exists() else 0


def assert_resumable(checkpoint_dir: Path) -> dict:
    """Load a checkpoint the way a resume does (weights, optimizer, scheduler, state)."""
    cfg = TransformerConfig(**ckpt.read_model_config(checkpoint_dir))
    model = Transformer(cfg)
    optimizer = adam(model.parameters())
    scheduler = NoamScheduler(optimizer, cfg.d_model, 200, 0.5)
    state = ckpt.load_checkpoint(checkpoint_dir, model, optimizer, scheduler)
    assert {"step", "data", "rng"} <= set(state)
    return state


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, float]:
    """The training losses of an uninterrupted run, steps 1..STEPS."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert run_here(train_args(run_dir)) == 0
    losses = train_losses(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


def test_sigterm_then_resume_matches_an_unbroken_run(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = start_cli(train_args(run_dir))
    wait_for(lambda: logged_steps(run_dir) >= 3, proc, "three steps were logged")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"--resume {run_dir}" in err  # tells the user how to go on

    latest = latest_checkpoint(run_dir)
    assert latest is not None, "no checkpoint after SIGTERM"
    stopped_at = assert_resumable(latest)["step"]
    assert 3 <= stopped_at < STEPS, "the signal should land part way through the run"
    assert max(train_losses(run_dir)) == stopped_at  # saved at the step it stopped, not earlier

    assert run_here(["train", "--resume", str(run_dir), "--quiet"]) == 0
    losses = train_losses(run_dir)
    # Exact equality: the same operations on the same numbers in the same order, on one
    # thread, give the same float bits; any difference means something was not restored.
    assert losses[STEPS] == reference[STEPS]
    assert losses == reference  # and the whole curve, before and after the stop


DRIVER = """
    # Runs the transformer command with one library function replaced, to stop the run
    # at a chosen place inside a step or inside a save.
    import os, signal, sys, time
    from pathlib import Path
    from transformer.checkpoint import format as checkpoint
    from transformer.training import update as train
    mode, marker = sys.argv[1], Path(sys.argv[2])

    if mode == "hang-in-step-3":  # the third forward pass takes "forever"
        real_loss, calls = train.label_smoothed_loss, []
        def slow_loss(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                marker.write_text("in step 3")
                time.sleep(300)
            return real_loss(*args, **kwargs)
        train.label_smoothed_loss = slow_loss

    if mode == "die-saving-step-10":  # SIGKILL with step 10's weights half written
        real_save = checkpoint.save_file
        def dying_save(tensors, filename, metadata=None):
            real_save(tensors, filename, metadata=metadata)
            if ".tmp-step-000010-" in str(filename):
                with open(filename, "r+b") as f:
                    f.truncate(os.path.getsize(filename) // 2)
                marker.write_text(str(filename))
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.save_file = dying_save

    from transformer.cli.main import main
    sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture
def driver(tmp_path) -> Path:
    path = tmp_path / "driver.py"
    path.write_text(textwrap.dedent(DRIVER), encoding="utf-8")
    return path


def test_second_sigint_exits_at_once(tmp_path, driver):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    proc = start_cli(["hang-in-step-3", str(marker), *train_args(run_dir)], driver)
    wait_for(marker.exists, proc, "step 3 started")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None, "one SIGINT must wait for the step boundary, not quit mid-step"
    sent = time.monotonic()
    # Signals of one kind do not queue: on a busy machine the first may still be pending
    # when the second is sent, and the two count as one. So the second is sent until the
    # process goes (the first has long been handled by then: it is still there).
    while proc.poll() is None and time.monotonic() - sent < 60:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert time.monotonic() - sent < 60  # did not sit out the 300 s step
    assert "Traceback" not in err
    assert "interrupted at step" not in err  # it left mid-step, not at the boundary


def test_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path, driver, reference):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    proc = start_cli(["die-saving-step-10", str(marker), *train_args(run_dir)], driver)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, err
    assert marker.exists(), "the run should have died inside the save of step 10"
    half_written = Path(marker.read_text())
    assert half_written.parent.name.startswith(".tmp-step-000010-")

    latest = latest_checkpoint(run_dir)
    assert latest is not None and latest.name == "step-000005"
    assert assert_resumable(latest)["step"] == 5

    assert run_here(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert train_losses(run_dir) == reference
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the dead process's half checkpoint was cleaned up
