"""Training (Section 5): the loop and what it needs.

    config.py        TrainConfig: every training key, checked
    schedule.py      the Noam learning-rate schedule and the paper's Adam (5.3)
    loss.py          label-smoothed cross-entropy that ignores <pad> (5.4)
    tasks.py         what a run trains on, and how real decoding scores it
    loop.py          train(): updates, evaluations, checkpoints, stops
    validation.py    the evaluation record: validation loss, BLEU or exact match
    metrics.py       metrics.jsonl, written and read
    resume.py        what a checkpoint holds for an exact resume, and how it comes back
    runtime.py       DDP, torch.compile, bf16 autocast
    distributed.py   the few collectives data-parallel training needs (torchrun)
"""
