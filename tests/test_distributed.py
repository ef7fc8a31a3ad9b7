"""Data-parallel training (DDP) over real processes, as torchrun launches them.

Two gloo processes on the CPU run the copy task; rank r trains on its own stream,
`SyntheticTask.train_batch(step, r)`. After an update, every rank holds the parameters
one process would hold after a step on a single batch of both ranks' examples: each
rank weights its loss by its share of the update's target tokens (an all_reduce of the
token counts) and DDP averages the gradients. Rank 0 alone writes the run (metrics,
checkpoints, messages), with every rank's RNG state; a resumed run under torchrun
continues exactly, every rank reading the checkpoint that rank 0 wrote and taking back
its own random state. A NaN on one rank stops every rank together, before the weights
change.

Each launch starts three Python processes (torchrun's agent and two workers): 7-20 s
on a small, busy machine. Three launches always run; the tests that need launches of
their own run only with TRANSFORMER_SLOW_TESTS=1. The per-rank random states and the
choice of GPU are also tested within this process.
"""

import os
import random
import shutil

import pytest
import torch
import torch.distributed
from safetensors.torch import load_file

from transformer.checkpoint import format as ckpt
from transformer.checkpoint.catalogue import latest_checkpoint
from transformer.cli.main import main
from transformer.errors import UserError
from transformer.model.transformer import Transformer
from transformer.training.distributed import Distributed, resolve_device
from transformer.training.resume import restore, rng_state
from transformer.training.schedule import adam, make_scheduler

from kit import WORLD, metrics, torchrun, train_losses
from training_reference import (
    TINY_SETS,
    assert_same_training,
    load_model,
    read_run,
    reference_training,
    union,
)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this torch build has no torch.distributed")

slow = pytest.mark.skipif(os.environ.get("TRANSFORMER_SLOW_TESTS") != "1",
                          reason="a torchrun launch of its own (~15 s); set TRANSFORMER_SLOW_TESTS=1")

# The command line, with a spy: every checkpoint save is logged with the rank that made it.
SPY = """\
import os, sys
import transformer.training.loop as loop
from transformer.cli.main import main

real_save = loop.save_checkpoint

def spy(run_dir, step, *args, **kwargs):
    with open(os.environ["SAVES_LOG"], "a") as log:
        log.write(f"{os.environ['RANK']} {kwargs.get('name') or step}\\n")
    return real_save(run_dir, step, *args, **kwargs)

loop.save_checkpoint = spy
sys.exit(main(sys.argv[1:]))
"""


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

    records = metrics(run_dir)
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
    result = torchrun("-m", "transformer", "train", "copy", "--out", str(run_dir), check=False)
    assert result.returncode != 0
    assert result.stderr.count("already holds a run") == WORLD, result.stderr


# --- divergence on one rank --------------------------------------------------------------
# Rank 1 alone meets a NaN loss, in its fourth forward pass (step 4 of 6); rank 0's are all
# finite. Each worker writes its exit code to EXIT_DIR/exit-RANK.
DIVERGE = """\
import dataclasses, math, os, sys
from transformer.training import update as train
from transformer.cli.main import main

if os.environ["RANK"] == "1":
    real_loss, calls = train.label_smoothed_loss, []

    def nan_loss(*args, **kwargs):
        out = real_loss(*args, **kwargs)
        calls.append(1)
        return dataclasses.replace(out, loss=out.loss * math.nan) if len(calls) == 4 else out

    train.label_smoothed_loss = nan_loss
code = main(sys.argv[2:])
with open(os.path.join(sys.argv[1], "exit-" + os.environ["RANK"]), "w") as f:
    f.write(str(code))
sys.exit(code)
"""
DROPOUT_RUN = ["--steps", "6", "--quiet", "--set", *TINY_SETS, "dropout=0.1", "save_every=1000"]


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diverged")
    (tmp / "diverge.py").write_text(DIVERGE, encoding="utf-8")
    run_dir = tmp / "run"
    result = torchrun(str(tmp / "diverge.py"), str(tmp), "train", "copy", "--out", str(run_dir),
                      *DROPOUT_RUN, check=False, timeout=120)
    codes = {rank: (tmp / f"exit-{rank}").read_text() if (tmp / f"exit-{rank}").exists() else None
             for rank in range(WORLD)}
    return run_dir, result, codes


def test_a_nan_on_one_rank_stops_every_rank_with_the_last_good_state(diverged_run):
    run_dir, result, codes = diverged_run
    assert codes == {0: "2", 1: "2"}, result.stderr  # both stopped by the guard, in time
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == WORLD, result.stderr
    assert all("training diverged: the loss is nan on rank 1 at step 4" in e for e in errors)
    saved = [e for e in errors if "saved" in e]  # rank 0 alone wrote, and says so
    assert len(saved) == 1 and str(run_dir) in saved[0], errors

    assert sorted(train_losses(run_dir)) == [1, 2, 3]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-000003"]
    weights = load_file(str(run_dir / "checkpoints" / "step-000003" / ckpt.WEIGHTS_FILE))
    assert all(torch.isfinite(t).all() for t in weights.values())


