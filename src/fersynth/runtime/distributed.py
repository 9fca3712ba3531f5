"""Training in several processes: torchrun's ranks, their process group, and each rank's share of a batch.

A stage asked for N processes runs itself again under torchrun (`relaunch_under_torchrun`); each rank then
joins the process group (`training_process`): gloo on the CPU, NCCL on GPUs. Every rank draws the same
global batches from the same seed and trains on its contiguous `shard` of each; DistributedDataParallel
averages the gradients, so all ranks hold the same weights and rank 0 alone writes outputs.

Alone (no process group) every helper answers as the one and only rank 0, so single-process code runs unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fersynth.errors import ParamsError
from fersynth.runtime.device import resolve_device

log = logging.getLogger(__name__)

T = TypeVar("T")

# torchrun starts each rank as this program, with the stage's arguments after it: `python -m stages.cli` would
# need a __main__ guard in stages/cli.py, and the `fersynth` console script is not always beside the interpreter.
ENTRY_POINT = "from stages.cli import main; main()"
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Launch:
    """Where torchrun placed this process: its rank among all, and its index on this machine."""

    rank: int
    world_size: int
    local_rank: int


@dataclass(frozen=True)
class Placement:
    """The device a training process uses and whether it is rank 0, the one that writes outputs."""

    device: torch.device
    main: bool


def torchrun_launch(environ: Mapping[str, str]) -> Launch | None:
    """This process's place when torchrun started it (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK); else None."""
    if not all(name in environ for name in TORCHRUN_VARIABLES):
        return None
    rank, world_size, local_rank = (int(environ[name]) for name in TORCHRUN_VARIABLES)
    return Launch(rank, world_size, local_rank)


def needs_torchrun(processes: int, environ: Mapping[str, str]) -> bool:
    """Whether a stage asked for `processes` must start them: several asked for, and torchrun did not start it."""
    return processes > 1 and torchrun_launch(environ) is None


def relaunch_under_torchrun(processes: int, argv: Sequence[str]) -> int:
    """Run this command again as `processes` torchrun ranks on this machine; torchrun's exit status.

    `argv` is the command line after the program name (sys.argv[1:]), so every rank parses what this one did.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a rendezvous on a free local port: nothing to configure for one machine
        f"--nproc_per_node={processes}",
        "--no-python",
        sys.executable,
        "-c",
        ENTRY_POINT,
        *argv,
    ]
    log.info("training in %d processes under torchrun", processes)
    return subprocess.run(command, check=False).returncode


@contextmanager
def training_process(device_setting: str, environ: Mapping[str, str]) -> Iterator[Placement]:
    """The device to train on, inside torchrun's process group when torchrun started this process.

    Ranks other than 0 log only warnings and their weight digest, so a run's log reads as one process's.
    """
    launch = torchrun_launch(environ)
    if launch is None:
        yield Placement(resolve_device(device_setting), main=True)
        return
    device = resolve_device(device_setting, launch.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives (broadcast_object_list too) run on the current GPU
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size)
    if launch.rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
        log.setLevel(logging.INFO)
    try:
        yield Placement(device, main=launch.rank == 0)
    finally:
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def shard(count: int) -> slice:
    """This rank's contiguous part of a batch of `count` items: near-equal parts in rank order (all when alone)."""
    base, extra = divmod(count, world_size())
    start = rank() * base + min(rank(), extra)
    return slice(start, start + base + (rank() < extra))


def check_shards(batch_images: int, setting: str) -> None:
    """In a process group, refuse batches too small to give every rank two images (batch norm cannot train on one).

    `setting` names what sets the batch size, e.g. "train.batch_size 8".
    """
    if world_size() > 1 and batch_images < 2 * world_size():
        raise ParamsError(
            f"{setting} makes batches of {batch_images} images, too few for {world_size()} processes "
            "to take two each: raise the batch size or train in fewer processes"
        )


def shard_weight(count: int) -> float:
    """This rank's share of a batch of `count`, times the number of ranks (1.0 when alone).

    DDP averages the ranks' gradients; each rank's mean loss weighed by this makes that average the
    gradient of the whole batch's mean, also when the shards differ in size.
    """
    part = shard(count)
    return (part.stop - part.start) * world_size() / count


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` under DistributedDataParallel in a process group (gradients averaged over ranks), else itself.

    DDP copies rank 0's weights and buffers to every rank here, and its buffers (batch-norm statistics)
    before each forward pass.
    """
    if world_size() == 1:
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_processes(*values: float) -> tuple[float, ...]:
    """Each value summed over all ranks (itself when alone): e.g. a loss total and an image count."""
    if world_size() == 1:
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    totals = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return tuple(totals.tolist())


def computed_on_main_process(compute: Callable[[], T]) -> T:
    """`compute()` run on rank 0 alone, its result handed to every rank (pickled): one answer for all."""
    if world_size() == 1:
        return compute()
    holder: list[Any] = [compute() if is_main_process() else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def seed_torch_per_rank(seed: int) -> None:
    """Give each rank but 0 a torch stream of its own, so shards of equal size do not share dropout masks.

    Rank 0 keeps the stream it has: alone, nothing changes.
    """
    if rank() > 0:
        torch.manual_seed(int(np.random.SeedSequence([seed, rank()]).generate_state(1)[0]))


def on_main_process(opener: Callable[[], AbstractContextManager[T]]) -> AbstractContextManager[T | None]:
    """`opener()` on rank 0; elsewhere a stand-in that yields None, so only rank 0 opens (and writes) anything."""
    return opener() if is_main_process() else nullcontext()


def log_weights_digest(modules: Iterable[nn.Module]) -> None:
    """In a process group, log this rank's sha256 of the modules' parameters: equal on every rank when in sync.

    Parameters only: batch-norm statistics are rank 0's alone (DDP copies them to the others before each
    forward pass, which then update their own), and rank 0's are what it saves.
    """
    if world_size() == 1:
        return
    digest = hashlib.sha256()
    for module in modules:
        for name, parameter in module.named_parameters():
            digest.update(name.encode())
            digest.update(parameter.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    log.info("rank %d/%d: weights sha256 %s", rank(), world_size(), digest.hexdigest())
