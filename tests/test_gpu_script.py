"""benchmarks/gpu.sh, the GPU benchmark, is ready before a GPU is lent: its dry run
(`DRY_RUN=1`) runs every step of it on the CPU at a tiny size, the speed modes, training,
averaging, both evaluations, the WMT14 recipe on a prepared corpus (a small stand-in),
and writes the summary JSON that the GPU run would write.

About 30-50 s on a busy 2-core machine.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transformer.data.parallel import find_multi30k_dir
from transformer.data.prepared import prepare_corpus
from transformer.errors import UserError

from kit import write_corpus

REPO = Path(__file__).resolve().parent.parent

try:
    find_multi30k_dir()
except UserError as error:  # pragma: no cover - the data ships beside the repository
    pytest.skip(f"Multi30k not found: {error}", allow_module_level=True)


def numbers(tree):
    """Every int and float in a JSON tree (booleans excluded)."""
    if isinstance(tree, dict):
        return [x for value in tree.values() for x in numbers(value)]
    if isinstance(tree, list):
        return [x for value in tree for x in numbers(value)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def test_dry_run_runs_every_step_and_writes_the_summary(tmp_path):
    out = tmp_path / "gpu"
    wmt14 = prepare_corpus(*write_corpus(tmp_path), tmp_path / "wmt14", vocab_size=100,
                           say=lambda text: None)  # a stand-in for the prepared WMT14
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), PYTHON=sys.executable,
               WMT14_DATA=str(wmt14))
    env.pop("SET", None)
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    path = Path(done.stdout.strip().splitlines()[-1])  # the summary's path comes last
    assert path == out / "summary.json"
    summary = json.loads(path.read_text())

    assert summary["dry_run"] is True
    assert [row["mode"] for row in summary["speed"]["rows"]] == ["fp32", "bf16", "bf16+compile"]
    for row in summary["speed"]["rows"]:
        assert row["tokens_per_s_ours"] > 0 and row["tokens_per_s_nn_transformer"] > 0
        assert 0 < row["mfu_ours"] and 0 < row["mfu_nn_transformer"]
    train = summary["train"]
    assert train["updates"] == train["planned_updates"] == 20
    assert not train["stopped_by_time_budget"]
    assert summary["averaged"]["checkpoints"] == [f"step-0000{n:02d}" for n in (4, 8, 12, 16, 20)]
    assert set(summary["averaged"]) >= {"val_bleu", "test_2016_flickr_bleu"}
    assert set(summary["wall_s"]) == {"speed", "train", "average", "evaluate", "total"}
    values = numbers(summary)
    assert values and all(math.isfinite(x) for x in values)
    assert (out / "multi30k" / "checkpoints" / "averaged").is_dir()
    wmt14_row = summary["wmt14"]  # the paper's recipe on the prepared corpus, 3 updates
    assert wmt14_row["updates"] == 3 and wmt14_row["median_tokens_per_s"] > 0
    assert 0 < wmt14_row["mfu_6nt"] and wmt14_row["parameters"] > 0
