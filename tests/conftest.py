"""Shared test set-up: every test starts from the same random state, on one CPU thread.

One thread, because the test models are tiny: on a busy machine the threads of a second
worker mostly wait for each other (measured: 0.5 s against 3 ms for one tiny forward).

`trained_translation_run`: one small translation run that has learnt something, shared
by the tests of analyze.py and of the server (trained once per session, about 4 s);
`live_server`: that run served on a free port of 127.0.0.1, one server per test module.
"""

import os
from pathlib import Path

import pytest
import torch

from kit import train_translation_run, write_corpus
from serve_helpers import Server

# The files with the longest trainings, longest first. `make test` runs two worker
# processes, each taking whole files (--dist loadfile: a file's module fixtures are built
# once); started first, the long files never leave one worker busy while the other idles.
LONGEST = ("test_train_copy.py", "test_gpu_script.py", "test_distributed.py",
           "test_translation_smoke.py", "test_prepared.py", "test_resume.py",
           "test_explorer_browser.py", "test_vocabularies.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST.index(name) if name in LONGEST else len(LONGEST)
    items.sort(key=rank)  # stable: the order within each file, and of the rest, is kept


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory):
    """Prepared corpora that runs share (Multi30k) go to a folder of the test session's."""
    os.environ["TRANSFORMER_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trained_translation_run(tmp_path_factory) -> Path:
    """40 steps on the made-up en -> de corpus of test_cli_errors.py: it translates it
    passably and ends its sentences. Checkpoints step-000020, step-000040 and best (BLEU at
    step 40, in metrics.jsonl); max_len 32. Shared: copy it before changing anything."""
    folder = tmp_path_factory.mktemp("trained-translation")
    run_dir = folder / "run"
    train_translation_run(run_dir, *write_corpus(folder), "--steps", "40", "--set", "warmup=10",
                          "save_every=20", "eval_every=40", "bleu_every=40")
    return run_dir


@pytest.fixture(scope="module")
def live_server(trained_translation_run) -> Server:
    """make_server over the trained run, serving from a thread; shut down after the module."""
    running = Server(trained_translation_run)
    yield running
    running.stop()