@slow
def test_a_ddp_run_with_dropout_resumes_exactly(diverged_run, tmp_path):
    """Stopped at step 4 (the NaN on rank 1), resumed: as an unbroken run, bit for bit. With
    dropout each rank draws its own masks, so each rank's random state must come back."""
    stopped, unbroken = tmp_path / "stopped", tmp_path / "unbroken"
    shutil.copytree(diverged_run[0], stopped)
    saved = torch.load(latest_checkpoint(stopped) / ckpt.STATE_FILE, weights_only=True)
    first, second = saved["train_state"]["rng_per_rank"]
    # The ranks' streams have parted (dropout masks of other sizes draw other amounts),
    # or this test could not tell one rank's state from the other's.
    assert not torch.equal(first["torch"], second["torch"])
    resumed = torchrun("-m", "transformer", "train", "--resume", str(stopped), "--quiet")
    assert "note:" not in resumed.stderr  # the same world size: no warning
    torchrun("-m", "transformer", "train", "copy", "--out", str(unbroken), *DROPOUT_RUN)

    assert train_losses(stopped) == train_losses(unbroken)
    mine, theirs = (load_file(str(run / "checkpoints" / "step-000006" / ckpt.WEIGHTS_FILE))
                    for run in (stopped, unbroken))
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[name], theirs[name]) for name in mine)


# --- random states per rank ----------------------------------------------------------------

def random_state(seed: int) -> dict:
    random.seed(seed)
    torch.manual_seed(seed)
    return rng_state()


def resume_as(ctx: Distributed, run_dir) -> None:
    """`restore` the run's latest checkpoint into a fresh model, as rank `ctx.rank` would."""
    cfg, train_cfg, _ = read_run(run_dir)
    model = Transformer(cfg)
    optimizer = adam(model.parameters())
    scheduler = make_scheduler(optimizer, train_cfg.schedule, cfg.d_model, train_cfg.warmup,
                               train_cfg.lr_factor)
    restore(run_dir, model, optimizer, scheduler, ctx)


def test_each_rank_restores_its_own_random_state(ddp_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(ddp_run[0], run_dir)
    latest = latest_checkpoint(run_dir)
    states = [random_state(seed) for seed in (10, 11)]
    state = torch.load(latest / ckpt.STATE_FILE, weights_only=True)
    assert len(state["train_state"]["rng_per_rank"]) == WORLD  # a DDP run saves every rank's
    state["train_state"].update(rng=states[0], rng_per_rank=states)
    torch.save(state, latest / ckpt.STATE_FILE)

    for rank in range(WORLD):
        random_state(99)
        resume_as(Distributed(rank, WORLD), run_dir)
        assert torch.equal(torch.get_rng_state(), states[rank]["torch"])
        assert random.getstate() == states[rank]["python"]
    assert capsys.readouterr().err == ""  # the same world size: exact, nothing to say

    # Another world size: rank 0's state on every rank, and rank 0 alone says so.
    for rank in range(3):
        resume_as(Distributed(rank, 3), run_dir)
        assert torch.equal(torch.get_rng_state(), states[0]["torch"])
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("note: ") and "random" in note[0], note


def test_a_ddp_checkpoint_resumes_in_one_process_with_a_note(ddp_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(ddp_run[0], run_dir)
    torch.set_num_threads(1)
    assert main(["train", "--resume", str(run_dir), "--steps", "3", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: ") and "2 processes" in lines[0], err


def test_a_checkpoint_without_per_rank_states_resumes_under_ddp_with_a_note(tmp_path, capsys):
    run_dir = tmp_path / "run"
    torch.set_num_threads(1)
    assert main(["train", "copy", "--out", str(run_dir), "--steps", "1", "--quiet",
                 "--set", *TINY_SETS]) == 0
    state = torch.load(latest_checkpoint(run_dir) / ckpt.STATE_FILE, weights_only=True)
    assert "rng_per_rank" not in state["train_state"]  # one process: as before
    capsys.readouterr()
    resume_as(Distributed(0, WORLD), run_dir)
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("note: "), note


# --- one GPU per process -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_under_torchrun_each_rank_takes_its_local_rank_gpu(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device(name) == torch.device("cuda", 1)

    monkeypatch.delenv("LOCAL_RANK")  # no torchrun: the device named
    assert resolve_device(name) == torch.device(name)


def test_more_torchrun_processes_than_gpus_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(UserError, match="1 GPU"):
        resolve_device("cuda")
