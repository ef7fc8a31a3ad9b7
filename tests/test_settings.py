"""Run settings: one flat set of keys, resolved one way (recipe < --set < flags), checked
once, merged with a saved run's on resume, written to config.json by one writer."""

import dataclasses
import json

import pytest

from transformer.errors import UserError
from transformer.run.rundir import read_settings, write_settings
from transformer.run.settings import (
    MODEL_KEYS,
    RECIPES_DIR,
    RESUMABLE_KEYS,
    TRAIN_KEYS,
    RunSettings,
    asked_values,
    new_settings,
    parse_sets,
    read_recipe,
    resumed_settings,
    settings_from_values,
)
from transformer.training.config import TRAIN_CHECKS

CONFIGS = sorted(RECIPES_DIR.glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(path):
    settings = settings_from_values(read_recipe(path)).with_vocabulary(8000, 0)
    assert settings.train.steps > 0 and settings.model.src_vocab_size == 8000


def test_set_values_take_the_type_of_their_key():
    values = parse_sets(["d_model=128", "dropout=0.3", "norm_first=true", "tie_embeddings=none",
                         "lr_factor=2", "compile=false"])
    assert values == {"d_model": 128, "dropout": 0.3, "norm_first": True,
                      "tie_embeddings": "none", "lr_factor": 2.0, "compile": False}
    assert isinstance(values["lr_factor"], float)


@pytest.mark.parametrize("item,named", [
    ("d_modle=128", "d_modle"),       # unknown key
    ("d_model=abc", "d_model"),       # not an integer
    ("norm_first=maybe", "norm_first"),
    ("warmup", "warmup"),             # no value
])
def test_bad_set_items_name_the_key(item, named):
    with pytest.raises(UserError, match=named):
        parse_sets([item])


def test_recipe_keys_are_checked(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('d_model = "wide"\n')
    with pytest.raises(UserError, match="d_model") as error:
        read_recipe(bad)
    assert str(bad) in str(error.value)


def test_model_and_training_keys_do_not_overlap():
    assert not set(MODEL_KEYS) & set(TRAIN_KEYS)
    assert not {"src_vocab_size", "tgt_vocab_size", "pad_id"} & set(MODEL_KEYS)  # the task's


def test_invalid_model_values_become_user_errors():
    with pytest.raises(UserError, match="n_heads"):
        settings_from_values({"d_model": 100, "n_heads": 3})


@pytest.mark.parametrize("values,named", [
    ({"steps": 0}, "steps"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"precision": "fp16"}, "precision"),
    ({"schedule": "cosine"}, "schedule"),
    ({"task": "translate"}, "task"),
    ({"device": "cuda:first"}, "device"),
    ({"target_exact_match": 1.5}, "target_exact_match"),
    ({"min_length": 8, "max_length": 4}, "min_length"),
    ({"warmup": "long"}, "warmup"),
    ({"d_modle": 64}, "d_modle"),
])
def test_every_value_is_checked_when_the_settings_are_built(values, named):
    with pytest.raises(UserError, match=named):
        settings_from_values(values)


def test_every_training_key_has_a_check():
    assert set(TRAIN_CHECKS) == set(TRAIN_KEYS)


def test_recipe_then_set_then_flags(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('task = "copy"\nwarmup = 100\nsteps = 10\nd_model = 32\nn_heads = 2\n')
    asked = asked_values(str(recipe), ["warmup=200", "steps=20"], None, {"steps": 30, "seed": None})
    settings = new_settings(None, str(recipe), asked)
    assert (settings.train.warmup, settings.train.steps, settings.model.d_model) == (200, 30, 32)
    assert settings.train.seed == 0  # a flag not given leaves the default


def test_a_task_without_config_trains_its_own_recipe():
    copy = settings_from_values(read_recipe("copy"))
    sort = new_settings("sort", None, asked_values(None, [], "sort", {}))
    assert sort.model == copy.model and sort.model.d_model == 64
    assert sort.train.task == "sort" and sort.train.warmup == copy.train.warmup
    multi30k = new_settings("multi30k", None, asked_values(None, [], "multi30k", {}))
    assert multi30k == settings_from_values(read_recipe("multi30k"))


def test_resume_changes_only_what_may_change():
    saved = settings_from_values({"task": "copy", "steps": 10}).with_vocabulary(20, 0)
    longer = resumed_settings(saved, {"steps": 40, "eval_every": 5, "task": "copy"})
    assert (longer.train.steps, longer.train.eval_every) == (40, 5)
    assert longer.model == saved.model  # the vocabulary kept
    for key, value in (("d_model", 128), ("seed", 3), ("warmup", 7)):
        assert key not in RESUMABLE_KEYS
        with pytest.raises(UserError, match=f"'{key}' cannot change on resume"):
            resumed_settings(saved, {key: value})
    with pytest.raises(UserError, match="steps"):  # a resumable key is still checked
        resumed_settings(saved, {"steps": 0})


def test_config_json_round_trip_and_atomic_write(tmp_path):
    settings = dataclasses.replace(settings_from_values({"task": "sort", "d_model": 32,
                                                         "n_heads": 2}).with_vocabulary(20, 0),
                                   ablation={"variant": "no-scaling"})
    write_settings(tmp_path, settings)
    assert read_settings(tmp_path) == settings
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left
    data = json.loads((tmp_path / "config.json").read_text())
    assert set(data) == {"model", "train", "ablation"} and data["model"]["src_vocab_size"] == 20


def test_a_config_json_that_is_no_run_config_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"model": {"d_model": 7, "n_heads": 2}, "train": {}}')
    with pytest.raises(UserError, match="config.json: not a run config"):
        read_settings(tmp_path)
    assert RunSettings.from_json(json.loads(json.dumps(settings_from_values({}).to_json())),
                                 "x") == settings_from_values({})
