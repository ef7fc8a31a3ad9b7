"""torch.compile (`compile = true`): the same model, only faster.

Compiling changes how the graph runs (fused kernels, generated C++ on the CPU), never
what it computes: the compiled and the eager model give the same logits, padding masks
included, and a training run with `--set compile=true` trains. (Those two compile for
real: tens of seconds on a CPU, so the first uses one small model and the second runs
only when asked.)

Where torch.compile cannot work (no C++ compiler, an unsupported Python), training stops
before it starts with one line naming the key, exit 2, not a traceback; checked by
making torch.compile fail, which takes no compiling at all.
"""

import os
import shutil
import time

import pytest
import torch

from transformer import Transformer, TransformerConfig
from transformer.data.batching import collate
from transformer.errors import UserError
from transformer.training.config import TrainConfig
from transformer.training.distributed import Distributed
from transformer.training.runtime import wrap_for_training

from kit import metrics, train_copy_run

COMPILER = next((c for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c and shutil.which(c)), None)
needs_compiler = pytest.mark.skipif(
    COMPILER is None, reason="torch.compile's CPU backend (inductor) generates C++ and needs a "
                             "C++ compiler: none of $CXX, g++, c++, clang++ is on PATH")
COMPILED = ["--steps", "3", "--set", "compile=true"]  # the kit's tiny copy run, compiled


@needs_compiler
def test_compiled_model_gives_the_eager_logits():
    cfg = TransformerConfig(src_vocab_size=12, tgt_vocab_size=12, d_model=16, n_heads=2,
                            n_encoder_layers=1, n_decoder_layers=1, d_ff=32, dropout=0.0,
                            max_len=16)
    model = Transformer(cfg).eval()
    # Sentences of different lengths: the padding masks go through the compiled graph too.
    src, tgt_in, _ = collate([([4, 5, 6, 7, 8], [9, 10]), ([11, 4], [5, 6, 7, 8, 9, 10])],
                             cfg.pad_id, bos_id=1, eos_id=2)
    compiled = torch.compile(model)
    started = time.time()
    with torch.no_grad():
        expected = model(src, tgt_in)  # (B, T, V)
        actual = compiled(src, tgt_in)
    took = time.time() - started
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)
    print(f"compiled and ran in {took:.1f} s")


@needs_compiler
@pytest.mark.skipif(os.environ.get("TRANSFORMER_SLOW_TESTS") != "1",
                    reason="compiles forward and backward (~1 min on 2 CPU cores); "
                           "set TRANSFORMER_SLOW_TESTS=1")
def test_training_with_compile_true_through_the_command_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = train_copy_run(run_dir, *COMPILED)
    assert code == 0, capsys.readouterr().err
    records = metrics(run_dir)
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert (run_dir / "checkpoints" / "step-000003" / "model.safetensors").is_file()


class BackendFailed(RuntimeError):
    """Like torch._dynamo's BackendCompilerFailed: the backend's own error inside."""

    def __init__(self, inner: Exception):
        super().__init__(f"backend='inductor' raised:\n{type(inner).__name__}: {inner}")
        self.inner_exception = inner


def no_compiler(fn):
    """What torch.compile returns where inductor finds no C++ compiler: fails when called."""
    def call(*args, **kwargs):
        raise BackendFailed(RuntimeError("No working C++ compiler found in cpp.cxx: ('g++',)"))
    return call


def unsupported_python(fn):
    raise RuntimeError("torch.compile is not supported on Python 3.99+\nsee the issue tracker")


@pytest.mark.parametrize("fake, reason", [
    (no_compiler, "No working C++ compiler found in cpp.cxx: ('g++',)"),
    (unsupported_python, "torch.compile is not supported on Python 3.99+"),
], ids=["fails-when-called", "fails-at-once"])
def test_compile_failure_is_one_line_naming_the_key(fake, reason, monkeypatch):
    monkeypatch.setattr(torch, "compile", fake)
    model = Transformer(TransformerConfig.tiny(vocab_size=12))
    with pytest.raises(UserError) as error:
        wrap_for_training(model, TrainConfig(compile=True), Distributed())
    message = str(error.value)
    assert message.startswith("compile = true: ") and "\n" not in message
    assert f"({reason})" in message and message.endswith("set compile = false")
    assert wrap_for_training(model, TrainConfig(compile=False), Distributed()) is model


def test_compile_failure_on_the_command_line_exits_2_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "compile", no_compiler)
    run_dir = tmp_path / "run"
    assert train_copy_run(run_dir, *COMPILED) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "compile = true" in err and "C++ compiler" in err, err
    assert not (run_dir / "metrics.jsonl").exists()  # stopped before the first step
