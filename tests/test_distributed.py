"""Data-parallel training (DDP) over real processes, as torchrun launches them.

Two gloo processes on the CPU run the copy task; rank r trains on its own stream,
`SyntheticTask.train_batch(step, r)`. After an update, every rank holds the parameters
one process would hold after a step on a single batch of both ranks' examples: each
rank weights its loss by its share of the update's target tokens (an all_reduce of the
token counts) and DDP averages the gradients. Rank 0 alone writes the run (metrics,
checkpoints, messages); a resumed run under torchrun continues exactly, every rank
reading the checkpoint that rank 0 wrote.

Each launch starts three Python processes (torchrun's agent and two workers): 10-20 s
on a small, busy machine. Two launches always run; the tests that need a launch of their
own run only with TRANSFORMER_SLOW_TESTS=1.
"""

import json
import os
import subprocess
import sys

import pytest
import torch.distributed

from training_reference import (TINY_SETS, assert_same_training, load_model, read_run,
                                reference_training, union)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this torch build has no torch.distributed")

WORLD = 2
slow = pytest.mark.skipif(os.environ.get("TRANSFORMER_SLOW_TESTS") != "1",
                          reason="a torchrun launch of its own (~15 s); set TRANSFORMER_SLOW_TESTS=1")

# The command line, with a spy: every checkpoint save is logged with the rank that made it.
SPY = """\
import os, sys
import transformer.checkpoint as ckpt
from transformer.cli import main

real_save = ckpt.save_checkpoint

def spy(run_dir, step, *args, **kwargs):
    with open(os.environ["SAVES_LOG"], "a") as log:
        log.write(f"{os.environ['RANK']} {kwargs.get('name') or step}\\n")
    return real_save(run_dir, step, *args, **kwargs)

ckpt.save_checkpoint = spy
sys.exit(main(sys.argv[1:]))
"""


def torchrun(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 ARGS...` (standalone: a free port of its own)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={WORLD}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One update on two processes (through the spy), then a resume to a second update."""
    tmp = tmp_path_factory.mktemp("ddp")
    run_dir, saves = tmp / "run", tmp / "saves.log"
    (tmp / "spy.py").write_text(SPY, encoding="utf-8")
    first = torchrun(str(tmp / "spy.py"), "train", "copy", "--out", str(run_dir), "--steps", "1",
                     "--quiet", "--set", *TINY_SETS, env={"SAVES_LOG": str(saves)})
    resumed = torchrun("-m", "transformer", "train", "--resume", str(run_dir), "--steps", "2",
                       "--quiet")
    return run_dir, saves, first.stdout, resumed.stdout


def update(step: int, task, world_size: int = WORLD):
    """The batch that one process would take for update `step`: every rank's examples."""
    return union([task.train_batch(step, rank) for rank in range(world_size)], task)


def test_one_ddp_update_equals_one_step_on_the_union_of_the_ranks_batches(ddp_run):
    run_dir = ddp_run[0]
    cfg, train_cfg, task = read_run(run_dir)
    assert task.train_batch(0, 0)[0].tolist() != task.train_batch(0, 1)[0].tolist()

    trained = load_model(run_dir / "checkpoints" / "step-000001", cfg)
    reference = reference_training(cfg, train_cfg, [update(0, task)])
    assert_same_training(trained, reference, probe=update(0, task))


def test_a_resumed_ddp_run_continues_exactly(ddp_run):
    run_dir = ddp_run[0]
    cfg, train_cfg, task = read_run(run_dir)
    trained = load_model(run_dir / "checkpoints" / "step-000002", cfg)
    reference = reference_training(cfg, train_cfg, [update(0, task), update(1, task)])
    assert_same_training(trained, reference, probe=update(1, task))


def test_only_rank_0_writes(ddp_run):
    run_dir, saves, first_out, resumed_out = ddp_run
    saved_by = [line.split()[0] for line in saves.read_text(encoding="utf-8").splitlines()]
    assert saved_by and set(saved_by) == {"0"}, saved_by  # checkpoints: rank 0's alone

    records = [json.loads(line) for line in
               (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    keys = [(r["kind"], r["step"]) for r in records]
    assert sorted(keys) == [("eval", 1), ("eval", 2), ("train", 1), ("train", 2)]  # no duplicates

    for stdout in (first_out, resumed_out):  # messages and the summary: once, not once per rank
        assert stdout.count("done:") == 1, stdout
        assert stdout.count("valid loss") == 1, stdout
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == \
        ["best", "step-000001", "step-000002"]


@slow
def test_ddp_with_accumulation_equals_one_step_on_everything(tmp_path):
    """accum_steps=2 on two ranks: four micro-batches, one update (gradient sync skipped
    on the first micro-batch with no_sync: syncing every micro-batch would only cost time)."""
    run_dir = tmp_path / "run"
    torchrun("-m", "transformer", "train", "copy", "--out", str(run_dir), "--steps", "1",
             "--quiet", "--set", *TINY_SETS, "accum_steps=2")
    cfg, train_cfg, task = read_run(run_dir)
    everything = union([task.train_batch(i, rank) for rank in range(WORLD) for i in range(2)], task)
    trained = load_model(run_dir / "checkpoints" / "step-000001", cfg)
    reference = reference_training(cfg, train_cfg, [everything])
    assert_same_training(trained, reference, probe=everything)


@slow
def test_a_user_error_on_rank_0_stops_every_rank(tmp_path):
    """An existing run directory: every rank exits with code 2 instead of waiting forever."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}", encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={WORLD}", "-m", "transformer", "train", "copy",
               "--out", str(run_dir)]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert result.stderr.count("already holds a run") == WORLD, result.stderr
