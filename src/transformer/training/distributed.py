"""Data-parallel training over processes launched by `torchrun`: the few collective
steps the rest of the code needs, and nothing else.

torchrun starts one process per device and describes the group in the environment
(WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR). Every process builds the same model and
trains on its own share of the batches; DistributedDataParallel averages the gradients.
What must stay in step across ranks is said here:

    process_group(device)   join the group for the length of a command, leave it after
    main_first(ctx, fn)     rank 0 alone runs fn (make the run directory, train the
                            tokenizer); every rank gets its result, or its error
    any_rank(ctx, flags)    a flag raised on one rank is raised on all (stop, out of time,
                            a non-finite loss or gradient)
    rank_max(ctx, xs)       each x the largest of any rank (the share of a time budget
                            spent: every rank's clock reads a little differently)
    gather_objects(ctx, v)  every rank's v, on every rank (RNG states for a checkpoint)
    global_sum(ctx, n)      a count summed over ranks (tokens in an update)

With a world size of 1 (no torchrun) each of them is the obvious local operation, and
torch.distributed is never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclasses.dataclass(frozen=True)
class Distributed:
    """Where this process stands in the group: its rank, the group's size, its device."""
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """"cpu", "cuda" or "cuda:N" as a torch.device.

    Under torchrun (LOCAL_RANK set) "cuda" and "cuda:N" alike mean this process's own GPU,
    cuda:LOCAL_RANK, whatever N says: one GPU per process, never every rank on one GPU.
    """
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise UserError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        if "LOCAL_RANK" in os.environ:
            local_rank, count = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
            if local_rank >= count:
                raise UserError(f"--device {name}: torchrun process {local_rank} needs GPU "
                                f"{local_rank}, but this machine has {count} GPU(s)")
            name = f"cuda:{local_rank}"
    return torch.device(name)


def join(device: torch.device) -> Distributed:
    """Join the process group that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(device=device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        # NCCL's collectives (broadcast_object_list, barrier) work on the current device:
        # make it this process's GPU, not cuda:0 for every rank.
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Distributed]:
    """`join` for the length of a command; the group is destroyed at the end (also on an
    error), so that torchrun's processes exit cleanly."""
    ctx = join(device)
    try:
        yield ctx
    finally:
        if ctx.world_size > 1 and dist.is_initialized():
            # A gloo worker thread may still hold the tensors of the last collective, and
            # freeing them takes the GIL; a thread that asks for it while the interpreter
            # shuts down aborts the process ("terminate called without an active
            # exception"). Sleeping hands the GIL over so that it can finish first.
            time.sleep(0.1)
            dist.destroy_process_group()


def main_first(ctx: Distributed, fn: Callable):
    """Run `fn()` on rank 0 alone and give every rank its (picklable) result.

    For what one process must do before the others may look: create the run directory,
    train and save the tokenizer. An error on rank 0 is raised on every rank (as a
    UserError there), so that no rank waits forever for a result that never comes.
    """
    if ctx.world_size == 1:
        return fn()
    box, error = [None, None], None
    if ctx.is_main:
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


def any_rank(ctx: Distributed, flags: list[bool]) -> list[bool]:
    """Each flag true on every rank if it is true on any: every rank takes the same branch."""
    return [v > 0 for v in rank_max(ctx, [float(f) for f in flags])]


def rank_max(ctx: Distributed, values: list[float]) -> list[float]:
    """Each value the largest that any rank holds, on every rank: one all_reduce for all."""
    if ctx.world_size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def gather_objects(ctx: Distributed, value) -> list:
    """Every rank's (picklable) `value`, in rank order, on every rank."""
    if ctx.world_size == 1:
        return [value]
    values = [None] * ctx.world_size
    dist.all_gather_object(values, value)
    return values


def global_sum(ctx: Distributed, value: int) -> int:
    """`value` summed over every rank."""
    if ctx.world_size == 1:
        return value
    total = torch.tensor([value], dtype=torch.long, device=ctx.device)
    dist.all_reduce(total)
    return int(total)
