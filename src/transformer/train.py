"""The training loop (Section 5): batches in, optimizer updates out, with everything a
long run needs around it.

One update: `accum_steps` micro-batches, each forward -> label-smoothed loss ->
backward, gradients weighted by each micro-batch's share of the update's target tokens
(so k micro-batches equal one big batch exactly), optional clipping, an Adam step, a
Noam scheduler step. Around it: a tqdm progress bar (loss, lr, tokens/s), `metrics.jsonl`
(one JSON record per log/eval), evaluation every `eval_every` updates, checkpoints every
`save_every` (atomic, `keep_last` of them, plus `best`), exact resume (model, optimizer,
scheduler, step, data position, RNG), SIGINT/SIGTERM -> checkpoint and exit 130, a guard
that stops on a NaN/inf loss, bf16 autocast, torch.compile, and data-parallel training
over processes launched by torchrun.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import TransformerConfig
from .errors import UserError
from .loss import label_smoothed_loss
from .model import Transformer
from .recipe import TrainConfig
from .schedule import adam, make_scheduler

INTERRUPTED_EXIT_CODE = 130


class Interrupted(Exception):
    """Raised after a SIGINT/SIGTERM once the checkpoint is safely written."""


class StopFlag:
    """SIGINT/SIGTERM ask for a stop at the next update boundary; a second SIGINT stops now."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            os._exit(INTERRUPTED_EXIT_CODE)  # the user insists: checkpoints are atomic, leave now
        self.requested = True

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    import torch.distributed as dist
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        # NCCL's collectives (broadcast_object_list, barrier) work on the current device:
        # make it this process's GPU, not cuda:0 for every rank.
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size())


@contextlib.contextmanager
def distributed(device: torch.device):
    """`setup_distributed` for the length of a command; the process group is destroyed at
    the end (also on an error), so that torchrun's processes exit cleanly."""
    ddp = setup_distributed(device)
    try:
        yield ddp
    finally:
        if ddp.world_size > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def main_first(ddp: Distributed, fn):
    """Run `fn()` on rank 0 alone and give every rank its (picklable) result.

    For what one process must do before the others may look: create the run directory,
    train and save the tokenizer. An error on rank 0 is raised on every rank (as a
    UserError there), so that no rank waits forever for a result that never comes.
    """
    if ddp.world_size == 1:
        return fn()
    import torch.distributed as dist
    box, error = [None, None], None
    if ddp.is_main:
        try:
            box[0] = fn()
        except Exception as caught:  # noqa: BLE001 - re-raised below, on every rank
            error, box[1] = caught, str(caught)
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[1] is not None:
        raise UserError(f"rank 0 failed: {box[1]}")
    return box[0]


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag true on every rank if it is true on any: every rank takes the same branch."""
    import torch.distributed as dist
    values = torch.tensor([int(f) for f in flags], dtype=torch.long, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        if name == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per torchrun process
            name = f"cuda:{os.environ['LOCAL_RANK']}"
    elif name != "cpu":
        raise UserError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    return torch.device(name)


def rng_state() -> dict:
    """The global RNG states (Python, torch CPU, CUDA): saved in checkpoints for an exact resume."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured, so that the next random draw is the same."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def autocast(train_cfg: TrainConfig, device: torch.device):
    if train_cfg.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def global_sum(value: int, device: torch.device) -> int:
    import torch.distributed as dist
    total = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(total)
    return int(total)


@torch.no_grad()
def evaluate_loss(model, batches, epsilon: float, pad_id: int, device) -> dict:
    """Teacher-forced loss, perplexity and token accuracy over held-out batches."""
    was_training = model.training
    model.eval()
    loss_sum, nll_sum, n_tokens, n_correct = 0.0, 0.0, 0, 0
    for src, tgt_in, tgt_out in batches:
        src, tgt_in, tgt_out = src.to(device), tgt_in.to(device), tgt_out.to(device)
        out = label_smoothed_loss(model(src, tgt_in), tgt_out, epsilon, pad_id)
        loss_sum += float(out.loss) * out.n_tokens
        nll_sum += out.nll_sum
        n_tokens += out.n_tokens
        n_correct += out.n_correct
    model.train(was_training)
    n = max(n_tokens, 1)
    return {"loss": loss_sum / n, "nll": nll_sum / n, "ppl": math.exp(min(nll_sum / n, 50.0)),
            "accuracy": n_correct / n}


