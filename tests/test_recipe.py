"""Recipes and --set: one flat set of keys, checked by name and by type."""


import pytest

from transformer.errors import UserError
from transformer.recipe import RECIPES_DIR, MODEL_KEYS, TRAIN_KEYS, build_model_config, parse_sets, read_recipe, split_keys

CONFIGS = sorted(RECIPES_DIR.glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(path):
    model_keys, train = split_keys(read_recipe(path))
    build_model_config(model_keys, vocab_size=8000, pad_id=0)
    assert train.steps > 0


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


def test_invalid_model_values_become_user_errors():
    with pytest.raises(UserError, match="n_heads"):
        build_model_config({"d_model": 100, "n_heads": 3}, vocab_size=50, pad_id=0)


@pytest.mark.parametrize("values,named", [
    ({"steps": 0}, "steps"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"precision": "fp16"}, "precision"),
    ({"schedule": "cosine"}, "schedule"),
    ({"task": "translate"}, "task"),
    ({"device": "cuda:first"}, "device"),
    ({"target_exact_match": 1.5}, "target_exact_match"),
    ({"min_length": 8, "max_length": 4}, "min_length"),
])
def test_split_keys_checks_every_training_value(values, named):
    with pytest.raises(UserError, match=named):
        split_keys(values)


def test_every_training_key_has_a_check():
    from transformer.recipe import TRAIN_CHECKS
    assert set(TRAIN_CHECKS) == set(TRAIN_KEYS)


def test_a_task_without_config_trains_its_own_recipe():
    from transformer.cli import build_parser
    from transformer.commands import resolve_settings
    copy_model, copy_train = split_keys(read_recipe("copy"))
    model_keys, train = resolve_settings(build_parser().parse_args(["train", "sort"]))
    assert model_keys["d_model"] == copy_model["d_model"] == 64
    assert model_keys["n_encoder_layers"] == copy_model["n_encoder_layers"]
    assert train.task == "sort" and train.warmup == copy_train.warmup
    model_keys, train = resolve_settings(build_parser().parse_args(["train", "multi30k"]))
    assert model_keys == split_keys(read_recipe("multi30k"))[0] and train.task == "multi30k"
