"""Run directories: what --overwrite may delete, what --resume may change, which
checkpoint translate and evaluate load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transformer.checkpoint.catalogue import (
    checkpoint_steps,
    latest_checkpoint,
    pick_checkpoint,
    step_checkpoints,
)
from transformer.run.rundir import read_settings

from kit import (
    assert_user_error,
    run_main,
    train_copy_run,
    train_translation_run,
    write_corpus,
)


def train_copy(capsys, out: Path, *flags) -> None:
    """Four steps of the kit's tiny copy run into `out`, a checkpoint every 2."""
    code = train_copy_run(out, "--steps", 4, *flags, "--set", "save_every=2")
    assert code == 0, capsys.readouterr().err


def train_settings(run_dir: Path):
    return read_settings(run_dir).train


# --- --overwrite ------------------------------------------------------------------------

def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n", encoding="utf-8")
    code, _, err = run_main(capsys, ["train", "copy", "--out", folder, "--overwrite",
                                     "--steps", "1"])
    assert_user_error(code, err, folder, "--overwrite")
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "mine\n"


def test_overwrite_refuses_a_config_json_of_another_program(tmp_path, capsys):
    folder = tmp_path / "web"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text('{"port": 80}\n', encoding="utf-8")
    code, _, err = run_main(capsys, ["train", "copy", "--out", folder, "--overwrite",
                                     "--steps", "1"])
    assert_user_error(code, err, folder)
    assert json.loads((folder / "config.json").read_text(encoding="utf-8")) == {"port": 80}


def test_overwrite_replaces_a_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train_copy(capsys, run_dir)
    assert latest_checkpoint(run_dir).name == "step-000004"
    assert train_copy_run(run_dir, "--steps", 2, "--overwrite") == 0
    assert [p.name for p in step_checkpoints(run_dir)] == ["step-000002"]


# --- --resume ---------------------------------------------------------------------------

def test_resume_applies_steps_and_the_safe_keys(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train_copy(capsys, run_dir)
    code, _, err = run_main(capsys, ["train", "--resume", run_dir, "--quiet", "--steps", "6",
                                     "--set", "max_minutes=30", "log_every=1", "keep_last=1"])
    assert code == 0, err
    settings = train_settings(run_dir)
    assert (settings.steps, settings.max_minutes, settings.log_every) == (6, 30.0, 1)
    assert [p.name for p in step_checkpoints(run_dir)] == ["step-000006"]  # keep_last=1


@pytest.mark.parametrize("flags,names", [
    (["--set", "d_model=64"], ["d_model", "32", "64"]),
    (["--set", "vocab_size=50"], ["vocab_size"]),
    (["--seed", "7"], ["seed", "7"]),
    (["--src", "other.en"], ["src", "other.en"]),
    (["sort"], ["task", "sort"]),
])
def test_resume_refuses_to_change_what_the_run_is(flags, names, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train_copy(capsys, run_dir)
    before = train_settings(run_dir)
    code, _, err = run_main(capsys, ["train", "--resume", run_dir, "--steps", "6", *flags])
    assert_user_error(code, err, "--resume", *names)
    assert train_settings(run_dir) == before
    assert latest_checkpoint(run_dir).name == "step-000004"  # nothing trained


def test_train_help_says_when_the_time_budget_starts(capsys):
    with pytest.raises(SystemExit):
        run_main(capsys, ["train", "--help"])
    assert "max_minutes counts from the resume" in " ".join(capsys.readouterr().out.split())


def test_resume_with_an_out_of_range_value(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train_copy(capsys, run_dir)
    code, _, err = run_main(capsys, ["train", "--resume", run_dir, "--set", "keep_last=0"])
    assert_user_error(code, err, "keep_last")


# --- which checkpoint -------------------------------------------------------------------

def test_the_newest_weights_win_over_an_older_average(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train_translation_run(run_dir, *write_corpus(tmp_path), "--set", "save_every=2")
    code, _, err = run_main(capsys, ["average", run_dir, "--last", "2"])
    assert code == 0, err
    averaged = run_dir / "checkpoints" / "averaged"
    assert checkpoint_steps(averaged) == (2, 4)
    assert pick_checkpoint(run_dir) == averaged  # at equal steps, the average is preferred
    code, _, err = run_main(capsys, ["translate", run_dir, "a dog"])
    assert code == 0, err
    assert f"using checkpoint {averaged} (steps 2-4)" in err

    code, _, err = run_main(capsys, ["train", "--resume", run_dir, "--steps", "6", "--quiet"])
    assert code == 0, err
    chosen = pick_checkpoint(run_dir)
    assert chosen != averaged and checkpoint_steps(chosen) == (6, 6)
    code, _, err = run_main(capsys, ["translate", run_dir, "a dog"])
    assert code == 0, err
    assert f"using checkpoint {chosen} (step 6)" in err
