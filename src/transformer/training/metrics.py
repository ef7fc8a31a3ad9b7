"""metrics.jsonl: the log of a run, one JSON object per line.

Training writes a record every `log_every` updates (`"kind": "train"`: loss, lr,
tokens/s) and one per evaluation (`"kind": "eval"`: validation loss, perplexity,
accuracy, and BLEU or exact match). Each line is flushed as it is written, so a killed
run loses nothing but, at worst, the line it was writing. Plots and the ablation
report read it back with `read_metrics` and `metric_series`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from ..errors import UserError

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends records to metrics.jsonl; `enabled=False` (DDP ranks other than 0) writes nothing."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.file = open(path, "a", encoding="utf-8") if enabled else None

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class Meter:
    """Sums updates between two training records of metrics.jsonl."""

    def __init__(self, world_size: int = 1) -> None:
        self.world_size = world_size
        self.reset()

    def reset(self) -> None:
        self.loss, self.nll, self.tokens, self.lr, self.since = 0.0, 0.0, 0, 0.0, time.time()

    def add(self, loss_sum: float, nll_sum: float, n_tokens: int, lr: float) -> None:
        """One update: its loss and NLL summed over its target tokens, and its learning rate."""
        self.loss += loss_sum
        self.nll += nll_sum
        self.tokens += n_tokens
        self.lr = lr

    def record(self, step: int, elapsed_s: float) -> dict:
        """The training record since the last one (per-token means; this rank's loss), then reset."""
        seconds = max(time.time() - self.since, 1e-9)
        n = max(self.tokens, 1)
        record = {"kind": "train", "step": step, "loss": self.loss / n, "nll": self.nll / n,
                  "lr": self.lr, "tokens_per_s": self.tokens * self.world_size / seconds,
                  "elapsed_s": elapsed_s}
        self.reset()
        return record


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file, in file order.

    A last line that does not parse is skipped: a run killed while writing leaves one.
    Anywhere else a bad line means a damaged file and raises UserError naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: metrics file not found")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    # Bytes rather than text: a kill can also cut a multi-byte character in half.
    lines = [(n, line) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
            if i == len(lines) - 1:
                break
            raise UserError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def metric_series(records: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` in the records of `kind`, sorted by step.

    Records without the key, or with a value that is not a finite number, are left out.
    When a step appears twice (a resumed run repeats the steps after its last
    checkpoint), the later record wins.
    """
    by_step: dict[int, float] = {}
    for record in records:
        step, value = record.get("step"), record.get(key)
        if record.get("kind") == kind and _is_number(step) and _is_number(value):
            if math.isfinite(value):
                by_step[int(step)] = float(value)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def _is_number(value) -> bool:
    # bool is an int in Python, but `true` is not a loss.
    return isinstance(value, (int, float)) and not isinstance(value, bool)
