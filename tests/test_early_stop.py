"""Early stopping: `patience = K` ends a run after K evaluations in a row that did not beat
the best `early_stop_metric` so far; the count is kept in checkpoints, so that a resumed
run stops at the very step an unbroken one does.

The metric is scripted (a copy task whose exact match is read from a table by step), so
the step where the run must stop is known before it runs.
"""

import pytest

from transformer.run.settings import read_recipe, settings_from_values
from transformer.training.config import TrainConfig
from transformer.training.loop import train
from transformer.training.resume import Progress
from transformer.training.tasks import SyntheticTask
from transformer.training.validation import out_of_patience

EVAL_EVERY = 2
# exact match at each evaluation (steps 2, 4, 6, ...): the best is 0.5 at step 6; with
# patience 3, steps 8 (equal: no improvement), 10 and 12 do not beat it -> stop at 12.
SCRIPT = {2: 0.1, 4: 0.3, 6: 0.5, 8: 0.5, 10: 0.2, 12: 0.4, 14: 0.9, 16: 0.9}


class ScriptedCopy(SyntheticTask):
    def __init__(self, train_cfg: TrainConfig) -> None:
        super().__init__("copy", train_cfg.num_symbols, 3, 8, batch_size=8, seed=0,
                         eval_examples=4)

    def decode_metrics(self, model, train_cfg, device, step, final=False):
        return {"exact_match": SCRIPT[step]}


def scripted_run(run_dir, steps: int, patience: int, resume: bool = False) -> dict:
    values = {**read_recipe("copy"), "d_model": 16, "n_heads": 2, "d_ff": 32,
              "n_encoder_layers": 1, "n_decoder_layers": 1, "steps": steps,
              "eval_every": EVAL_EVERY, "save_every": EVAL_EVERY, "target_exact_match": 0,
              "patience": patience, "early_stop_metric": "exact_match"}
    settings = settings_from_values(values)
    task = ScriptedCopy(settings.train)
    ready = settings.with_vocabulary(task.vocab_size, task.pad_id)
    return train(run_dir, ready.model, ready.train, task, resume=resume, quiet=True)


def test_stops_after_exactly_patience_evaluations_without_improvement(tmp_path):
    assert scripted_run(tmp_path, steps=16, patience=3)["steps"] == 12


def test_a_larger_patience_waits_for_the_late_improvement(tmp_path):
    assert scripted_run(tmp_path, steps=16, patience=4)["steps"] == 16


def test_the_count_survives_a_resume(tmp_path):
    # Stopped by its step budget at 10 (two evaluations without improvement so far), then
    # resumed with more steps: one more stale evaluation (step 12) must end it.
    assert scripted_run(tmp_path, steps=10, patience=3)["steps"] == 10
    assert scripted_run(tmp_path, steps=16, patience=3, resume=True)["steps"] == 12


@pytest.mark.parametrize("metric, records, stops_at", [
    # BLEU measured at some evaluations only: those without it do not count.
    ("bleu", [{"bleu": 20}, {"loss": 3}, {"bleu": 19}, {"loss": 2}, {"bleu": 20}], 4),
    # loss: lower is better.
    ("loss", [{"loss": 3.0}, {"loss": 2.5}, {"loss": 2.6}, {"loss": 2.5}], 3),
    ("chrf", [{"chrf": 50}, {"chrf": 51}, {"chrf": 52}, {"chrf": 53}], None),
])
def test_which_evaluations_count(metric, records, stops_at):
    cfg = TrainConfig(task="multi30k", patience=2, early_stop_metric=metric)
    progress = Progress()
    stopped = [out_of_patience(record, cfg, progress) for record in records]
    assert (stopped.index(True) if True in stopped else None) == stops_at


def test_a_metric_the_task_never_measures_is_refused():
    with pytest.raises(ValueError, match="early_stop_metric='bleu': a copy run measures"):
        TrainConfig(task="copy", patience=3, early_stop_metric="bleu")
    with pytest.raises(ValueError, match="early_stop_metric='exact_match'"):
        TrainConfig(task="multi30k", patience=3, early_stop_metric="exact_match")
    TrainConfig(task="copy", patience=0, early_stop_metric="bleu")  # no early stop: no matter
