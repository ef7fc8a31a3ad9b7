"""Evaluation during training: the validation loss and the task's decoding score, the
record that metrics.jsonl keeps of it, and the decisions taken from it (a new best
checkpoint; an early stop once a synthetic task is learned, or once the validation score
stops improving).

    evaluate(model, task, ...) -> {"kind": "eval", "step", "loss", "nll", "ppl",
                                   "accuracy", and "bleu" with "chrf", or "exact_match"}
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..decoding.eval_mode import eval_mode
from .config import TrainConfig
from .loss import label_smoothed_loss
from .resume import Progress
from .tasks import Task


def evaluate(model: nn.Module, task: Task, train_cfg: TrainConfig, step: int, final: bool,
             device: torch.device) -> dict:
    """The evaluation record of `step`: validation loss, then the task's decoding metrics."""
    record = {"kind": "eval", "step": step}
    record.update(evaluate_loss(model, task.eval_batches(), train_cfg.label_smoothing,
                                task.pad_id, device))
    record.update(task.decode_metrics(model, train_cfg, device, step, final))
    return record


def improves(record: dict, progress: Progress) -> bool:
    """True (and progress.best updated) when the record's score beats the best so far."""
    score = record.get("bleu", record.get("exact_match"))
    if score is None or (progress.best is not None and score <= progress.best):
        return False
    progress.best = score
    return True


def out_of_patience(record: dict, train_cfg: TrainConfig, progress: Progress) -> bool:
    """Early stopping: True once `patience` evaluations in a row have not improved on the
    best `early_stop_metric` so far. An evaluation that did not measure the metric (BLEU is
    measured every `bleu_every` steps only) does not count. The count lives in `progress`,
    which checkpoints keep, so that a resumed run stops where an unbroken one would."""
    if not train_cfg.patience:
        return False
    metric = train_cfg.early_stop_metric
    if metric not in record:
        return False
    score = -record[metric] if metric == "loss" else record[metric]  # higher is better
    if progress.early_best is None or score > progress.early_best:
        progress.early_best, progress.stale = score, 0
        return False
    progress.stale += 1
    return progress.stale >= train_cfg.patience


def reached_target(record: dict, train_cfg: TrainConfig) -> bool:
    """A synthetic task may stop early once its exact match reaches `target_exact_match`."""
    return bool(train_cfg.target_exact_match) and \
        record.get("exact_match", 0) >= train_cfg.target_exact_match


@torch.no_grad()
def evaluate_loss(model, batches, epsilon: float, pad_id: int, device) -> dict:
    """Teacher-forced loss, perplexity and token accuracy over held-out batches."""
    # loss_sum, nll_sum, n_tokens, n_correct: summed on the device, read once at the end
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    with eval_mode(model):
        for src, tgt_in, tgt_out in batches:
            src, tgt_in, tgt_out = src.to(device), tgt_in.to(device), tgt_out.to(device)
            logits = model(src, tgt_in, pad_outputs_unused=True)  # the loss ignores <pad> targets
            out = label_smoothed_loss(logits, tgt_out, epsilon, pad_id)
            sums += torch.stack([out.loss.double() * out.n_tokens, out.nll_sum.double(),
                                 out.n_tokens.double(), out.n_correct.double()])
    loss_sum, nll_sum, n_tokens, n_correct = sums.tolist()
    n = max(n_tokens, 1)
    return {"loss": loss_sum / n, "nll": nll_sum / n, "ppl": math.exp(min(nll_sum / n, 50.0)),
            "accuracy": n_correct / n}


def format_eval(record: dict) -> str:
    parts = [f"step {record['step']}", f"valid loss {record['loss']:.3f}",
             f"ppl {record['ppl']:.2f}", f"acc {record['accuracy']:.1%}"]
    if "exact_match" in record:
        parts.append(f"exact match {record['exact_match']:.1%}")
    if "bleu" in record:
        parts.append(f"BLEU {record['bleu']:.2f}")
    if "chrf" in record:
        parts.append(f"chrF {record['chrf']:.2f}")
    return " | ".join(parts)
