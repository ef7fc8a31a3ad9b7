"""`precision = "bf16"`: bfloat16 autocast, on the CPU as on CUDA.

Under autocast the matrix products run in bfloat16 while the weights, the optimizer and
the loss (a float32 log-softmax, see loss.py) stay in float32. A few updates must run
and give finite losses; the saved weights stay float32.

Where the device has no bfloat16 (a CUDA GPU before Ampere, where it is only emulated),
training says so in one line on stderr and runs in float32: never a crash. An unknown
precision is a usage error (exit 2) naming the key.
"""

import contextlib
import math

import pytest
import torch
from safetensors import safe_open

from transformer import Transformer, TransformerConfig
from transformer.training import runtime
from transformer.training.config import TrainConfig
from transformer.training.distributed import Distributed
from transformer.training.runtime import autocast, bf16_supported, check_precision

from kit import metrics, train_copy_run

THREE_STEPS = ["--steps", "3", "--set"]  # then the keys of the case


def test_a_few_bf16_updates_on_the_cpu_give_finite_losses(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = train_copy_run(run_dir, *THREE_STEPS, "precision=bf16")
    assert code == 0, capsys.readouterr().err
    records = metrics(run_dir)
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses
    assert all(math.isfinite(r["loss"]) for r in records if r["kind"] == "eval")
    with safe_open(str(run_dir / "checkpoints" / "step-000003" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(name).dtype) for name in f.keys()} == {"torch.float32"}


def test_bf16_autocast_runs_the_model_in_bfloat16():
    cfg = TransformerConfig(src_vocab_size=12, tgt_vocab_size=12, d_model=16, n_heads=2,
                            n_encoder_layers=1, n_decoder_layers=1, d_ff=32, max_len=16)
    model = Transformer(cfg)
    src, tgt_in = torch.tensor([[4, 5, 6, 2]]), torch.tensor([[1, 4, 5]])
    with autocast(TrainConfig(precision="bf16"), torch.device("cpu")):
        assert model(src, tgt_in).dtype == torch.bfloat16
    with autocast(TrainConfig(precision="fp32"), torch.device("cpu")):
        assert model(src, tgt_in).dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float32


def tiny_model() -> Transformer:
    return Transformer(TransformerConfig(src_vocab_size=12, tgt_vocab_size=12, d_model=16,
                                         n_heads=2, n_encoder_layers=1, n_decoder_layers=1,
                                         d_ff=32, max_len=16))


@pytest.mark.parametrize("native", [True, False])
def test_cuda_bf16_support_is_asked_of_the_device_without_emulation(native, monkeypatch):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    assert bf16_supported(torch.device("cuda")) is native
    assert asked == [False]  # emulated bfloat16 is slower than float32: not worth it
    assert bf16_supported(torch.device("cpu")) and not bf16_supported(torch.device("meta"))


def test_bf16_without_support_warns_once_and_runs_in_float32(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    cfg, cpu = TrainConfig(precision="bf16"), torch.device("cpu")
    check_precision(cfg, cpu, Distributed())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "bf16" in lines[0] and "float32" in lines[0], lines
    with autocast(cfg, cpu):
        assert tiny_model()(torch.tensor([[4, 5, 6, 2]]), torch.tensor([[1, 4, 5]])).dtype \
            == torch.float32
    check_precision(TrainConfig(precision="fp32"), cpu, Distributed())  # nothing to say
    check_precision(cfg, cpu, Distributed(rank=1, world_size=2))  # rank 0 says it
    assert capsys.readouterr().err == ""


def test_a_bf16_run_without_support_trains_in_float32(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    run_dir = tmp_path / "run"
    assert train_copy_run(run_dir, *THREE_STEPS, "precision=bf16") == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "bf16" in line] == [
        'warning: precision = "bf16": cpu has no bfloat16 support; training in float32']
    records = metrics(run_dir)
    assert all(math.isfinite(r["loss"]) for r in records)


def test_an_unknown_precision_is_a_usage_error_naming_the_key(tmp_path, capsys):
    assert train_copy_run(tmp_path / "run", *THREE_STEPS, "precision=fp16") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "precision" in err and "fp16" in err, err
    assert not (tmp_path / "run").exists()


# --- precision = "auto" ---------------------------------------------------------------------

@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, False, True), (False, True, True),
                                                       (False, False, False)])
def test_auto_takes_bf16_only_on_a_cpu_that_computes_it(amx, avx512_bf16, expected, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    cpu = torch.device("cpu")
    assert runtime.bf16_native(cpu) is expected
    assert runtime.use_bf16(TrainConfig(precision="auto"), cpu) is expected
    assert runtime.use_bf16(TrainConfig(precision="bf16"), cpu)  # asked for: always, on a CPU
    assert not runtime.use_bf16(TrainConfig(precision="fp32"), cpu)
    with autocast(TrainConfig(precision="auto"), cpu):
        dtype = tiny_model()(torch.tensor([[4, 5, 6, 2]]), torch.tensor([[1, 4, 5]])).dtype
    assert dtype == (torch.bfloat16 if expected else torch.float32)


def test_auto_on_cuda_follows_native_support_and_says_nothing(monkeypatch, capsys):
    cuda = torch.device("cuda")
    for native in (True, False):
        monkeypatch.setattr(runtime, "bf16_supported", lambda device, native=native: native)
        assert runtime.use_bf16(TrainConfig(precision="auto"), cuda) is native
        check_precision(TrainConfig(precision="auto"), cuda, Distributed())
    assert capsys.readouterr().err == ""  # auto falling back to float32 is no surprise


def test_a_run_says_which_precision_it_trains_in(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "bf16_native", lambda device: False)
    # the description is not printed quietly
    assert train_copy_run(tmp_path / "run", *THREE_STEPS, "precision=auto", quiet=False) == 0
    assert "parameters; training copy from step 0 to 3 on cpu in fp32" in capsys.readouterr().out
