"""The sanity check of the whole project: a 2-layer Transformer learns to copy.

If masking, the schedule or the loss were wrong, this is where it shows. The second
test proves the first can fail: the same training with the decoder's causal mask
removed lets position t read the answer from position t + 1 of its own input, which
drives the teacher-forced loss down but leaves greedy decoding (which has no future to
read) unable to copy, even with the very budget the right model needed to copy.
"""

import pytest

from transformer.model import transformer as model_module
from transformer.model.masks import padding_mask
from transformer.run.settings import read_recipe, settings_from_values
from transformer.training.loop import train
from transformer.training.tasks import make_task


def copy_run(tmp_path, **overrides):
    settings = settings_from_values({**read_recipe("copy"), **overrides})
    task = make_task(settings.train, tmp_path, settings.model.max_len)
    ready = settings.with_vocabulary(task.vocab_size, task.pad_id)
    return train(tmp_path, ready.model, ready.train, task, quiet=True)


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> dict:
    """The copy recipe, stopped once exact match reaches 99% (evaluated every 100 steps)."""
    return copy_run(tmp_path_factory.mktemp("copy"), target_exact_match=0.99,
                    eval_examples=200, save_every=10_000)


def test_copy_task_reaches_99_percent_exact_match_within_1000_steps(learned):
    assert learned["steps"] <= 1000
    assert learned["exact_match"] >= 0.99, learned


def test_without_the_causal_mask_the_copy_task_fails(learned, tmp_path, monkeypatch):
    def leaky_mask(tokens, pad_id):  # padding only: every position sees the whole target
        return padding_mask(tokens, pad_id)

    monkeypatch.setattr(model_module, "decoder_self_mask", leaky_mask)
    budget = learned["steps"]  # what the right model needed
    summary = copy_run(tmp_path, target_exact_match=0.0, steps=budget, eval_every=budget,
                       save_every=10_000)
    assert summary["steps"] == budget
    assert summary["exact_match"] < 0.5, summary
    # it did learn something: the teacher-forced validation accuracy looks excellent
    assert summary["accuracy"] > 0.9, summary
