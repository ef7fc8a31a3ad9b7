"""Spec for checkpoint.py: exact resume, tied weights, damaged files, kills, pruning, averaging."""

import dataclasses
import os
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import transformer as T
from transformer.checkpoint.averaging import average_checkpoints, save_average
from transformer.checkpoint.catalogue import all_checkpoints, latest_checkpoint, prune
from transformer.checkpoint.catalogue import step_checkpoints as list_checkpoints
from transformer.checkpoint.format import load_checkpoint, load_weights, save_checkpoint
from transformer.checkpoint.format import read_model_config as read_config
from transformer.errors import UserError
from transformer.training.resume import rng_state, set_rng_state

from kill_helpers import die_at


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return T.Transformer(T.TransformerConfig.tiny(vocab_size=50, **overrides))


def make_training(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    return optimizer, scheduler


def train_step(model, optimizer, scheduler):
    src = torch.randint(1, 50, (3, 7))
    tgt = torch.randint(1, 50, (3, 6))
    logits = model(src, tgt[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), tgt[:, 1:].reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def assert_same(a, b):
    """Nested dicts / lists / tensors equal exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def weights_of(model):
    return {name: t.clone() for name, t in model.state_dict().items()}


@pytest.fixture
def trained():
    model = make_model(seed=0)
    optimizer, scheduler = make_training(model)
    for _ in range(2):
        train_step(model, optimizer, scheduler)
    return model, optimizer, scheduler


# --- round trip ------------------------------------------------------------------------------
def test_round_trip_resumes_exactly(tmp_path, trained):
    model, optimizer, scheduler = trained
    random.seed(1)
    path = save_checkpoint(tmp_path, 2, model, optimizer, scheduler,
                           train_state={"rng": rng_state(), "data_position": 17})
    assert path == tmp_path / "checkpoints" / "step-000002"
    # What the original run does next, from the RNG state at the moment of saving:
    # a step with dropout, then draws from both generators.
    train_step(model, optimizer, scheduler)
    expected_draws = (random.random(), torch.rand(3))

    resumed = make_model(seed=123)
    r_optimizer, r_scheduler = make_training(resumed)
    random.seed(99)
    train_state = load_checkpoint(path, resumed, r_optimizer, r_scheduler)
    assert train_state["step"] == 2 and train_state["data_position"] == 17
    set_rng_state(train_state["rng"])
    train_step(resumed, r_optimizer, r_scheduler)  # dropout draws the same masks
    draws = (random.random(), torch.rand(3))
    assert draws[0] == expected_draws[0]
    assert torch.equal(draws[1], expected_draws[1])
    assert_same(weights_of(resumed), weights_of(model))
    assert_same(r_optimizer.state_dict(), optimizer.state_dict())
    assert_same(r_scheduler.state_dict(), scheduler.state_dict())


def test_restores_optimizer_and_scheduler_state(tmp_path, trained):
    model, optimizer, scheduler = trained
    path = save_checkpoint(tmp_path, 2, model, optimizer, scheduler)
    resumed = make_model(seed=5)
    r_optimizer, r_scheduler = make_training(resumed)
    load_checkpoint(path, resumed, r_optimizer, r_scheduler)
    assert_same(weights_of(resumed), weights_of(model))
    assert_same(r_optimizer.state_dict(), optimizer.state_dict())
    assert r_scheduler.state_dict()["last_epoch"] == 2
    assert r_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_state_file_is_readable_with_weights_only(tmp_path, trained):
    model, optimizer, scheduler = trained
    rng = {"python_rng": random.getstate(), "torch_rng": torch.get_rng_state()}
    path = save_checkpoint(tmp_path, 2, model, optimizer, scheduler, train_state=rng)
    state = torch.load(path / "state.pt", weights_only=True)
    assert state["train_state"]["python_rng"] == random.getstate()


def test_numpy_values_are_converted_and_objects_refused(tmp_path):
    np = pytest.importorskip("numpy")
    model = make_model()
    path = save_checkpoint(tmp_path, 1, model, train_state={"loss": np.float32(0.5),
                                                            "order": np.arange(4)})
    train_state = load_checkpoint(path, make_model())
    assert train_state["loss"] == 0.5
    assert torch.equal(train_state["order"], torch.arange(4))
    with pytest.raises(TypeError, match=r"train_state\['gen'\]"):
        save_checkpoint(tmp_path, 2, model, train_state={"gen": torch.Generator()})


def test_config_is_stored_in_the_metadata(tmp_path):
    model = make_model()
    path = save_checkpoint(tmp_path, 0, model)
    assert read_config(path) == dataclasses.asdict(model.cfg)
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        assert "config" in f.metadata()


# --- tied weights ----------------------------------------------------------------------------
@pytest.mark.parametrize("tie", ["all", "decoder", "none"])
def test_tying_survives_a_load(tmp_path, tie):
    model = make_model(tie_embeddings=tie)
    path = save_checkpoint(tmp_path, 1, model)
    loaded = make_model(seed=9, tie_embeddings=tie)
    load_weights(path, loaded)
    assert_same(weights_of(loaded), weights_of(model))
    tied_to_output = loaded.generator.weight is loaded.tgt_embed.token_embedding.weight
    shared_source = (loaded.src_embed.token_embedding.weight
                     is loaded.tgt_embed.token_embedding.weight)
    assert tied_to_output == (tie != "none")
    assert shared_source == (tie == "all")
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        stored = len(list(f.keys()))
    assert stored == len(model.state_dict()) - {"all": 2, "decoder": 1, "none": 0}[tie]


def test_unwraps_a_data_parallel_model(tmp_path):
    model = make_model()
    path = save_checkpoint(tmp_path, 1, torch.nn.DataParallel(model))
    loaded = make_model(seed=4)
    load_weights(path, loaded)
    assert_same(weights_of(loaded), weights_of(model))


# --- wrong or damaged input --------------------------------------------------------------------
def test_truncated_weights_name_the_file(tmp_path):
    path = save_checkpoint(tmp_path, 1, make_model())
    file = path / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=str(file)):
        load_weights(path, make_model())


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_state_names_the_file(tmp_path, trained, damage):
    model, optimizer, scheduler = trained
    path = save_checkpoint(tmp_path, 1, model, optimizer, scheduler)
    file = path / "state.pt"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "truncate" else os.urandom(len(data)))
    resumed = make_model()
    with pytest.raises(UserError, match=str(file)):
        load_checkpoint(path, resumed, *make_training(resumed))


class Booby:
    """Unpickling this would create a file; a safe load must refuse it instead."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_state_is_never_unpickled_as_code(tmp_path):
    path = save_checkpoint(tmp_path, 1, make_model())
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "train_state": Booby(str(marker))}, path / "state.pt")
    with pytest.raises(UserError, match="state.pt"):
        load_checkpoint(path, make_model())
    assert not marker.exists()


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(UserError, match="step-000009"):
        load_weights(tmp_path / "checkpoints" / "step-000009", make_model())
    path = save_checkpoint(tmp_path, 1, make_model())
    (path / "model.safetensors").unlink()
    with pytest.raises(UserError, match="model.safetensors"):
        load_weights(path, make_model())


