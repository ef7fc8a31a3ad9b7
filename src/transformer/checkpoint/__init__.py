"""A model on disk, safely.

    atomic.py      crash-safe folder writes: a kill leaves the old folder or the new one
    format.py      one checkpoint folder: weights as safetensors, the state a resume needs
    catalogue.py   a run's checkpoints: which there are, which one a command uses
    averaging.py   the mean of several checkpoints (Section 6.1)
"""
