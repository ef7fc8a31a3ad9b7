"""Executable spec of metrics.py: reading metrics.jsonl back, and one metric as a series.

Pins down: a last line cut short by a killed run is skipped, a bad line anywhere else is
an error naming the file and line; a series is sorted by step, a repeated step keeps its
later record, and records without a finite value are left out.
"""

import pytest

from transformer.errors import UserError
from transformer.training.metrics import metric_series, read_metrics

from kit import write_metrics


def test_read_metrics_skips_a_truncated_last_line(tmp_path):
    write_metrics(tmp_path)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert len(records) == 40 + 4
    assert records[-1]["step"] == 400


def test_a_bad_middle_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 2.0}\n{oops\n{"kind": "train", "step": 2}\n')
    with pytest.raises(UserError, match=r"metrics\.jsonl:2: not valid JSON"):
        read_metrics(path)


def test_metric_series_sorts_keeps_the_latest_repeat_and_drops_missing_or_bad_values():
    records = [
        {"kind": "train", "step": 20, "loss": 3.0},
        {"kind": "train", "step": 10, "loss": 4.0},
        {"kind": "train", "step": 20, "loss": 2.5},  # a resumed run repeating step 20
        {"kind": "train", "step": 30},                # no loss in this record
        {"kind": "train", "step": 40, "loss": float("nan")},
        {"kind": "eval", "step": 20, "loss": 9.0},    # other kind
    ]
    assert metric_series(records, "train", "loss") == ([10, 20], [4.0, 2.5])
