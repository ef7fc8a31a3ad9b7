"""`eval_mode(model)`: the model in eval mode for a block, its own mode given back after.

Decoding, scoring and validation run without dropout, whatever mode the model is in; a
model being trained must come out of a validation still training. The mode is restored
however the block ends, an exception included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
