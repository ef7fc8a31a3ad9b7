"""The divergence guard: a NaN loss or an infinite gradient stops the run with a clear
message before it reaches the weights, and what it saves is the last good state, from
which the run can go on exactly.

The NaN is injected by wrapping `transformer.training.update.label_smoothed_loss` (the
function each update calls) so that its third call, the forward pass of step 3, returns NaN; the
infinite gradient by a hook on a parameter of the model that train() builds.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from transformer.checkpoint import format as ckpt
from transformer.checkpoint.catalogue import latest_checkpoint
from transformer.cli.main import main
from transformer.model.config import TransformerConfig
from transformer.model.transformer import Transformer
from transformer.training import loop
from transformer.training import update as training
from transformer.training.schedule import adam

from kit import assert_user_error, train_copy_run
from kit import train_losses as train_records

STEPS = 6


def train_copy(run_dir: Path, *extra: str) -> int:
    """The kit's tiny copy run, with dropout (its random state must resume too)."""
    return train_copy_run(run_dir, "--steps", STEPS, "--set", "dropout=0.1", "eval_every=1000",
                          *extra)


def nan_from_call(n: int, monkeypatch) -> None:
    real, calls = training.label_smoothed_loss, []

    def loss_that_diverges(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        return dataclasses.replace(out, loss=out.loss * math.nan) if len(calls) >= n else out

    monkeypatch.setattr(training, "label_smoothed_loss", loss_that_diverges)


def resumes_as_unbroken(run_dir: Path, unbroken: Path, monkeypatch) -> None:
    """Once the cause is gone, the run resumes from its checkpoint and ends as the unbroken
    run did."""
    monkeypatch.undo()
    torch.set_num_threads(1)
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert train_records(run_dir) == train_records(unbroken)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    """The same run without a NaN, with a checkpoint after every second step."""
    run_dir = tmp_path_factory.mktemp("unbroken") / "run"
    assert train_copy(run_dir, "save_every=2") == 0
    return run_dir


def test_nan_loss_stops_with_one_line_and_saves_the_last_good_state(tmp_path, capsys, monkeypatch,
                                                                    unbroken):
    run_dir = tmp_path / "run"
    nan_from_call(3, monkeypatch)
    code = train_copy(run_dir, "save_every=1000")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "nan" in lines[0].lower() and "step 3" in lines[0] and str(run_dir) in lines[0]

    # Steps 1 and 2 were logged, finite; the diverged step 3 was not.
    logged = train_records(run_dir)
    assert sorted(logged) == [1, 2] and all(math.isfinite(v) for v in logged.values())

    # The checkpoint is that of step 2, whole and loadable, and it is the very state the
    # unbroken run had after step 2: weights, and the data position and RNG for a resume.
    latest = latest_checkpoint(run_dir)
    assert latest is not None and latest.name == "step-000002"
    cfg = TransformerConfig(**ckpt.read_model_config(latest))
    model = Transformer(cfg)
    optimizer = adam(model.parameters())
    state = ckpt.load_checkpoint(latest, model, optimizer)
    assert state["step"] == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())

    good = Transformer(cfg)
    good_state = ckpt.load_checkpoint(unbroken / "checkpoints" / "step-000002", good)
    for (name, mine), (_, theirs) in zip(model.state_dict().items(), good.state_dict().items()):
        assert torch.equal(mine, theirs), name
    assert state["data"] == good_state["data"]
    assert torch.equal(state["rng"]["torch"], good_state["rng"]["torch"])

    resumes_as_unbroken(run_dir, unbroken, monkeypatch)


def test_nan_on_the_first_step_saves_step_zero(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    nan_from_call(1, monkeypatch)
    code = train_copy(run_dir)
    err = capsys.readouterr().err
    assert code == 2 and "step 1" in err and "Traceback" not in err
    latest = latest_checkpoint(run_dir)
    assert latest is not None and latest.name == "step-000000"


# --- a finite loss with a non-finite gradient -------------------------------------------------
# The gradient is made infinite by a hook on one parameter of the model train() builds;
# its third call is the backward pass of step 3.

def inf_gradient_from_call(n: int, monkeypatch) -> None:
    real, calls = loop.Transformer, []

    def infinite_gradient(grad):
        calls.append(1)
        return torch.full_like(grad, math.inf) if len(calls) >= n else grad

    def build(cfg):
        model = real(cfg)
        next(model.parameters()).register_hook(infinite_gradient)
        return model

    monkeypatch.setattr(loop, "Transformer", build)


def assert_every_checkpoint_finite(run_dir: Path) -> None:
    """Every tensor saved in every checkpoint (weights, optimizer state) is finite."""
    folders = list((run_dir / "checkpoints").iterdir())
    assert folders
    for folder in folders:
        with safe_open(str(folder / ckpt.WEIGHTS_FILE), framework="pt") as f:
            for name in f.keys():
                assert torch.isfinite(f.get_tensor(name)).all(), f"{folder.name}: {name}"
        state = torch.load(folder / ckpt.STATE_FILE, weights_only=True)
        for moments in state["optimizer"]["state"].values():
            for name, tensor in moments.items():
                assert torch.isfinite(tensor).all(), f"{folder.name}: optimizer {name}"


def test_an_infinite_gradient_stops_before_the_step_and_saves_the_last_good_state(
        tmp_path, capsys, monkeypatch, unbroken):
    run_dir = tmp_path / "run"
    inf_gradient_from_call(3, monkeypatch)
    code = train_copy(run_dir, "save_every=1000")
    assert_user_error(code, capsys.readouterr().err, "gradient norm is inf", "step 3", run_dir)
    assert sorted(train_records(run_dir)) == [1, 2]
    assert_every_checkpoint_finite(run_dir)
    assert latest_checkpoint(run_dir).name == "step-000002"
    resumes_as_unbroken(run_dir, unbroken, monkeypatch)


def test_the_gradient_is_checked_without_clipping_too(tmp_path, capsys, monkeypatch):
    """clip_norm = 0 (the Multi30k recipe): the norm is still computed, and checked."""
    run_dir = tmp_path / "run"
    inf_gradient_from_call(2, monkeypatch)
    code = train_copy(run_dir, "save_every=1", "clip_norm=0")
    assert_user_error(code, capsys.readouterr().err, "gradient norm is inf", "step 2")
    assert latest_checkpoint(run_dir).name == "step-000001"
    assert_every_checkpoint_finite(run_dir)