class MetricsLog:
    """metrics.jsonl: one JSON object per line, flushed at once (a kill loses nothing)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.file = open(path, "a", encoding="utf-8") if enabled else None

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def train(run_dir: Path, model_cfg: TransformerConfig, train_cfg: TrainConfig, task,
          resume: bool = False, quiet: bool = False) -> dict:
    """Train `task` into `run_dir`; returns the final evaluation record.

    `task` provides `train_stream(state, rank, world_size)` (an iterator of
    ((src, tgt_in, tgt_out), data_state)), `eval_batches()`, `decode_metrics(model,
    train_cfg, device)` and `pad_id`. Raises Interrupted after saving on SIGINT/SIGTERM.
    """
    device = resolve_device(train_cfg.device)
    if train_cfg.threads > 0:  # tiny models run faster on one thread than on two
        torch.set_num_threads(train_cfg.threads)
    dist = setup_distributed(device)
    torch.manual_seed(train_cfg.seed)
    random.seed(train_cfg.seed)
    model = Transformer(model_cfg).to(device)
    optimizer = adam(model.parameters())
    scheduler = make_scheduler(optimizer, train_cfg.schedule, model_cfg.d_model,
                               train_cfg.warmup, train_cfg.lr_factor)
    step, data_state, best = 0, None, None
    if resume:
        latest = ckpt.latest_checkpoint(run_dir)
        if latest is None:
            raise UserError(f"{run_dir}: no checkpoint to resume from")
        state = ckpt.load_checkpoint(latest, model, optimizer, scheduler)
        step, data_state, best = state["step"], state["data"], state.get("best")
        set_rng_state(state["rng"])
    train_model = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if train_cfg.compile:
        train_model = torch.compile(train_model)

    log = MetricsLog(run_dir / "metrics.jsonl", dist.is_main)
    stream = task.train_stream(data_state, dist.rank, dist.world_size)

    def say(text: str) -> None:  # messages come from rank 0 alone (tqdm.write prints always)
        if dist.is_main:
            bar.write(text)

    if dist.is_main and not quiet:
        print(f"model: {model.num_parameters():,} parameters; training {train_cfg.task} "
              f"from step {step} to {train_cfg.steps} on {device}"
              + (f" x {dist.world_size} processes" if dist.world_size > 1 else ""), flush=True)

    def save(name: str | None = None) -> None:
        if dist.is_main:
            train_state = {"step": step, "data": data_state, "rng": rng_state(), "best": best}
            ckpt.save_checkpoint(run_dir, step, model, optimizer, scheduler, train_state,
                                 keep_last=train_cfg.keep_last, name=name)

    def evaluate(final: bool) -> dict:
        nonlocal best
        record = {"kind": "eval", "step": step}
        record.update(evaluate_loss(model, task.eval_batches(), train_cfg.label_smoothing,
                                    model_cfg.pad_id, device))
        record.update(task.decode_metrics(model, train_cfg, device, step, final))
        log.write(record)
        score = record.get("bleu", record.get("exact_match"))
        if score is not None and (best is None or score > best):
            best = score
            save("best")
        return record

    start_time = time.time()
    window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "time": time.time(), "steps": 0}
    bar = tqdm(total=train_cfg.steps, initial=step, disable=quiet or not dist.is_main,
               dynamic_ncols=True, file=sys.stdout, mininterval=1.0)
    last_eval: dict = {}
    model.train()
    with StopFlag() as stop:
        while step < train_cfg.steps:
            last_good = (data_state, rng_state())  # where a divergence rolls back to
            micro = []
            for _ in range(train_cfg.accum_steps):
                batch, data_state = next(stream)
                micro.append(tuple(t.to(device, non_blocking=True) for t in batch))
            n_tokens = sum(int((b[2] != model_cfg.pad_id).sum()) for b in micro)
            # Weight each micro-batch by its share of the update's real target tokens, so that
            # k micro-batches (on every rank) give the gradient of one batch holding all of them
            # (PITFALLS 7). DDP averages gradients over ranks, hence the factor world_size.
            total_tokens = global_sum(n_tokens, device) if dist.world_size > 1 else n_tokens
            weight = dist.world_size / max(total_tokens, 1)
            step_loss, step_nll = 0.0, 0.0
            for i, (src, tgt_in, tgt_out) in enumerate(micro):
                sync = i == len(micro) - 1 or dist.world_size == 1
                no_sync = train_model.no_sync if (not sync and hasattr(train_model, "no_sync")) \
                    else contextlib.nullcontext
                with no_sync(), autocast(train_cfg, device):
                    logits = train_model(src, tgt_in)
                    out = label_smoothed_loss(logits, tgt_out, train_cfg.label_smoothing,
                                              model_cfg.pad_id)
                if not torch.isfinite(out.loss):
                    # The weights are still those of the last good update; save them with the
                    # data position and RNG of that moment too, so the checkpoint resumes exactly.
                    data_state = last_good[0]
                    set_rng_state(last_good[1])
                    save()
                    raise UserError(f"training diverged: the loss is {out.loss.item()} at step "
                                    f"{step + 1}; the last good state is saved in {run_dir}")
                with no_sync():
                    (out.loss * (out.n_tokens * weight)).backward()
                step_loss += float(out.loss.detach()) * out.n_tokens
                step_nll += out.nll_sum
            if train_cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1

            window["loss"] += step_loss
            window["nll"] += step_nll
            window["tokens"] += n_tokens
            window["steps"] += 1
            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                elapsed = max(time.time() - window["time"], 1e-9)
                record = {"kind": "train", "step": step,
                          "loss": window["loss"] / max(window["tokens"], 1),
                          "nll": window["nll"] / max(window["tokens"], 1), "lr": lr,
                          "tokens_per_s": window["tokens"] * dist.world_size / elapsed,
                          "elapsed_s": time.time() - start_time}
                log.write(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}",
                                tok_s=f"{record['tokens_per_s']:.0f}")
                window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "time": time.time(), "steps": 0}
            bar.update(1)

            out_of_time = train_cfg.max_minutes > 0 and time.time() - start_time > 60 * train_cfg.max_minutes
            stopping = stop.requested
            if dist.world_size > 1:  # a rank that left alone would leave the others waiting
                out_of_time, stopping = any_rank([out_of_time, stopping], device)
            final = step == train_cfg.steps or out_of_time
            if step % train_cfg.eval_every == 0 or final:
                last_eval = evaluate(final)
                say(format_eval(last_eval))
                if train_cfg.target_exact_match and last_eval.get("exact_match", 0) >= train_cfg.target_exact_match:
                    say(f"exact match {last_eval['exact_match']:.1%} reached at step {step}")
                    save()
                    break
            if step % train_cfg.save_every == 0 or step == train_cfg.steps:
                save()
            if out_of_time:
                say(f"time budget of {train_cfg.max_minutes} minutes reached at step {step}")
                save()
                break
            if stopping:
                save()
                bar.close()
                log.close()
                raise Interrupted(f"interrupted at step {step}; resume with "
                                  f"`transformer train --resume {run_dir}`")
    bar.close()
    log.close()
    summary = dict(last_eval, steps=step, wall_s=time.time() - start_time)
    return summary


def format_eval(record: dict) -> str:
    parts = [f"step {record['step']}", f"valid loss {record['loss']:.3f}",
             f"ppl {record['ppl']:.2f}", f"acc {record['accuracy']:.1%}"]
    if "exact_match" in record:
        parts.append(f"exact match {record['exact_match']:.1%}")
    if "bleu" in record:
        parts.append(f"BLEU {record['bleu']:.2f}")
    return " | ".join(parts)