def test_config_mismatch_names_the_field(tmp_path):
    path = save_checkpoint(tmp_path, 1, make_model())
    with pytest.raises(UserError, match=r"d_ff=256.*d_ff=128") as info:
        load_weights(path, make_model(d_ff=128))
    assert str(path / "model.safetensors") in str(info.value)
    assert "\n" not in str(info.value)


def test_runtime_fields_may_differ(tmp_path):
    model = make_model()
    path = save_checkpoint(tmp_path, 1, model)
    decoding = make_model(seed=3, dropout=0.0, attention="manual")
    load_weights(path, decoding)
    assert_same(weights_of(decoding), weights_of(model))


def test_shape_mismatch_names_the_tensor(tmp_path):
    path = save_checkpoint(tmp_path, 1, make_model(), config={})  # nothing to compare
    with pytest.raises(UserError, match=r"'encoder\.layers\.0\.feed_forward\.w_1\.weight'.*shape"):
        load_weights(path, make_model(d_ff=128))


def test_weights_only_checkpoint_cannot_resume_an_optimizer(tmp_path):
    model = make_model()
    path = save_checkpoint(tmp_path, 1, model)  # no optimizer given
    resumed = make_model()
    with pytest.raises(UserError, match="optimizer"):
        load_checkpoint(path, resumed, *make_training(resumed))


# --- atomic saves (end to end; the folder mechanics alone are in test_atomic.py) ------------
def hidden_entries(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("."))


def test_failed_rename_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    old_model, new_model = make_model(seed=0), make_model(seed=1)
    save_checkpoint(tmp_path, 5, old_model)
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old one is aside, the new one about to go in
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        save_checkpoint(tmp_path, 5, new_model)
    monkeypatch.undo()
    assert calls[-1].name == "step-000005"  # the failed save moved the old one back
    [path] = list_checkpoints(tmp_path)
    loaded = make_model(seed=7)
    load_weights(path, loaded)
    assert_same(weights_of(loaded), weights_of(old_model))
    assert hidden_entries(tmp_path) == []


# Where the saving process dies: (os function, its n-th call, before or after it runs,
# whether the new checkpoint is in place by then).
KILL_POINTS = [
    ("fsync", 1, "before", False),   # both files written, neither flushed
    ("fsync", 2, "before", False),   # weights flushed, state.pt not yet
    ("replace", 1, "after", False),  # old checkpoint moved aside, new one not in place
    ("replace", 2, "after", True),   # new one in place, old one not yet deleted
]


def save_and_die(point, run_dir, model, step):
    """Save in a forked child that SIGKILLs itself at `point`; wait for it to die."""
    die_at(point, lambda: save_checkpoint(run_dir, step, model))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to kill a saver mid-way")
@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda p: f"{p[2]}-{p[0]}-{p[1]}")
def test_a_kill_during_save_leaves_old_or_new(tmp_path, point):
    old_model, new_model = make_model(seed=0), make_model(seed=1)
    save_checkpoint(tmp_path, 5, old_model)
    save_and_die(point, tmp_path, new_model, step=5)
    assert hidden_entries(tmp_path) != []  # the dead saver left work folders behind

    # ... which the listing reads past, renaming nothing (the next writer repairs): the
    # complete checkpoint of step 5 is listed under its name, wherever it lies now.
    assert list(all_checkpoints(tmp_path)) == ["step-000005"]
    [path] = list_checkpoints(tmp_path)
    assert latest_checkpoint(tmp_path) == path == all_checkpoints(tmp_path)["step-000005"]
    loaded = make_model(seed=7)
    load_weights(path, loaded)
    expected = new_model if point[3] else old_model
    assert_same(weights_of(loaded), weights_of(expected))

    save_checkpoint(tmp_path, 6, new_model)  # the next save clears the leftovers
    assert hidden_entries(tmp_path) == []
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000005", "step-000006"]


def test_listing_ignores_temporary_and_foreign_folders(tmp_path):
    save_checkpoint(tmp_path, 3, make_model())
    folder = tmp_path / "checkpoints"
    (folder / ".tmp-step-000004-999999999").mkdir()
    (folder / ".tmp-step-000004-999999999" / "model.safetensors").write_bytes(b"half")
    (folder / "step-000007").mkdir()  # no weights file: not a checkpoint
    (folder / "notes").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000003"]
    assert list_checkpoints(tmp_path / "nowhere") == []
    assert latest_checkpoint(tmp_path / "nowhere") is None


# --- pruning and averaging -------------------------------------------------------------------
def test_keep_last_keeps_exactly_n(tmp_path):
    model = make_model()
    save_checkpoint(tmp_path, 0, model, name="best")
    for step in range(1, 7):
        save_checkpoint(tmp_path, step * 10, model)
        prune(tmp_path, keep_last=3)
    kept = [p.name for p in list_checkpoints(tmp_path)]
    assert kept == ["step-000040", "step-000050", "step-000060"]
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").is_file()
    assert hidden_entries(tmp_path) == []


def test_steps_sort_numerically(tmp_path):
    model = make_model()
    for step in (1_000_000, 999_999, 5):
        save_checkpoint(tmp_path, step, model)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step-000005", "step-999999", "step-1000000"]


def test_named_checkpoint_replaces_the_old_one(tmp_path):
    save_checkpoint(tmp_path, 1, make_model(seed=0), name="best")
    newer = make_model(seed=1)
    path = save_checkpoint(tmp_path, 2, newer, name="best")
    assert path.name == "best"
    loaded = make_model(seed=5)
    assert load_checkpoint(path, loaded)["step"] == 2
    assert_same(weights_of(loaded), weights_of(newer))
    assert list_checkpoints(tmp_path) == []


def test_averaging_two_checkpoints_is_the_mean(tmp_path):
    a, b = make_model(seed=0), make_model(seed=1)
    paths = [save_checkpoint(tmp_path, 1, a), save_checkpoint(tmp_path, 2, b)]
    mean = average_checkpoints(paths)
    wa, wb = weights_of(a), weights_of(b)
    assert mean.keys() == wa.keys()
    for name in wa:
        torch.testing.assert_close(mean[name], (wa[name] + wb[name]) / 2, rtol=0, atol=1e-7)
    assert mean["generator.weight"] is mean["src_embed.token_embedding.weight"]

    path = save_average(tmp_path, paths)
    assert path == tmp_path / "checkpoints" / "averaged"
    assert not (path / "state.pt").exists()
    averaged = make_model(seed=3)
    load_weights(path, averaged)
    assert averaged.generator.weight is averaged.tgt_embed.token_embedding.weight
    assert_same(weights_of(averaged), mean)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000001", "step-000002"]


def test_averaging_different_models_is_a_user_error(tmp_path):
    paths = [save_checkpoint(tmp_path, 1, make_model()),
             save_checkpoint(tmp_path, 2, make_model(d_ff=128))]
    with pytest.raises(UserError, match="d_ff"):
        average_checkpoints(paths)
    with pytest.raises(UserError):
        average_checkpoints([])


def test_damaged_state_leaves_the_model_untouched(tmp_path):
    path = save_checkpoint(tmp_path, 1, make_model(seed=0))
    (path / "state.pt").write_bytes(b"not a checkpoint")
    model = make_model(seed=1)
    before = weights_of(model)
    with pytest.raises(UserError):
        load_checkpoint(path, model)
    assert_same(weights_of(model), before)
